"""The bounds check that runs before kio decodes a body (client/wire/bounds.py).

kio's native reader aborts the whole process when a count asks it for an impossible allocation,
so the check must (1) accept exactly what kio encodes, for every class kio ships, and (2) leave
nothing through that kio cannot decode without aborting. (2) runs in a subprocess, where an abort
is a non-zero exit instead of the end of the test run; the same subprocess without the check is
run first, to show that the mutations do reach the abort (otherwise the test could not fail).
"""
from __future__ import annotations

import os
import random
import struct
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringlog.client.wire import InvalidRequest, decode_request, decode_response, encode_body, encode_request, request_class
from ringlog.client.wire.bounds import BodyError, check_body
from ringlog.client.wire.protocol import _reader
from tests.fuzzkit import kio_classes, random_entity

CLASSES = kio_classes()
SLOW = os.environ.get("RINGLOG_SLOW") == "1"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@settings(max_examples=300 if not SLOW else 3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(CLASSES), st.randoms(use_true_random=False))
def test_accepts_exactly_what_kio_encodes(cls, rnd) -> None:
    body = encode_body(random_entity(cls, rnd))
    _entity, size = _reader(cls)(body, 0)
    assert check_body(cls, body, 0) == size == len(body)


def test_every_class_walks_its_own_encoding() -> None:
    rnd = random.Random(7)
    for cls in CLASSES:
        for _ in range(3):
            body = encode_body(random_entity(cls, rnd))
            assert check_body(cls, body, 0) == len(body), cls


def _metadata_v12(topics_count: bytes) -> bytes:
    # header v2: api key 3, version 12, correlation 1, null client id, no tagged fields
    return struct.pack(">hhih", 3, 12, 1, -1) + b"\x00" + topics_count + b"\x00\x00\x00"


def test_the_24_byte_reproducer_is_refused() -> None:
    frame = _metadata_v12(b"\xff\xff\xff\xff\x0f")
    with pytest.raises(InvalidRequest, match="4294967294 elements cannot fit"):
        decode_request(frame)


def test_null_for_a_non_nullable_array_is_refused() -> None:
    dg = request_class(42, 2)  # DeleteGroups v2: groups_names is a non-nullable compact array
    body = encode_request(dg(groups_names=("g",)), 5, "t")[4:]
    i = body.rindex(b"\x02g")  # compact count 1 (2), then the compact string "g"
    null = body[:i] + b"\x00" + body[i + 2:]  # compact 0 = null
    with pytest.raises(InvalidRequest, match="groups_names is not nullable but was null"):
        decode_request(null)
    legacy = request_class(42, 1)  # v1: legacy i32 count
    body = encode_request(legacy(groups_names=()), 5, "t")[4:]
    with pytest.raises(InvalidRequest, match="not nullable"):
        decode_request(body[:-4] + b"\xff\xff\xff\xff")


def test_null_where_the_schema_allows_it_is_accepted() -> None:
    md = request_class(3, 12)
    header, entity = decode_request(encode_request(md(topics=None, allow_auto_topic_creation=False,
                                                      include_topic_authorized_operations=False), 1, "t")[4:])
    assert entity.topics is None


def test_a_string_longer_than_the_body_is_refused() -> None:
    dg = request_class(42, 1)
    body = encode_request(dg(groups_names=("abc",)), 5, "t")[4:]
    i = body.rindex(b"\x00\x03abc")
    with pytest.raises(InvalidRequest, match="run past the end"):
        decode_request(body[:i] + b"\x7f\xff" + body[i + 2:])


def test_responses_are_checked_too() -> None:
    # a broker answering Metadata v12 with 2**32-2 brokers must not abort the client
    data = struct.pack(">i", 1) + b"\x00" + struct.pack(">i", 0) + b"\xff\xff\xff\xff\x0f" + b"\x00" * 8
    with pytest.raises(InvalidRequest, match="cannot fit"):
        decode_response(data, 3, 12)


