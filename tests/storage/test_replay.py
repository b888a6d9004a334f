"""storage.replay and storage.verify against partition directories written byte by byte here (the
same layout the broker writes: `<topic>-<partition>/<20-digit base offset>.log`)."""
from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringlog.storage.batch import (
    CODEC_GZIP,
    CODEC_LZ4,
    CODEC_NONE,
    CODEC_SNAPPY,
    CODEC_ZSTD,
    HEADER_SIZE,
    compute_crc,
    set_base_offset,
)
from ringlog.storage.errors import CorruptBatchError
from ringlog.storage.records import build_batch, encode_record
from ringlog.storage.replay import (
    NotALogDirectoryError,
    ReplayRecord,
    SegmentCorruptError,
    TimestampType,
    classify,
    iter_data_dir,
    iter_partition,
    list_partitions,
    parse_partition_dir_name,
    partition_stats,
)
from ringlog.storage.verify import CORRUPT, GAP, OFFSETS, TORN_TAIL, verify_data_dir, verify_partition

T0 = 1_700_000_000_000
CODECS = [CODEC_NONE, CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD]


# --- helpers shared with tests/cli/test_log_cli.py ------------------------------------------


def make_batch(offset: int, n: int, *, codec: int = CODEC_NONE, ts: int | None = None, **kw) -> bytearray:
    """n records at offsets offset..offset+n-1: key b"k<offset>", value b"v<offset>", one header."""
    ts = T0 + offset if ts is None else ts
    items = [
        (b"k%d" % (offset + i), b"v%d" % (offset + i), [("h", b"%d" % (offset + i))], ts + i) for i in range(n)
    ]
    raw = bytearray(build_batch(items, compression=codec, **kw))
    # How the broker assigns offsets: rewrite baseOffset, which the CRC does not cover.
    set_base_offset(raw, offset)
    return raw


def write_segment(part_dir: Path, base_offset: int, batches) -> Path:
    part_dir.mkdir(parents=True, exist_ok=True)
    path = part_dir / f"{base_offset:020d}.log"
    path.write_bytes(b"".join(bytes(b) for b in batches))
    return path


def write_partition(part_dir: Path, layout, *, codecs=CODECS) -> list[Path]:
    """layout: one list of batch sizes per segment; offsets run contiguously from 0."""
    offset = 0
    paths = []
    k = 0
    for sizes in layout:
        base = offset
        batches = []
        for n in sizes:
            batches.append(make_batch(offset, n, codec=codecs[k % len(codecs)]))
            offset += n
            k += 1
        paths.append(write_segment(part_dir, base, batches))
    return paths


def expected(topic: str, partition: int, offsets) -> list[ReplayRecord]:
    return [
        ReplayRecord(
            topic, partition, o, T0 + o, TimestampType.CREATE_TIME, b"k%d" % o, b"v%d" % o, (("h", b"%d" % o),)
        )
        for o in offsets
    ]


# --- layout ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, parsed",
    [
        ("orders-0", ("orders", 0)),
        ("my-topic.v2_x-17", ("my-topic.v2_x", 17)),
        ("a--3", ("a-", 3)),
        ("orders-0.4f2a-delete", None),
        ("orders-3-delete", None),
        (".orders-0", None),
        ("orders", None),
        ("-0", None),
        ("orders-", None),
        ("orders-x", None),
        ("orders-01", None),
        ("orders-٣", None),  # a non-ASCII digit is not a partition number
    ],
)
def test_partition_dir_names(name, parsed):
    assert parse_partition_dir_name(name) == parsed


def test_data_dir_listing_skips_non_partitions(tmp_path):
    for name in ["b.t-1", "b.t-0", "a-10", "a-2", "a-0.x-delete", ".hidden-0", "lost+found"]:
        (tmp_path / name).mkdir()
    (tmp_path / "z-5").write_text("a file, not a partition")
    (tmp_path / "recovery-point-offset-checkpoint").write_text("0\n0\n")
    assert [(p.topic, p.partition) for p in list_partitions(tmp_path)] == [
        ("a", 2),
        ("a", 10),
        ("b.t", 0),
        ("b.t", 1),
    ]
    assert classify(tmp_path) == "data"


