"""ringlog: a Kafka-compatible partitioned append-only log broker on Trio.

The repository keeps its three packages as top-level folders (broker/, client/, storage/); they
are installed and imported as ringlog.broker, ringlog.client and ringlog.storage (setup.py maps
them), so that a `client.py` or `broker/` of a user's project neither shadows them nor is
shadowed by them.
"""