def test_tagged_field_sizes_are_bounded() -> None:
    av = request_class(18, 3)
    body = encode_body(av(client_software_name="a", client_software_version="b"))
    assert body[-1] == 0  # empty tagged-field section
    # one tagged field (tag 0) that claims 127 bytes where none follow
    with pytest.raises(BodyError, match="tagged field 0 of 127 bytes runs past the end"):
        check_body(av, body[:-1] + b"\x01\x00\x7f", 0)


# ApiVersions v3 response found by tests/atheris_harness.py (responses): its tagged field 2
# (finalized_features) declares 11 bytes and holds 8. kio reads the field and then takes the
# next three bytes as a tag header, one that ends up sizing an allocation of ~130 GB.
_SHORT_TAG = bytes.fromhex(
    "00000000000002020b02020000000000000002020b02020b00000000000202c8ffffff40010000"
    "0000ffffffffffffff010278000000000000000202010002010025")

_DECODE_SHORT_TAG = r"""
import sys
sys.path.insert(0, {root!r})
from ringlog.client.wire.protocol import decode_response, response_class, _reader, InvalidRequest
data = bytes.fromhex({hex!r})
if sys.argv[1] == "kio":
    _reader(response_class(18, 3))(data, 4)
else:
    try:
        decode_response(data, 18, 3)
    except InvalidRequest as exc:
        print(exc)
"""


def test_a_known_tagged_field_must_fill_its_size() -> None:
    script = _DECODE_SHORT_TAG.format(root=ROOT, hex=_SHORT_TAG.hex())
    # kio alone on these bytes aborts the process (so the check below can fail)
    raw = subprocess.run([sys.executable, "-c", script, "kio"], capture_output=True, text=True, timeout=60)
    assert raw.returncode != 0
    checked = subprocess.run([sys.executable, "-c", script, "checked"], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert "tagged field 2 does not fill its 11 bytes" in checked.stdout


_MUTATE = r"""
import random, sys
sys.path.insert(0, {root!r})
from tests.fuzzkit import kio_classes, random_entity, MUTATIONS
from ringlog.client.wire.protocol import encode_body, _reader
from ringlog.client.wire.bounds import check_body, BodyError
use_check, n, seed = sys.argv[1] == "1", int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
classes = kio_classes()
for i in range(n):
    cls = rnd.choice(classes)
    body = bytearray(encode_body(random_entity(cls, rnd)))
    for _ in range(rnd.randint(1, 3)):
        body = rnd.choice(MUTATIONS)[1](body, rnd)
    body = bytes(body)
    if use_check:
        try:
            check_body(cls, body, 0)
        except BodyError:
            continue
    try:
        _reader(cls)(body, 0)
    except Exception:
        pass
print("survived", n)
"""


def _run_mutations(use_check: bool, n: int, seed: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _MUTATE.format(root=ROOT), "1" if use_check else "0", str(n), str(seed)],
                          capture_output=True, text=True, timeout=600)


def test_mutated_bodies_never_reach_a_kio_abort() -> None:
    seed = 20261201
    unchecked = _run_mutations(False, 20_000, seed)
    assert unchecked.returncode != 0, "the mutations no longer reach kio's abort: this test would not notice one"
    n = 200_000 if SLOW else 30_000
    checked = _run_mutations(True, n, seed)
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert f"survived {n}" in checked.stdout


def test_the_compiled_walk_agrees_with_the_reference_on_mutated_bodies() -> None:
    from ringlog.client.wire.bounds import check_body_reference
    from tests.fuzzkit import MUTATIONS

    rnd = random.Random(3)
    for _ in range(20_000 if not SLOW else 200_000):
        cls = rnd.choice(CLASSES)
        body = bytearray(encode_body(random_entity(cls, rnd)))
        for _ in range(rnd.randint(0, 3)):
            body = rnd.choice(MUTATIONS)[1](body, rnd)
        outcomes = []
        for walk in (check_body, check_body_reference):
            try:
                outcomes.append(walk(cls, bytes(body), 0))
            except BodyError:
                outcomes.append("refused")
        assert outcomes[0] == outcomes[1], (cls, bytes(body))