def test_classify(tmp_path):
    part = tmp_path / "t-0"
    write_partition(part, [[1]])
    assert classify(part) == "partition"
    (tmp_path / "empty-3").mkdir()
    assert classify(tmp_path / "empty-3") == "partition"
    (tmp_path / "plain").mkdir()
    with pytest.raises(NotALogDirectoryError):
        classify(tmp_path / "plain")
    write_segment(tmp_path / "segments-here", 0, [make_batch(0, 1)])
    with pytest.raises(NotALogDirectoryError):
        classify(tmp_path / "segments-here")
    with pytest.raises(FileNotFoundError):
        classify(tmp_path / "missing")
    with pytest.raises(NotADirectoryError):
        classify(part / f"{0:020d}.log")


# --- replay ---------------------------------------------------------------------------------


def test_multi_segment_every_codec_in_order(tmp_path):
    part = tmp_path / "my-topic.v2-7"
    write_partition(part, [[3, 1, 4], [1, 5], [9, 2, 6, 5]])
    # Index, time index and checkpoint files sit beside the segments: ignored.
    (part / f"{0:020d}.index").write_bytes(b"\x00" * 80)
    (part / f"{0:020d}.timeindex").write_bytes(b"\x00" * 120)
    (part / "leader-epoch-checkpoint").write_text("0\n1\n0 0\n")
    assert list(iter_partition(part)) == expected("my-topic.v2", 7, range(36))


@pytest.mark.parametrize("start", [0, 1, 3, 7, 8, 9, 14, 35, 36, 1000])
def test_from_offset(tmp_path, start):
    part = tmp_path / "t-0"
    write_partition(part, [[3, 1, 4], [1, 5], [9, 2, 6, 5]])
    assert list(iter_partition(part, start)) == expected("t", 0, range(start, 36))


@pytest.mark.parametrize("start, stop", [(0, 0), (0, 1), (2, 9), (8, 9), (10, 36), (5, 1000)])
def test_to_offset_is_exclusive(tmp_path, start, stop):
    part = tmp_path / "t-0"
    write_partition(part, [[3, 1, 4], [1, 5], [9, 2, 6, 5]])
    assert list(iter_partition(part, start, to_offset=stop)) == expected("t", 0, range(start, min(stop, 36)))


def test_log_start_above_first_segment_base(tmp_path):
    # Retention moved the log start to 10 but the first segment still starts at 0.
    part = tmp_path / "t-0"
    write_partition(part, [[4, 4, 4], [4]])
    (part / "log-start-offset-checkpoint").write_text("0\n1\nt 0 10\n")
    assert [r.offset for r in iter_partition(part, 10)] == list(range(10, 16))


def test_control_batches_skipped_and_log_append_time(tmp_path):
    part = tmp_path / "t-0"
    marker = make_batch(2, 1, control=True, transactional=True, producer_id=5, producer_epoch=0)
    lat = make_batch(3, 2, log_append_time=True)
    write_segment(part, 0, [make_batch(0, 2, transactional=True, producer_id=5, producer_epoch=0), marker, lat])
    got = list(iter_partition(part))
    assert [r.offset for r in got] == [0, 1, 3, 4]
    assert [r.timestamp_type for r in got] == [TimestampType.CREATE_TIME] * 2 + [TimestampType.LOG_APPEND_TIME] * 2
    # With LogAppendTime every record carries the batch's maxTimestamp.
    assert [r.timestamp for r in got[2:]] == [T0 + 4, T0 + 4]


def test_empty_and_missing_segments(tmp_path):
    part = tmp_path / "t-0"
    part.mkdir()
    assert list(iter_partition(part)) == []
    write_segment(part, 0, [make_batch(0, 2)])
    write_segment(part, 2, [])  # a freshly rolled, still empty active segment
    assert [r.offset for r in iter_partition(part)] == [0, 1]


