"""Log compaction: crash at each step of the swap, readers of replaced segments, results discarded
when the log changed meanwhile, batch header rules (offsets, producer fields, codecs), the
producer's last batch, keyless records, tombstone horizons, dirty ratio and compaction lag."""
from __future__ import annotations

import shutil
from pathlib import Path

import attrs
import pytest

from ringlog.storage import LogConfig, PartitionLog
from ringlog.storage import compaction
from ringlog.storage.batch import CODEC_LZ4, CODEC_NONE, CODEC_SNAPPY, DELETE_HORIZON_MASK, compute_crc, split_batches
from ringlog.storage.compaction import (
    SWAP_STEPS,
    build_clean,
    clean_log,
    commit_clean,
    plan_clean,
    read_cleaner_checkpoint,
    records_have_keys,
)
from ringlog.storage.records import build_batch, decode_records

NOW = 1_700_000_000_000


def config(**kw) -> LogConfig:
    base = dict(segment_bytes=400, retention_ms=-1, cleanup_policy="compact", delete_retention_ms=1000,
                index_interval_bytes=64)
    base.update(kw)
    return LogConfig(**base)


def fill(log: PartitionLog, n: int, keys: int = 4, *, start: int = 0, codec: int = CODEC_NONE, **kw) -> None:
    for i in range(start, start + n):
        log.append(build_batch([(b"k%d" % (i % keys), b"v%d" % i, [], NOW + i)], compression=codec, **kw),
                   now_ms=NOW + i)


def content(log: PartitionLog, offset: int = 0) -> list[tuple]:
    out = []
    for header, raw in split_batches(log.read_records_bytes(offset, 1 << 30)):
        assert compute_crc(raw) == header.crc
        for r in decode_records(raw, header):
            out.append((r.offset, r.key, r.value, r.timestamp))
    return out


def table(rows: list[tuple]) -> dict:
    t = {}
    for _o, k, v, _ts in rows:
        t[k] = v
    return {k: v for k, v in t.items() if v is not None}


# --- crash safety ---------------------------------------------------------------------------


