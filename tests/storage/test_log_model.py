"""The partition log against a list model (hypothesis RuleBasedStateMachine).

The model is the list of appended batches with their offsets, plus the log start offset. Every
step checks that the log's offsets match and that reading from the log start returns exactly the
model's batches (byte for byte, CRCs valid). Crash rules drop the log without closing it, damage
the active segment (cut at a random byte, or flip a byte) and reopen it unclean: exactly a prefix of
whole batches must survive, and nothing damaged may ever be read.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import attrs
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.conftest import SLOW
from ringlog.storage import LogConfig, PartitionLog
from ringlog.storage.batch import CODEC_GZIP, CODEC_NONE, parse_header, set_base_offset, split_batches, validate_batch
from ringlog.storage.records import build_batch

NOW = 1_700_000_000_000


@attrs.define
class Stored:
    base: int
    last: int
    data: bytes  # as stored: baseOffset rewritten

    @property
    def size(self) -> int:
        return len(self.data)


class LogModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="ringlog-model-"))
        self.dir = self.tmp / "model-0"
        self.batches: list[Stored] = []
        self.lso = 0
        self.leo = 0
        self.clock = NOW
        self.counter = 0

    def teardown(self) -> None:
        if hasattr(self, "log"):
            self.log.abandon()
        shutil.rmtree(self.tmp, ignore_errors=True)

    @initialize(
        segment_bytes=st.integers(150, 1200),
        interval=st.integers(0, 300),
        index_bytes=st.integers(24, 120),
    )
    def start(self, segment_bytes: int, interval: int, index_bytes: int) -> None:
        self.config = LogConfig(
            segment_bytes=segment_bytes,
            index_interval_bytes=interval,
            segment_index_bytes=index_bytes,
            retention_ms=-1,
        )
        self.log = PartitionLog.open(self.dir, self.config, now_ms=self.clock)

    # --- helpers ------------------------------------------------------------------------------

    def live(self) -> list[Stored]:
        return [b for b in self.batches if b.last >= self.lso]

    def reopen(self, *, clean: bool | None) -> None:
        self.log = PartitionLog.open(self.dir, self.config, now_ms=self.clock, clean=clean)

    # --- rules --------------------------------------------------------------------------------

    @rule(
        shapes=st.lists(st.tuples(st.integers(1, 4), st.integers(0, 60), st.booleans()), min_size=1, max_size=3),
        dt=st.integers(-5, 50),
    )
    def append(self, shapes: list[tuple[int, int, bool]], dt: int) -> None:
        self.clock += max(dt, 0)
        blob = b""
        for n, size, gzip in shapes:
            self.counter += 1
            records = [(b"%d" % self.counter, bytes([self.counter % 251]) * size, [], self.clock + dt + i) for i in range(n)]
            blob += build_batch(records, compression=CODEC_GZIP if gzip else CODEC_NONE)
        infos = self.log.append(blob, now_ms=self.clock)
        assert infos[0].base_offset == self.leo
        for info, (_h, raw) in zip(infos, split_batches(blob)):
            data = bytearray(raw)
            set_base_offset(data, info.base_offset)
            self.batches.append(Stored(info.base_offset, info.last_offset, bytes(data)))
            self.leo = info.last_offset + 1

    @rule(data=st.data(), max_bytes=st.integers(0, 800), min_one=st.booleans(), bounded=st.booleans())
    def read(self, data: st.DataObject, max_bytes: int, min_one: bool, bounded: bool) -> None:
        offset = data.draw(st.integers(self.lso, self.leo))
        ub = data.draw(st.integers(self.lso, self.leo)) if bounded else None
        self.check_read(offset, max_bytes, ub, min_one)

    def check_read(self, offset: int, max_bytes: int, ub: int | None, min_one: bool) -> None:
        result = self.log.read(offset, max_bytes, upper_bound=ub, min_one_batch=min_one)
        got = result.read_bytes()
        assert len(got) == result.size
        assert len(result.regions) <= self.log.segment_count()
        limit = self.leo if ub is None else ub
        expect: list[Stored] = []
        total = 0
        for b in self.batches:
            if b.last < offset:
                continue
            if b.last >= limit:
                break
            if total + b.size > max_bytes and not (min_one and not expect):
                break
            expect.append(b)
            total += b.size
        assert got == b"".join(b.data for b in expect), (offset, max_bytes, ub, min_one)

    @rule()
    def roll(self) -> None:
        self.log.roll(self.clock)

    @rule(data=st.data())
    def delete_records_before(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(self.lso, self.leo))
        assert self.log.delete_records_before(offset) == max(self.lso, offset)
        self.lso = max(self.lso, offset)

    @rule(keep=st.integers(0, 2000))
    def retention_bytes(self, keep: int) -> None:
        self.log.apply_retention(self.clock)  # first drop what is wholly below the log start
        before = self.log.size_bytes
        self.log.update_config(attrs.evolve(self.config, retention_bytes=keep))
        self.log.apply_retention(self.clock)
        self.log.update_config(self.config)
        # whole segments only, never below the limit, start moves to a batch boundary
        assert self.log.size_bytes == before or self.log.size_bytes >= keep
        new_lso = self.log.log_start_offset
        assert new_lso >= self.lso
        assert new_lso == self.leo or any(b.base == new_lso for b in self.batches) or new_lso == self.lso
        self.lso = new_lso

    @rule(age=st.integers(0, 400))
    def retention_time(self, age: int) -> None:
        self.log.update_config(attrs.evolve(self.config, retention_ms=age))
        self.log.apply_retention(self.clock)
        self.log.update_config(self.config)
        new_lso = self.log.log_start_offset
        assert new_lso >= self.lso
        # everything now below the start was older than the retention limit
        for b in self.batches:
            if self.lso <= b.base and b.last < new_lso:
                assert parse_header(b.data).max_timestamp < self.clock - age
        self.lso = new_lso

    @rule(data=st.data())
    def truncate_to(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(self.lso, self.leo))
        first_base = self.log.segment_base_offsets()[0]
        self.log.truncate_to(offset)
        if offset >= self.leo:
            return
        if offset <= first_base:
            self.batches = [b for b in self.batches if b.last < first_base]
            self.leo = self.lso = offset
            return
        [cut] = [b for b in self.batches if b.base <= offset <= b.last]
        self.batches = [b for b in self.batches if b.last < cut.base]
        self.leo = cut.base
        self.lso = min(self.lso, self.leo)

    @rule()
    def flush(self) -> None:
        self.log.flush()
        assert self.log.recovery_point == self.leo

    @rule(clean=st.sampled_from([True, None]))
    def close_and_reopen(self, clean: bool | None) -> None:
        self.log.close()
        self.reopen(clean=clean)
        report = self.log.recovery_report
        assert report is not None and not report.truncated
        if clean:
            assert report.segments_scanned == 0

    @rule(data=st.data())
    def crash_and_cut(self, data: st.DataObject) -> None:
        active = self.log.active_segment
        path = active.log.path
        size = active.size
        self.log.abandon()
        cut = data.draw(st.integers(0, size))
        os.truncate(path, cut)
        survivors = [b for b in self.batches if b.base < active.base_offset]
        pos = 0
        for b in self.batches:
            if b.base < active.base_offset:
                continue
            if pos + b.size > cut:
                break
            survivors.append(b)
            pos += b.size
        # a cut exactly at a batch boundary leaves nothing to repair
        self._reopen_after_damage(survivors, expect_cut=pos < cut)

    @rule(data=st.data())
    def crash_and_flip(self, data: st.DataObject) -> None:
        active = self.log.active_segment
        if active.size == 0:
            return
        path = active.log.path
        self.log.abandon()
        raw = bytearray(path.read_bytes())
        where = data.draw(st.integers(0, len(raw) - 1))
        survivors = [b for b in self.batches if b.base < active.base_offset]
        pos = 0
        for b in self.batches:
            if b.base < active.base_offset:
                continue
            if pos <= where < pos + b.size:
                if 12 <= where - pos < 16:
                    where = pos + 21 + (where - pos - 12)  # the leader epoch is outside the CRC
                break
            survivors.append(b)
            pos += b.size
        raw[where] ^= 1 << data.draw(st.integers(0, 7))
        path.write_bytes(bytes(raw))
        self._reopen_after_damage(survivors, expect_cut=True)

    def _reopen_after_damage(self, survivors: list[Stored], *, expect_cut: bool) -> None:
        self.reopen(clean=False)
        report = self.log.recovery_report
        assert report is not None and report.truncated == expect_cut, report
        self.batches = survivors
        self.leo = survivors[-1].last + 1 if survivors else self.log.segment_base_offsets()[0]
        self.lso = min(self.lso, self.leo)

    # --- invariants ---------------------------------------------------------------------------

    @invariant()
    def offsets_match(self) -> None:
        if not hasattr(self, "log"):
            return
        assert self.log.log_end_offset == self.leo
        assert self.log.log_start_offset == self.lso
        assert self.log.recovery_point <= self.leo

    @invariant()
    def content_matches(self) -> None:
        if not hasattr(self, "log"):
            return
        got = self.log.read(self.lso, 1 << 30).read_bytes()
        assert got == b"".join(b.data for b in self.live())
        for _h, raw in split_batches(got):
            validate_batch(raw, from_client=False)
        assert sum(1 for _ in self.log.iter_batch_headers(self.lso)) == len(self.live())

    @invariant()
    def budgeted_reads_match(self) -> None:
        """Reads from several starts with budgets that end just before/at/after batch boundaries."""
        if not hasattr(self, "log"):
            return
        live = self.live()
        for i in range(0, len(live), max(1, len(live) // 6)):
            start = max(live[i].base, self.lso)
            two = sum(b.size for b in live[i : i + 2])
            for budget in (0, live[i].size - 1, two - 1, two, two + 1):
                self.check_read(start, budget, None, True)
                self.check_read(start, budget, None, False)
            self.check_read(start, 1 << 20, live[min(i + 2, len(live) - 1)].last, True)


LogModel.TestCase.settings = settings(
    max_examples=400 if SLOW else 80,
    stateful_step_count=40 if SLOW else 25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLogModel = LogModel.TestCase