def test_reads_batch_by_batch_not_whole_segments(tmp_path):
    # ~24 MiB segment of 64 KiB-value batches; reading its first records must stay small.
    part = tmp_path / "big-0"
    value = bytes(range(256)) * 256
    template = bytearray(build_batch([(b"k", value, [], T0)] * 6))
    with open(write_segment(part, 0, []), "wb") as f:
        for i in range(64):
            set_base_offset(template, i * 6)
            f.write(template)
    tracemalloc.start()
    try:
        it = iter_partition(part, 6 * 60)  # skipping 60 batches must not read their bodies either
        first = next(it)
        for _ in it:
            pass
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert first.offset == 360 and first.value == value
    assert peak < 4 * 1024 * 1024, peak


# --- torn tails and corruption --------------------------------------------------------------


def test_every_cut_of_the_last_batch_is_a_torn_tail(tmp_path):
    part = tmp_path / "t-0"
    paths = write_partition(part, [[2, 2], [3, 2]], codecs=[CODEC_NONE, CODEC_ZSTD])
    full = paths[-1].read_bytes()
    last_start = len(make_batch(4, 3))
    for cut in range(last_start + 1, len(full)):
        paths[-1].write_bytes(full[:cut])
        torn = []
        assert [r.offset for r in iter_partition(part, on_torn_tail=torn.append)] == list(range(7))
        assert len(torn) == 1, cut
        t = torn[0]
        assert (t.file, t.position, t.length) == (paths[-1], last_start, cut - last_start)
        assert t.offset == 7
        assert "torn tail (recoverable by the broker)" in t.describe()
        result = verify_partition(part)
        assert result.problem.kind == TORN_TAIL and result.recoverable
        assert (result.problem.position, result.problem.offset) == (last_start, 7)
        assert partition_stats(part).torn_tail == t


def test_zero_filled_tail_is_torn(tmp_path):
    part = tmp_path / "t-0"
    (path,) = write_partition(part, [[2, 2]])
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"\x00" * 5000)
    torn = []
    assert [r.offset for r in iter_partition(part, on_torn_tail=torn.append)] == [0, 1, 2, 3]
    assert (torn[0].position, torn[0].length, torn[0].offset) == (size, 5000, 4)
    assert "zero bytes" in torn[0].reason


def test_truncated_batch_in_a_middle_segment_is_corruption(tmp_path):
    part = tmp_path / "t-0"
    paths = write_partition(part, [[2, 2], [3]])
    data = paths[0].read_bytes()
    paths[0].write_bytes(data[:-5])
    with pytest.raises(SegmentCorruptError) as info:
        list(iter_partition(part))
    err = info.value
    assert (err.file, err.position, err.offset) == (paths[0], len(make_batch(0, 2)), 2)
    assert "not the last" in err.reason


@pytest.mark.parametrize("codec", CODECS)
def test_flipped_byte_in_the_middle_names_file_position_offset(tmp_path, codec):
    part = tmp_path / "t-0"
    paths = write_partition(part, [[2, 3, 2], [4]], codecs=[codec])
    data = bytearray(paths[0].read_bytes())
    pos = len(make_batch(0, 2, codec=codec))
    data[pos + HEADER_SIZE + 3] ^= 0x10  # inside the second batch's records
    paths[0].write_bytes(data)
    seen = []
    with pytest.raises(SegmentCorruptError) as info:
        for r in iter_partition(part):
            seen.append(r.offset)
    assert seen == [0, 1]  # everything before the damage was delivered
    err = info.value
    assert isinstance(err, CorruptBatchError)
    assert (err.file, err.position, err.offset) == (paths[0], pos, 2)
    assert "CRC-32C mismatch" in err.reason
    assert str(paths[0]) in str(err) and f"position {pos}" in str(err) and "offset 2" in str(err)
    result = verify_partition(part)
    assert result.problem.kind == CORRUPT
    assert (result.problem.file, result.problem.position, result.problem.offset) == (paths[0], pos, 2)
    assert (result.batches, result.records) == (1, 2)


