"""The transaction coordinator's state machine (sans-IO): Kafka's TransactionCoordinator rules.

Every transactional id has one `TxnMeta`: its producer id and epoch, timeout, state and the
partitions of its open transaction. An operation looks at the current state and answers either an
error code or a `Transition`: the new durable value to append to `__transaction_state` (the Trio
layer, broker.txn_runtime, appends it, then `apply`s it; the state changes only once the record
is committed) and what to do after it (markers to write, the reply).

States (broker.txn.records ids) and the moves:

    Empty / CompleteCommit / CompleteAbort --AddPartitions/AddOffsets--> Ongoing
    Ongoing --EndTxn(commit)--> PrepareCommit --markers written--> CompleteCommit
    Ongoing --EndTxn(abort), timeout, fencing--> PrepareAbort --markers written--> CompleteAbort
    any idle state --InitProducerId--> Empty with epoch + 1 (a new producer id when exhausted)
    Ongoing --InitProducerId--> PrepareAbort with epoch + 1 (the old producer is fenced), then
                                CompleteAbort, then the new epoch is the answer

Errors, as Kafka answers them: a producer id that does not match -> INVALID_PRODUCER_ID_MAPPING;
an epoch that does not match -> PRODUCER_FENCED (handlers map it to INVALID_PRODUCER_EPOCH for
old request versions); a transaction being completed -> CONCURRENT_TRANSACTIONS; EndTxn with
nothing open, or the opposite of what was prepared -> INVALID_TXN_STATE; a timeout above
transaction.max.timeout.ms -> INVALID_TRANSACTION_TIMEOUT.

Start-up: `replay` each record of `__transaction_state` in log order, then `load_complete`,
which returns the transactional ids left in PrepareCommit/PrepareAbort (a crash between the
prepare record and the end of marker writing): the runtime writes their markers again (markers
are idempotent for readers) and completes them, so a transaction ends committed or aborted
everywhere, never half.
"""
from __future__ import annotations

from collections.abc import Iterable

import attrs
from kio.schema.errors import ErrorCode

from . import records as trec
from .records import (
    COMPLETE_ABORT,
    COMPLETE_COMMIT,
    DEAD,
    EMPTY,
    ONGOING,
    PREPARE_ABORT,
    PREPARE_COMMIT,
    TxnValue,
)

MAX_EPOCH = 32767
TopicPartition = tuple[str, int]


@attrs.frozen
class TxnConfig:
    max_timeout_ms: int = 900_000
    id_expiration_ms: int = 7 * 24 * 3_600_000


@attrs.define(eq=False)
class TxnMeta:
    transactional_id: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: int = EMPTY
    partitions: set[TopicPartition] = attrs.field(factory=set)
    start_ms: int = -1
    last_update_ms: int = -1
    # the epoch before the last bump (a retried InitProducerId is recognised by it)
    last_epoch: int = -1

    def value(self) -> TxnValue:
        return TxnValue(self.producer_id, self.producer_epoch, self.timeout_ms, self.state,
                        tuple(sorted(self.partitions)), self.last_update_ms, self.start_ms)


@attrs.frozen
class Transition:
    """Append `value` for `transactional_id`, apply it, then (when `markers`) write a control
    batch of `commit` into every partition of `partitions` and complete the transaction."""

    transactional_id: str
    value: TxnValue
    markers: bool = False
    commit: bool = False
    # the transaction in progress when fenced or timed out: its producer id/epoch for the markers
    reply: tuple[int, int] | None = None


