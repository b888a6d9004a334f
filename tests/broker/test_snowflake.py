"""Snowflake ids: layout, clocks going backwards, bursts, restarts with a persisted mark."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringlog.broker.snowflake import (
    EPOCH_MS,
    MAX_SEQUENCE,
    CorruptHighWaterMark,
    FileHighWaterMark,
    MemoryHighWaterMark,
    SnowflakeGenerator,
    compose,
    decompose,
)

T0 = EPOCH_MS + 500 * 86_400_000  # some day in 2025


class FakeClock:
    """Milliseconds under test control; sleep() advances it (unless frozen)."""

    def __init__(self, now: int = T0, *, frozen: bool = False) -> None:
        self.now = now
        self.frozen = frozen
        self.slept_ms = 0.0

    def __call__(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept_ms += seconds * 1000
        if not self.frozen:
            self.now += max(1, round(seconds * 1000))


def make(clock: FakeClock, store=None, **kw) -> SnowflakeGenerator:
    return SnowflakeGenerator(7, clock=clock, sleep=clock.sleep, store=store or MemoryHighWaterMark(), **kw)


def test_layout_round_trip_and_positive_int64():
    i = compose(T0, 1023, MAX_SEQUENCE)
    assert 0 < i < 2**63
    p = decompose(i)
    assert (p.timestamp_ms, p.worker_id, p.sequence) == (T0, 1023, MAX_SEQUENCE)
    # The last representable millisecond still fits in a positive int64.
    top = compose(EPOCH_MS + 2**41 - 1, 1023, MAX_SEQUENCE)
    assert top == 2**63 - 1
    with pytest.raises(ValueError):
        compose(EPOCH_MS + 2**41, 0, 0)
    with pytest.raises(ValueError):
        compose(T0, 1024, 0)


def test_ids_carry_time_worker_and_sequence():
    clock = FakeClock()
    gen = make(clock)
    a, b = gen.next_id(), gen.next_id()
    clock.now += 3
    c = gen.next_id()
    pa, pb, pc = decompose(a), decompose(b), decompose(c)
    assert (pa.timestamp_ms, pa.worker_id, pa.sequence) == (T0, 7, 0)
    assert (pb.timestamp_ms, pb.sequence) == (T0, 1)
    assert (pc.timestamp_ms, pc.sequence) == (T0 + 3, 0)


def test_small_backward_step_is_waited_out():
    clock = FakeClock()
    gen = make(clock, max_backward_wait_ms=5)
    first = gen.next_id()
    clock.now -= 3  # NTP slew of 3 ms
    second = gen.next_id()
    assert second > first
    assert gen.stats.clock_backward_events == 1
    assert gen.stats.max_backward_ms == 3
    assert clock.slept_ms >= 3  # it waited rather than borrowing
    assert decompose(second).timestamp_ms >= T0


def test_large_backward_step_continues_from_last_timestamp():
    clock = FakeClock()
    gen = make(clock, max_backward_wait_ms=5)
    ids = [gen.next_id() for _ in range(3)]
    clock.now -= 60_000  # a minute back: not waited for
    more = [gen.next_id() for _ in range(3)]
    assert clock.slept_ms == 0
    assert ids + more == sorted(set(ids + more))
    assert {decompose(i).timestamp_ms for i in more} == {T0}
    assert gen.stats.max_backward_ms == 60_000
    # When the clock catches up and passes, ids follow it again.
    clock.now = T0 + 10
    assert decompose(gen.next_id()).timestamp_ms == T0 + 10


def test_burst_beyond_4096_in_one_millisecond_waits_for_the_next():
    clock = FakeClock()
    gen = make(clock)
    ids = [gen.next_id() for _ in range(10_000)]
    assert len(set(ids)) == 10_000 and ids == sorted(ids)
    assert gen.stats.sequence_overflows == 2
    assert gen.stats.borrowed_ms == 0  # the fake clock advanced while it waited
    assert [decompose(i).timestamp_ms for i in (ids[0], ids[4096], ids[8192])] == [T0, T0 + 1, T0 + 2]


def test_burst_with_a_stuck_clock_borrows_milliseconds():
    clock = FakeClock(frozen=True)
    gen = make(clock)
    ids = [gen.next_id() for _ in range(3 * 4096 + 5)]
    assert len(set(ids)) == len(ids) and ids == sorted(ids)
    assert gen.stats.borrowed_ms == 3
    assert decompose(ids[-1]).timestamp_ms == T0 + 3


def test_unique_across_recreation_even_with_the_clock_set_back(tmp_path):
    path = tmp_path / "producer-id.hwm"
    clock = FakeClock()
    gen = make(clock, FileHighWaterMark(path), lease_ms=1000)
    before = [gen.next_id() for _ in range(5000)]
    clock.now += 2500  # crosses the lease: a new mark is saved before the id is issued
    before.append(gen.next_id())
    assert gen.stats.hwm_saves == 2
    saved = FileHighWaterMark(path).load()
    assert saved > decompose(before[-1]).timestamp_ms

    # "Restart" an hour in the past: the new generator starts at the persisted mark.
    clock2 = FakeClock(T0 - 3_600_000)
    gen2 = make(clock2, FileHighWaterMark(path), lease_ms=1000)
    after = [gen2.next_id() for _ in range(5000)]
    assert min(after) > max(before)
    assert len(set(after)) == len(after) and after == sorted(after)
    assert decompose(after[0]).timestamp_ms >= saved


def test_restart_same_millisecond_as_the_mark(tmp_path):
    store = MemoryHighWaterMark()
    clock = FakeClock()
    gen = make(clock, store, lease_ms=1)
    a = gen.next_id()
    gen2 = make(FakeClock(decompose(a).timestamp_ms), store, lease_ms=1)
    assert gen2.next_id() > a


def test_corrupt_mark_file_is_refused(tmp_path):
    path = tmp_path / "hwm"
    FileHighWaterMark(path).save(T0)
    assert FileHighWaterMark(path).load() == T0
    path.write_text(path.read_text().replace(str(T0), str(T0 - 1)))
    with pytest.raises(CorruptHighWaterMark):
        FileHighWaterMark(path).load()
    path.write_text("garbage\n")
    with pytest.raises(CorruptHighWaterMark):
        FileHighWaterMark(path).load()


def test_rejects_bad_worker_id():
    with pytest.raises(ValueError):
        SnowflakeGenerator(1024)


def test_real_clock_ids_are_increasing():
    gen = SnowflakeGenerator(3)
    ids = [gen.next_id() for _ in range(20_000)]
    assert ids == sorted(set(ids))


# Each step: ("tick", ms moved, possibly negative), ("ids", how many), ("restart",).
steps = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.integers(-20_000, 5_000)),
        st.tuples(st.just("ids"), st.integers(1, 5000)),
        st.tuples(st.just("restart")),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(steps=steps, frozen=st.booleans(), lease=st.integers(1, 3000), wait=st.integers(0, 10))
def test_ids_strictly_increase_whatever_the_clock_does(steps, frozen, lease, wait):
    clock = FakeClock(frozen=frozen)
    store = MemoryHighWaterMark()
    gen = make(clock, store, lease_ms=lease, max_backward_wait_ms=wait)
    last = -1
    for step in steps:
        if step[0] == "tick":
            clock.now = max(EPOCH_MS, clock.now + step[1])
        elif step[0] == "restart":
            gen = make(clock, store, lease_ms=lease, max_backward_wait_ms=wait)
        else:
            for _ in range(step[1]):
                i = gen.next_id()
                assert i > last
                assert 0 < i < 2**63
                last = i
            # Whatever was issued is below the persisted mark (what makes restarts safe).
            assert decompose(last).timestamp_ms < store.mark_ms