def test_bad_magic_and_impossible_length_are_corruption_even_at_the_end(tmp_path):
    part = tmp_path / "t-0"
    (path,) = write_partition(part, [[1, 1]])
    good = path.read_bytes()
    first = len(make_batch(0, 1))
    bad_magic = bytearray(good)
    bad_magic[first + 16] = 1
    short_len = bytearray(good)
    struct.pack_into(">i", short_len, first + 8, 10)
    for data, reason in ((bad_magic, "magic 1"), (short_len, "smaller than a batch header")):
        path.write_bytes(data)
        with pytest.raises(SegmentCorruptError, match=reason) as info:
            list(iter_partition(part))
        assert info.value.position == first


def _with_body(raw: bytearray, body: bytes) -> bytearray:
    out = bytearray(raw[:HEADER_SIZE]) + body
    struct.pack_into(">i", out, 8, len(out) - 12)
    struct.pack_into(">I", out, 17, compute_crc(out))
    return out


def test_valid_crc_undecodable_records_is_corruption(tmp_path):
    # Damage that happened before the CRC was computed: only decoding finds it.
    part = tmp_path / "t-0"
    bad = _with_body(make_batch(1, 1), encode_record(0, 0, b"k", b"v")[:-2])
    write_segment(part, 0, [make_batch(0, 1), bad])
    with pytest.raises(SegmentCorruptError, match="records undecodable") as info:
        list(iter_partition(part))
    assert info.value.offset == 1
    assert verify_partition(part).problem.kind == CORRUPT


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    layout=st.lists(st.lists(st.integers(1, 5), min_size=0, max_size=4), min_size=1, max_size=4),
    cut=st.integers(0, 10_000),
    start=st.integers(0, 60),
)
def test_replay_matches_a_list_model_after_a_crash(tmp_path_factory, layout, cut, start):
    """Cut the last segment at a random byte (a crash mid-append): replay yields exactly the
    records of the batches that survived whole, from `start` on."""
    part = tmp_path_factory.mktemp("model") / "m-1"
    paths = write_partition(part, layout)
    last = paths[-1]
    data = last.read_bytes()
    cut = cut % (len(data) + 1)
    last.write_bytes(data[:cut])
    survived = sum(n for sizes in layout[:-1] for n in sizes)
    # Whole batches of the last segment that fit before the cut (sizes vary with the codec).
    pos = 0
    offset = survived
    k = sum(len(s) for s in layout[:-1])
    for n in layout[-1]:
        size = len(make_batch(offset, n, codec=CODECS[k % len(CODECS)]))
        if pos + size > cut:
            break
        pos += size
        offset += n
        k += 1
    torn = []
    got = [r.offset for r in iter_partition(part, start, on_torn_tail=torn.append)]
    assert got == list(range(start, offset))
    assert (len(torn) == 1) == (pos != cut)
    result = verify_partition(part)
    assert result.ok == (pos == cut)
    assert result.records == offset


# --- data directories -----------------------------------------------------------------------


def test_iter_data_dir_with_filters(tmp_path):
    write_partition(tmp_path / "a.b-c-1", [[2]])
    write_partition(tmp_path / "a.b-c-0", [[1], [2]])
    write_partition(tmp_path / "z-0", [[1]])
    write_partition(tmp_path / "z-0.abc-delete", [[9]])
    got = [(r.topic, r.partition, r.offset) for r in iter_data_dir(tmp_path)]
    assert got == [("a.b-c", 0, 0), ("a.b-c", 0, 1), ("a.b-c", 0, 2), ("a.b-c", 1, 0), ("a.b-c", 1, 1), ("z", 0, 0)]
    assert [(r.topic, r.partition) for r in iter_data_dir(tmp_path, topics={"z"})] == [("z", 0)]
    assert {(r.topic, r.partition) for r in iter_data_dir(tmp_path, partitions=[1])} == {("a.b-c", 1)}
    assert [r.offset for r in iter_data_dir(tmp_path, topics=["a.b-c"], partitions=[0], from_offset=2)] == [2]


# --- stats ----------------------------------------------------------------------------------


