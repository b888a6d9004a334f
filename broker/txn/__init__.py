"""Transactions: the coordinator state machine (sans-IO), record formats, per-partition state."""