@pytest.mark.parametrize("step", ("build",) + SWAP_STEPS)
def test_crash_at_each_step_leaves_old_or_new(tmp_path: Path, step: str, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "t-0"
    log = PartitionLog.open(d, config(), now_ms=NOW)
    fill(log, 60)
    log.flush()
    assert log.segment_count() > 4
    # one group: every closed segment becomes a single cleaned segment
    log.update_config(attrs.evolve(log.config, segment_bytes=1 << 20))
    old = content(log)
    old_files = sorted(p.name for p in d.iterdir())
    log.close()

    # the outcome of an uninterrupted clean, on a copy
    shutil.copytree(d, tmp_path / "copy-0")
    ref = PartitionLog.open(tmp_path / "copy-0", config(segment_bytes=1 << 20), now_ms=NOW)
    assert clean_log(ref, NOW + 100) is not None
    new = content(ref)
    ref.close()
    assert new != old and table(new) == table(old)

    log = PartitionLog.open(d, config(segment_bytes=1 << 20), now_ms=NOW)
    if step == "build":
        plan = plan_clean(log, NOW + 100)
        build_clean(plan)                      # .cleaned files written, never committed
        assert any(p.name.endswith(".cleaned") for p in d.iterdir())
    else:
        monkeypatch.setattr(compaction, "_crash_at", step)
        with pytest.raises(compaction._SimulatedCrash):
            clean_log(log, NOW + 100)
        monkeypatch.setattr(compaction, "_crash_at", None)
    log.abandon()                              # what a crash leaves: no close, no checkpoint

    log = PartitionLog.open(d, config(segment_bytes=1 << 20), now_ms=NOW, clean=False)
    assert not log.recovery_report.truncated
    names = sorted(p.name for p in d.iterdir())
    assert not any(n.endswith((".cleaned", ".swap")) for n in names), names
    expect = old if step == "build" else new
    assert content(log) == expect
    if step == "build":
        assert names == old_files
    # and the log goes on: appends, another clean, a clean reopen
    fill(log, 10, start=60)
    log.flush()
    clean_log(log, NOW + 200, force=True)
    log.close()
    log = PartitionLog.open(d, config(segment_bytes=1 << 20), now_ms=NOW, clean=True)
    assert table(content(log)) == {b"k%d" % (i % 4): b"v%d" % i for i in range(70)}
    log.close()


def test_readers_keep_reading_replaced_segments(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path / "t-0", config(), now_ms=NOW)
    fill(log, 40)
    log.flush()
    before = log.read(0, 1 << 30)
    expect = before.read_bytes()
    replaced = set(id(s) for s in log.segments[:-1])
    assert clean_log(log, NOW + 50) is not None
    assert not replaced & {id(s) for s in log.segments}
    assert before.read_bytes() == expect       # fds of the unlinked files are still open
    assert log.size_bytes < len(expect)
    log.close()


# --- the log changing under a build ---------------------------------------------------------


@pytest.mark.parametrize("change", ["truncate", "retention", "close"])
def test_result_discarded_when_log_changed(tmp_path: Path, change: str) -> None:
    d = tmp_path / "t-0"
    log = PartitionLog.open(d, config(), now_ms=NOW)
    fill(log, 40)
    log.flush()
    plan = plan_clean(log, NOW + 50)
    result = build_clean(plan)                 # "in the worker thread"
    before = content(log) if change != "close" else None
    if change == "truncate":
        log.truncate_to(30)
        before = content(log)
    elif change == "retention":
        log.update_config(attrs.evolve(log.config, retention_bytes=log.size_bytes // 2))
        assert log.apply_retention(NOW + 50).segments_deleted > 0
        log.update_config(attrs.evolve(log.config, retention_bytes=-1))
        before = content(log, log.log_start_offset)
    else:
        log.close()
    assert commit_clean(log, plan, result) is None
    assert not any(p.name.endswith(".cleaned") for p in d.iterdir())
    if change != "close":
        assert content(log, log.log_start_offset) == before
        log.close()


def test_stop_aborts_a_build(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path / "t-0", config(), now_ms=NOW)
    fill(log, 40)
    log.flush()
    plan = plan_clean(log, NOW + 50)
    plan.stop()
    with pytest.raises(compaction.CleanAborted):
        build_clean(plan)
    assert not any(p.name.endswith(".cleaned") for p in (tmp_path / "t-0").iterdir())
    log.close()


# --- what is kept ---------------------------------------------------------------------------


def test_batch_fields_offsets_and_codec_survive(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path / "t-0", config(segment_bytes=2000), now_ms=NOW)
    for i in range(30):
        recs = [(b"k%d" % ((3 * i + j) % 5), b"v%d-%d" % (i, j), [("h", b"x")], NOW + i) for j in range(3)]
        codec = CODEC_LZ4 if i % 2 else CODEC_SNAPPY
        log.append(build_batch(recs, compression=codec, producer_id=77, producer_epoch=2, base_sequence=3 * i),
                   now_ms=NOW + i)
    log.roll(NOW + 40)
    log.flush()
    originals = {h.base_offset: h for h, _ in split_batches(log.read_records_bytes(0, 1 << 30))}
    assert clean_log(log, NOW + 50) is not None
    kept = list(split_batches(log.read_records_bytes(0, 1 << 30)))
    assert len(kept) < len(originals)
    for header, raw in kept:
        o = originals[header.base_offset]
        assert (header.last_offset_delta, header.producer_id, header.producer_epoch, header.base_sequence,
                header.compression) == (o.last_offset_delta, 77, 2, o.base_sequence, o.compression)
        assert 1 <= header.records_count <= o.records_count
        for r in decode_records(raw, header):
            i, j = divmod(r.offset, 3)
            assert r.value == b"v%d-%d" % (i, j) and r.timestamp == NOW + i and r.headers == (("h", b"x"),)
    assert table(content(log)) == {b"k%d" % ((3 * i + j) % 5): b"v%d-%d" % (i, j) for i in range(30) for j in range(3)}
    log.close()


def test_last_batch_of_a_producer_is_kept_whole(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path / "t-0", config(segment_bytes=10_000), now_ms=NOW)
    # producer 5 writes k0 once, then someone else overwrites k0 many times
    log.append(build_batch([(b"k0", b"from-5", [], NOW)], producer_id=5, producer_epoch=0, base_sequence=9),
               now_ms=NOW)
    fill(log, 10, keys=1, start=1)
    log.roll(NOW + 20)
    log.flush()
    assert clean_log(log, NOW + 30, force=True) is not None
    assert [r[:3] for r in content(log)] == [(10, b"k0", b"v10")]
    # the producer's batch stays as an empty header: offsets, sequence and epoch intact
    [first] = [h for h, _ in split_batches(log.read_records_bytes(0, 1 << 20))][:1]
    assert (first.base_offset, first.last_offset_delta, first.records_count) == (0, 0, 0)
    assert (first.producer_id, first.producer_epoch, first.base_sequence) == (5, 0, 9)
    assert first.max_timestamp == NOW and first.size == 61
    log.close()
    log = PartitionLog.open(tmp_path / "t-0", config(segment_bytes=10_000), now_ms=NOW, clean=False)
    if log.recovery_report.segments_scanned == 0:
        (tmp_path / "t-0" / "ringlog.checkpoint").unlink()
        log.abandon()
        log = PartitionLog.open(tmp_path / "t-0", config(segment_bytes=10_000), now_ms=NOW, clean=False)
    assert [h.records_count for h in log.iter_batch_headers(0)][:1] == [0]   # recovery accepts it
    # once the producer has expired the empty batch goes too
    assert clean_log(log, NOW + 30 + 25 * 3600 * 1000, force=True) is not None
    assert [h.base_offset for h in log.iter_batch_headers(0)] == [10]
    log.close()


def test_keyless_records_and_tombstones(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path / "t-0", config(segment_bytes=10_000), now_ms=NOW)
    log.append(build_batch([(None, b"no-key", [], NOW), (b"a", b"1", [], NOW), (b"b", b"1", [], NOW)]), now_ms=NOW)
    log.append(build_batch([(b"a", None, [], NOW + 1)]), now_ms=NOW + 1)
    log.roll(NOW + 2)
    log.flush()
    assert clean_log(log, NOW + 10, force=True) is not None
    rows = content(log)
    assert [r[:3] for r in rows] == [(2, b"b", b"1"), (3, b"a", None)]
    [h, _] = [h for h, _ in split_batches(log.read_records_bytes(3, 1 << 20))][:1] + [None]
    assert h.attributes & DELETE_HORIZON_MASK and h.base_timestamp == NOW + 10 + 1000
    assert rows[1][3] == NOW + 1                       # the record's own timestamp is unchanged
    assert read_cleaner_checkpoint(log.directory).delete_horizon == NOW + 1010
    # before the horizon the tombstone stays; at the horizon a clean runs by itself and drops it
    assert plan_clean(log, NOW + 1009) is None
    assert clean_log(log, NOW + 1010) is not None
    assert [r[:3] for r in content(log)] == [(2, b"b", b"1")]
    assert read_cleaner_checkpoint(log.directory).delete_horizon == -1
    log.close()


def test_dirty_ratio_and_compaction_lag(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path / "t-0", config(min_cleanable_dirty_ratio=0.9), now_ms=NOW)
    fill(log, 40)
    log.flush()
    assert clean_log(log, NOW + 50) is not None      # all dirty: ratio 1.0
    many = log.segment_count()
    assert clean_log(log, NOW + 50) is not None      # nothing dirty, but the small cleaned segments merge
    assert log.segment_count() < many
    assert plan_clean(log, NOW + 50) is None          # and then there is nothing to do
    fill(log, 4, start=40)
    log.roll(NOW + 60)
    log.flush()
    assert plan_clean(log, NOW + 60) is None          # a little dirty next to a clean part
    assert plan_clean(log, NOW + 60, force=True) is not None
    log.update_config(attrs.evolve(log.config, min_cleanable_dirty_ratio=0.0, min_compaction_lag_ms=10_000))
    assert plan_clean(log, NOW + 60) is None          # every segment is younger than the lag
    assert plan_clean(log, NOW + 60 + 10_000) is not None
    log.close()


def test_unflushed_and_active_segments_are_not_cleaned(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path / "t-0", config(), now_ms=NOW)
    fill(log, 40)
    assert log.recovery_point == 0 and log.segment_count() > 2
    assert plan_clean(log, NOW + 50) is None          # nothing fsynced yet: recovery may still cut it
    log.flush()
    plan = plan_clean(log, NOW + 50)
    assert plan is not None and all(inp.segment is not log.active_segment for inp in plan.inputs)
    log.close()


def test_records_have_keys() -> None:
    keyed = build_batch([(b"a", b"1", [], NOW), (b"b", None, [], NOW)], compression=CODEC_LZ4)
    mixed = build_batch([(b"a", b"1", [], NOW), (None, b"2", [], NOW)])
    [(h1, r1)] = list(split_batches(keyed))
    [(h2, r2)] = list(split_batches(mixed))
    assert records_have_keys(r1, h1) and not records_have_keys(r2, h2)


def test_topic_configs_parse() -> None:
    cfg = LogConfig().with_topic_configs({"min.cleanable.dirty.ratio": "0.25", "delete.retention.ms": "5",
                                          "min.compaction.lag.ms": "7", "cleanup.policy": "delete,compact"})
    assert (cfg.min_cleanable_dirty_ratio, cfg.delete_retention_ms, cfg.min_compaction_lag_ms) == (0.25, 5, 7)
    assert cfg.cleanup_policy == "delete,compact"  # as given: DescribeConfigs answers it
    assert cfg.to_topic_configs()["min.cleanable.dirty.ratio"] == "0.25"
    with pytest.raises(ValueError):
        LogConfig().with_topic_configs({"min.cleanable.dirty.ratio": "1.5"})


# --- transactions -----------------------------------------------------------------------------


def _txn(log: PartitionLog, pid: int, key: bytes, value: bytes, ts: int) -> None:
    log.append(build_batch([(key, value, [], ts)], producer_id=pid, producer_epoch=0, base_sequence=0,
                           transactional=True), now_ms=ts)


def _marker(log: PartitionLog, pid: int, commit: bool, ts: int) -> None:
    key = b"\x00\x00\x00" + (b"\x01" if commit else b"\x00")
    log.append(build_batch([(key, b"\x00\x00\x00\x00\x00\x00", [], ts)], producer_id=pid, producer_epoch=0,
                           base_sequence=-1, transactional=True, control=True), now_ms=ts, from_client=False)


def test_aborted_records_go_and_never_shadow_a_committed_value(tmp_path: Path) -> None:
    """What `__consumer_offsets` needs: a group's committed offset (k) outlives a later aborted
    transactional commit of the same key, which the clean removes; the markers stay."""
    log = PartitionLog.open(tmp_path / "t-0", config(), now_ms=NOW)
    log.append(build_batch([(b"k", b"committed", [], NOW)]), now_ms=NOW)             # 0
    _txn(log, 7, b"k", b"aborted", NOW + 1)                                           # 1
    _marker(log, 7, False, NOW + 2)                                                   # 2 abort
    _txn(log, 8, b"j", b"kept", NOW + 3)                                              # 3
    _marker(log, 8, True, NOW + 4)                                                    # 4 commit
    fill(log, 20, keys=2, start=100)  # other keys, and segments to roll past the transactions
    log.flush()
    assert clean_log(log, NOW + 1000, force=True) is not None
    rows = content(log)
    by_key = {}
    for offset, key, value, _ts in rows:
        by_key.setdefault(key, []).append((offset, value))
    assert by_key[b"k"] == [(0, b"committed")]
    assert by_key[b"j"] == [(3, b"kept")]
    markers = [h for h, _raw in split_batches(log.read_records_bytes(0, 1 << 30)) if h.is_control]
    assert [m.base_offset for m in markers] == [2, 4]
    log.close()


def test_a_transaction_decided_past_the_cleaned_range_is_kept_whole(tmp_path: Path) -> None:
    """Its marker is not in the cleanable range: neither removed nor allowed to shadow, until a
    later clean sees how it ended; and nothing at or past max_offset (the LSO) is cleaned."""
    log = PartitionLog.open(tmp_path / "t-0", config(), now_ms=NOW)
    log.append(build_batch([(b"k", b"committed", [], NOW)]), now_ms=NOW)             # 0
    _txn(log, 7, b"k", b"open", NOW + 1)                                              # 1
    fill(log, 20, keys=2, start=100)                                                  # 2..21
    log.flush()
    lso = 1  # producer 7's transaction is open from offset 1
    clean_log(log, NOW + 1000, force=True, max_offset=lso)
    assert [(o, v) for o, k, v, _ in content(log) if k == b"k"] == [(0, b"committed"), (1, b"open")]
    # the transaction aborts; its marker lies past the segments a clean may take: kept whole
    _marker(log, 7, False, NOW + 500)
    fill(log, 20, keys=2, start=200)
    log.flush()
    end_of_first_segments = log.segments[1].base_offset
    clean_log(log, NOW + 1000, force=True, max_offset=end_of_first_segments)
    assert [(o, v) for o, k, v, _ in content(log) if k == b"k"] == [(0, b"committed"), (1, b"open")]
    # once the abort marker is in range the aborted value goes and the committed one stays
    clean_log(log, NOW + 1000, force=True)
    assert [(o, v) for o, k, v, _ in content(log) if k == b"k"] == [(0, b"committed")]
    log.close()