class TxnCoordinator:
    def __init__(self, config: TxnConfig | None = None) -> None:
        self.config = config or TxnConfig()
        self.txns: dict[str, TxnMeta] = {}
        self.loading = True

    # --- durable state ----------------------------------------------------------------------

    def apply(self, transactional_id: str, value: TxnValue | None) -> None:
        """A record of `__transaction_state` is committed (live or replayed)."""
        if value is None or value.state == DEAD:
            self.txns.pop(transactional_id, None)
            return
        meta = self.txns.get(transactional_id)
        last_epoch = -1
        if meta is not None and meta.producer_id == value.producer_id and meta.producer_epoch != value.producer_epoch:
            last_epoch = meta.producer_epoch
        elif meta is not None:
            last_epoch = meta.last_epoch
        self.txns[transactional_id] = TxnMeta(
            transactional_id, value.producer_id, value.producer_epoch, value.timeout_ms, value.state,
            set(value.partitions), value.start_ms, value.last_update_ms, last_epoch)

    def replay(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        self.apply(trec.decode_key(key), trec.decode_value(value))

    def load_complete(self) -> list[Transition]:
        """Start serving; the transitions that finish the transactions a crash left prepared."""
        self.loading = False
        out = []
        for meta in self.txns.values():
            if meta.state in (PREPARE_COMMIT, PREPARE_ABORT):
                out.append(Transition(meta.transactional_id, meta.value(), markers=True,
                                      commit=meta.state == PREPARE_COMMIT))
        return out

    # --- checks shared by the operations ------------------------------------------------------

    def _loading_error(self) -> ErrorCode | None:
        return ErrorCode.coordinator_load_in_progress if self.loading else None

    def _producer_error(self, meta: TxnMeta | None, producer_id: int, epoch: int) -> ErrorCode | None:
        if meta is None or meta.producer_id != producer_id:
            return ErrorCode.invalid_producer_id_mapping
        if meta.producer_epoch != epoch:
            return ErrorCode.producer_fenced
        return None

    def _current(self, transactional_id: str, producer_id: int, epoch: int) -> TxnMeta | ErrorCode:
        """The id's state when the request's producer id and epoch are the current ones."""
        if (error := self._loading_error()) is not None:
            return error
        meta = self.txns.get(transactional_id)
        if (error := self._producer_error(meta, producer_id, epoch)) is not None:
            return error
        assert meta is not None
        return meta

    # --- InitProducerId -----------------------------------------------------------------------

    def needs_new_producer_id(self, transactional_id: str) -> bool:
        meta = self.txns.get(transactional_id)
        return meta is None or meta.producer_epoch + 1 >= MAX_EPOCH

    def init_producer_id(self, now: int, transactional_id: str, timeout_ms: int, producer_id: int,
                         epoch: int, new_producer_id: int | None) -> ErrorCode | Transition:
        """`new_producer_id` is a fresh id when `needs_new_producer_id` said so."""
        if (error := self._loading_error()) is not None:
            return error
        if timeout_ms <= 0 or timeout_ms > self.config.max_timeout_ms:
            return ErrorCode.invalid_transaction_timeout
        meta = self.txns.get(transactional_id)
        if meta is not None and producer_id >= 0:
            # KIP-360: a producer re-initialising must present the current (or just replaced) epoch
            if producer_id != meta.producer_id or epoch not in (meta.producer_epoch, meta.last_epoch):
                return ErrorCode.producer_fenced
        if meta is not None and meta.state in (PREPARE_COMMIT, PREPARE_ABORT):
            return ErrorCode.concurrent_transactions
        if meta is None or meta.producer_epoch + 1 >= MAX_EPOCH:
            assert new_producer_id is not None
            value = TxnValue(new_producer_id, 0, timeout_ms, EMPTY, (), now, -1)
            return Transition(transactional_id, value, reply=(new_producer_id, 0))
        bumped = meta.producer_epoch + 1
        if meta.state == ONGOING:
            # fence the old producer: abort its transaction with the new epoch
            value = TxnValue(meta.producer_id, bumped, timeout_ms, PREPARE_ABORT, tuple(sorted(meta.partitions)),
                             now, meta.start_ms)
            return Transition(transactional_id, value, markers=True, commit=False, reply=(meta.producer_id, bumped))
        value = TxnValue(meta.producer_id, bumped, timeout_ms, EMPTY, (), now, -1)
        return Transition(transactional_id, value, reply=(meta.producer_id, bumped))

    # --- AddPartitionsToTxn / AddOffsetsToTxn ------------------------------------------------

    def add_partitions(self, now: int, transactional_id: str, producer_id: int, epoch: int,
                       partitions: Iterable[TopicPartition]) -> ErrorCode | Transition | None:
        """None: every partition is already in the open transaction (nothing to write)."""
        meta = self._current(transactional_id, producer_id, epoch)
        if isinstance(meta, ErrorCode):
            return meta
        if meta.state in (PREPARE_COMMIT, PREPARE_ABORT):
            return ErrorCode.concurrent_transactions
        wanted = set(partitions)
        if meta.state == ONGOING and wanted <= meta.partitions:
            return None
        start = meta.start_ms if meta.state == ONGOING else now
        value = TxnValue(meta.producer_id, meta.producer_epoch, meta.timeout_ms, ONGOING,
                         tuple(sorted(meta.partitions | wanted if meta.state == ONGOING else wanted)), now, start)
        return Transition(transactional_id, value)

    # --- EndTxn --------------------------------------------------------------------------------

    def end_txn(self, now: int, transactional_id: str, producer_id: int, epoch: int,
                commit: bool) -> ErrorCode | Transition | None:
        """None: already completed the same way (a retry): success without writing."""
        meta = self._current(transactional_id, producer_id, epoch)
        if isinstance(meta, ErrorCode):
            return meta
        if meta.state == ONGOING:
            value = TxnValue(meta.producer_id, meta.producer_epoch, meta.timeout_ms,
                             PREPARE_COMMIT if commit else PREPARE_ABORT, tuple(sorted(meta.partitions)),
                             now, meta.start_ms)
            return Transition(transactional_id, value, markers=True, commit=commit)
        if meta.state == COMPLETE_COMMIT:
            return None if commit else ErrorCode.invalid_txn_state
        if meta.state == COMPLETE_ABORT:
            return None if not commit else ErrorCode.invalid_txn_state
        if meta.state == PREPARE_COMMIT:
            return ErrorCode.concurrent_transactions if commit else ErrorCode.invalid_txn_state
        if meta.state == PREPARE_ABORT:
            return ErrorCode.concurrent_transactions if not commit else ErrorCode.invalid_txn_state
        return ErrorCode.invalid_txn_state  # Empty: nothing to end

    def complete(self, now: int, transactional_id: str) -> Transition | None:
        """After the markers: PrepareX -> CompleteX with no partitions."""
        meta = self.txns.get(transactional_id)
        if meta is None or meta.state not in (PREPARE_COMMIT, PREPARE_ABORT):
            return None
        state = COMPLETE_COMMIT if meta.state == PREPARE_COMMIT else COMPLETE_ABORT
        value = TxnValue(meta.producer_id, meta.producer_epoch, meta.timeout_ms, state, (), now, meta.start_ms)
        return Transition(transactional_id, value)

    # --- the data plane's checks ---------------------------------------------------------------

    def verify_produce(self, transactional_id: str | None, producer_id: int, epoch: int,
                       tp: TopicPartition) -> ErrorCode | None:
        """May this transactional batch be written to `tp`? (Kafka's KIP-890 verification)"""
        if self.loading:
            return ErrorCode.not_enough_replicas  # retriable, as Kafka translates a loading coordinator
        meta = None
        if transactional_id is not None:
            meta = self.txns.get(transactional_id)
        if meta is None or meta.producer_id != producer_id:
            return ErrorCode.invalid_producer_id_mapping
        if epoch < meta.producer_epoch:
            return ErrorCode.invalid_producer_epoch
        if epoch > meta.producer_epoch:
            return ErrorCode.invalid_producer_epoch
        if meta.state != ONGOING or tp not in meta.partitions:
            return ErrorCode.invalid_txn_state
        return None

    def verify_offsets(self, transactional_id: str, producer_id: int, epoch: int,
                       tp: TopicPartition) -> ErrorCode | None:
        """TxnOffsetCommit: the producer's transaction must be open and hold the group's partition."""
        meta = self.txns.get(transactional_id)
        if meta is None or meta.producer_id != producer_id:
            return ErrorCode.invalid_producer_id_mapping
        if epoch != meta.producer_epoch:
            return ErrorCode.producer_fenced
        if meta.state != ONGOING or tp not in meta.partitions:
            return ErrorCode.invalid_txn_state
        return None

    # --- timers --------------------------------------------------------------------------------

    def timed_out(self, now: int) -> list[Transition]:
        """Open transactions past their timeout: abort them with the next epoch (the producer is
        fenced, as Kafka does), markers to follow."""
        out = []
        for meta in self.txns.values():
            if meta.state == ONGOING and meta.start_ms >= 0 and now > meta.start_ms + meta.timeout_ms:
                bumped = meta.producer_epoch + 1
                if bumped >= MAX_EPOCH:
                    bumped = meta.producer_epoch  # nothing newer to fence with; abort as is
                value = TxnValue(meta.producer_id, bumped, meta.timeout_ms, PREPARE_ABORT,
                                 tuple(sorted(meta.partitions)), now, meta.start_ms)
                out.append(Transition(meta.transactional_id, value, markers=True, commit=False))
        return out

    def expired_ids(self, now: int) -> list[str]:
        """Transactional ids idle (no open transaction) past transactional.id.expiration.ms."""
        return [m.transactional_id for m in self.txns.values()
                if m.state in (EMPTY, COMPLETE_COMMIT, COMPLETE_ABORT)
                and now - m.last_update_ms > self.config.id_expiration_ms]

    # --- admin -----------------------------------------------------------------------------------

    def describe(self, transactional_id: str) -> TxnMeta | None:
        return self.txns.get(transactional_id)

    def list(self, states: Iterable[str] = (), producer_ids: Iterable[int] = ()) -> list[TxnMeta]:
        wanted_states = set(states)
        wanted_ids = set(producer_ids)
        return [m for m in self.txns.values()
                if (not wanted_states or trec.STATE_NAMES[m.state] in wanted_states)
                and (not wanted_ids or m.producer_id in wanted_ids)]
