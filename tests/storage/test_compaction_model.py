"""Log compaction against a model (hypothesis RuleBasedStateMachine).

The model keeps every appended batch (offsets, records with key/value/timestamp) and the end of
the cleaned range M (the largest map end a clean reported). After each step the whole log must
read back as: below M, exactly the latest record of each key among offsets < M (tombstones too,
until a clean at or after their batch's delete horizon removes them); from M on, every record as
appended. Every record keeps its original offset and timestamp, offsets strictly increase, batch
ranges come from the original batches, reads from any offset start at the next surviving record,
and offset_for_timestamp agrees. Rules append keyed records (with tombstones, several codecs),
roll, advance a fake clock, clean (forced or by dirty ratio, with a small or large offset map),
close and reopen, crash and reopen (with or without the checkpoint, so recovery scans the
cleaned segments).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import attrs
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.conftest import SLOW
from ringlog.storage import LogConfig, PartitionLog
from ringlog.storage.batch import CODEC_GZIP, CODEC_NONE, CODEC_ZSTD, DELETE_HORIZON_MASK, compute_crc, split_batches
from ringlog.storage.checkpoint import CHECKPOINT_NAME
from ringlog.storage.compaction import clean_log
from ringlog.storage.records import build_batch, decode_records

NOW = 1_700_000_000_000
RETENTION = 1000
KEYS = [b"a", b"b", b"c", b"d", b"e", b"f"]


@attrs.define
class Rec:
    offset: int
    key: bytes
    value: bytes | None
    ts: int


@attrs.define
class Batch:
    base: int
    last: int
    records: list[Rec]
    horizon: int | None = None   # set by the first clean that keeps a tombstone of it


class CompactionModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="ringlog-compact-"))
        self.dir = self.tmp / "compact-0"
        self.batches: list[Batch] = []
        self.leo = 0
        self.clock = NOW
        self.cleaned_end = 0       # M
        self.counter = 0

    def teardown(self) -> None:
        if hasattr(self, "log"):
            self.log.abandon()
        shutil.rmtree(self.tmp, ignore_errors=True)

    @initialize(segment_bytes=st.integers(200, 900), interval=st.integers(0, 200))
    def start(self, segment_bytes: int, interval: int) -> None:
        self.config = LogConfig(
            segment_bytes=segment_bytes,
            index_interval_bytes=interval,
            segment_index_bytes=240,
            retention_ms=-1,
            cleanup_policy="compact",
            delete_retention_ms=RETENTION,
        )
        self.log = PartitionLog.open(self.dir, self.config, now_ms=self.clock)

    # --- the model's view ---------------------------------------------------------------------

    def expected(self) -> list[Rec]:
        m = self.cleaned_end
        latest: dict[bytes, int] = {}
        for b in self.batches:
            for r in b.records:
                if r.offset < m:
                    latest[r.key] = r.offset
        out = []
        for b in self.batches:
            for r in b.records:
                if r.offset >= m or latest.get(r.key) == r.offset:
                    out.append(r)
        return out

    # --- rules --------------------------------------------------------------------------------

    @rule(
        items=st.lists(st.tuples(st.sampled_from(KEYS), st.integers(0, 40), st.booleans()), min_size=1, max_size=4),
        codec=st.sampled_from([CODEC_NONE, CODEC_NONE, CODEC_GZIP, CODEC_ZSTD]),
    )
    def append(self, items: list[tuple[bytes, int, bool]], codec: int) -> None:
        self.clock += 1
        records = []
        for key, size, tomb in items:
            self.counter += 1
            value = None if tomb and size % 3 == 0 else bytes([self.counter % 251]) * size
            records.append((key, value, [("n", b"%d" % self.counter)], self.clock))
        [info] = self.log.append(build_batch(records, compression=codec), now_ms=self.clock)
        assert info.base_offset == self.leo
        recs = [Rec(info.base_offset + i, k, v, ts) for i, (k, v, _h, ts) in enumerate(records)]
        self.batches.append(Batch(info.base_offset, info.last_offset, recs))
        self.leo = info.last_offset + 1

    @rule()
    def roll(self) -> None:
        self.log.roll(self.clock)

    @rule(dt=st.sampled_from([1, 10, RETENTION // 2, RETENTION, 3 * RETENTION]))
    def advance_clock(self, dt: int) -> None:
        self.clock += dt

    @rule(force=st.booleans(), small_map=st.booleans())
    def clean(self, force: bool, small_map: bool) -> None:
        self.log.flush()  # only segments below the recovery point are cleanable
        stats = clean_log(self.log, self.clock, force=force, max_map_keys=2 if small_map else 1000)
        if stats is None:
            return
        # What the cleaner did, replayed on the model: tombstones past their horizon go, then
        # the map end moves and surviving tombstones get a horizon.
        m = stats.map_end
        new_end = max(self.cleaned_end, m)
        latest: dict[bytes, int] = {}
        for b in self.batches:
            for r in b.records:
                if r.offset < new_end:
                    latest[r.key] = r.offset
        for b in self.batches:
            if b.last >= m:
                continue
            if b.horizon is not None and self.clock >= b.horizon:
                b.records = [r for r in b.records if r.value is not None]
            survivors = [r for r in b.records if latest.get(r.key) == r.offset]
            if b.horizon is None and any(r.value is None for r in survivors):
                b.horizon = self.clock + RETENTION
        self.cleaned_end = new_end
        # drop superseded records and emptied batches from the model
        for b in self.batches:
            if b.last < new_end:
                b.records = [r for r in b.records if latest.get(r.key) == r.offset]
        self.batches = [b for b in self.batches if b.records]

    @rule(clean=st.sampled_from([True, None]))
    def close_and_reopen(self, clean: bool | None) -> None:
        self.log.close()
        self.log = PartitionLog.open(self.dir, self.config, now_ms=self.clock, clean=clean)
        assert not self.log.recovery_report.truncated

    @rule(drop_checkpoint=st.booleans())
    def crash_and_reopen(self, drop_checkpoint: bool) -> None:
        self.log.abandon()
        if drop_checkpoint:
            # no recovery point: recovery scans every segment, the cleaned ones included
            (self.dir / CHECKPOINT_NAME).unlink(missing_ok=True)
        self.log = PartitionLog.open(self.dir, self.config, now_ms=self.clock, clean=False)
        report = self.log.recovery_report
        assert not report.truncated, report

    # --- invariants ---------------------------------------------------------------------------

    def read_all(self, offset: int) -> list[tuple]:
        got = self.log.read(offset, 1 << 30).read_bytes()
        out = []
        prev_next = -1
        for header, raw in split_batches(got):
            assert compute_crc(raw) == header.crc
            assert 1 <= header.records_count <= header.last_offset_delta + 1
            assert header.base_offset >= prev_next  # batch ranges never overlap
            prev_next = header.next_offset
            # every batch keeps an original batch's offset range
            assert any(b.base == header.base_offset and b.last == header.last_offset for b in self.batches), header
            if header.attributes & DELETE_HORIZON_MASK:
                assert any(b.horizon == header.base_timestamp for b in self.batches if b.base == header.base_offset)
            for r in decode_records(raw, header):
                out.append((r.offset, r.key, r.value, r.timestamp))
        return out

    @invariant()
    def content_matches(self) -> None:
        if not hasattr(self, "log"):
            return
        assert self.log.log_end_offset == self.leo
        assert self.log.log_start_offset == 0
        got = self.read_all(0)
        offsets = [g[0] for g in got]
        assert offsets == sorted(set(offsets))
        assert got == [(r.offset, r.key, r.value, r.ts) for r in self.expected()]

    @invariant()
    def reads_and_time_lookups(self) -> None:
        if not hasattr(self, "log"):
            return
        exp = self.expected()
        step = max(1, self.leo // 5)
        for o in range(0, self.leo + 1, step):
            got = [g for g in self.read_all(o) if g[0] >= o]
            assert got == [(r.offset, r.key, r.value, r.ts) for r in exp if r.offset >= o]
        for r in exp[:: max(1, len(exp) // 4)]:
            first = next(x for x in exp if x.ts >= r.ts)
            assert self.log.offset_for_timestamp(r.ts) == (first.offset, first.ts)
        assert self.log.offset_for_timestamp(self.clock + 10**6) is None


CompactionModel.TestCase.settings = settings(
    max_examples=300 if SLOW else 60,
    stateful_step_count=40 if SLOW else 30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCompactionModel = CompactionModel.TestCase