def test_partition_stats(tmp_path):
    part = tmp_path / "t-2"
    paths = write_partition(part, [[3, 1], [2]])
    write_segment(part, 6, [])
    marker = make_batch(6, 1, control=True, transactional=True, producer_id=1, producer_epoch=0, ts=T0 + 100)
    with open(part / f"{6:020d}.log", "ab") as f:
        f.write(marker)
    s = partition_stats(part)
    assert (s.topic, s.partition, s.torn_tail) == ("t", 2, None)
    assert [(x.name, x.base_offset, x.size) for x in s.segments] == [
        (p.name, int(p.stem), p.stat().st_size) for p in paths
    ] + [(f"{6:020d}.log", 6, len(marker))]
    assert [(x.batches, x.records, x.first_offset, x.last_offset) for x in s.segments] == [
        (2, 4, 0, 3),
        (1, 2, 4, 5),
        (1, 0, 6, 6),
    ]
    assert [(x.min_timestamp, x.max_timestamp) for x in s.segments] == [
        (T0, T0 + 3),
        (T0 + 4, T0 + 5),
        (T0 + 100, T0 + 100),
    ]
    assert (s.total_size, s.batches, s.records, s.first_offset, s.last_offset) == (
        sum(x.size for x in s.segments),
        4,
        6,
        0,
        6,
    )
    assert (s.min_timestamp, s.max_timestamp) == (T0, T0 + 100)


def test_stats_of_empty_partition(tmp_path):
    (tmp_path / "e-0").mkdir()
    s = partition_stats(tmp_path / "e-0")
    assert (s.segments, s.total_size, s.first_offset, s.min_timestamp) == ((), 0, None, None)


# --- verify ---------------------------------------------------------------------------------


def test_verify_clean(tmp_path):
    write_partition(tmp_path / "t-0", [[3, 1, 4], [1, 5], []])
    write_partition(tmp_path / "u-1", [[2]])
    result = verify_data_dir(tmp_path)
    assert result.ok and result.problems == []
    t0, u1 = result.partitions
    assert (t0.segments, t0.batches, t0.records, t0.first_offset, t0.last_offset, t0.warnings) == (3, 5, 14, 0, 13, [])
    assert t0.bytes == sum(p.stat().st_size for p in (tmp_path / "t-0").glob("*.log"))
    assert (u1.topic, u1.partition, u1.records) == ("u", 1, 2)


def test_verify_gap_is_a_warning(tmp_path):
    part = tmp_path / "t-0"
    write_segment(part, 0, [make_batch(0, 2), make_batch(5, 1)])
    write_segment(part, 10, [make_batch(10, 1)])
    result = verify_partition(part)
    assert result.ok
    assert [(w.kind, w.offset, w.position) for w in result.warnings] == [
        (GAP, 5, len(make_batch(0, 2))),
        (GAP, 10, 0),
    ]
    assert "offsets 2..4 are missing" in result.warnings[0].message


def test_verify_overlapping_batches(tmp_path):
    part = tmp_path / "t-0"
    path = write_segment(part, 0, [make_batch(0, 3), make_batch(2, 2)])
    result = verify_partition(part)
    assert result.problem.kind == OFFSETS
    assert (result.problem.file, result.problem.position, result.problem.offset) == (path, len(make_batch(0, 3)), 2)
    assert "go back" in result.problem.message


def test_verify_overlapping_segments(tmp_path):
    part = tmp_path / "t-0"
    write_segment(part, 0, [make_batch(0, 3)])
    second = write_segment(part, 2, [make_batch(2, 2)])
    result = verify_partition(part)
    assert result.problem.kind == OFFSETS
    assert (result.problem.file, result.problem.position, result.problem.offset) == (second, 0, 2)


def test_verify_batch_below_its_segment_base(tmp_path):
    part = tmp_path / "t-0"
    write_segment(part, 5, [make_batch(3, 2)])
    assert "below the segment's base offset" in verify_partition(part).problem.message


def test_verify_data_dir_reports_each_partition(tmp_path):
    write_partition(tmp_path / "a-0", [[1]])
    (p,) = write_partition(tmp_path / "b-0", [[1, 1]])
    with open(p, "ab") as f:
        f.write(b"\x00\x00\x00")
    result = verify_data_dir(tmp_path)
    assert not result.ok
    assert [r.ok for r in result.partitions] == [True, False]
    assert result.problems[0].kind == TORN_TAIL
