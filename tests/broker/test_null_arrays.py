"""Null where the schema has no null: for every request the broker serves, each non-nullable
array field sent as null (-1, or compact 0) is refused before a handler sees it. Kafka's parsers
refuse such a request ("non-nullable field was serialized as null"); ringlog closes the
connection with a warning, never a traceback, and keeps serving."""
from __future__ import annotations

import dataclasses
import logging
import random
import socket
import types
import typing

from ringlog.broker.config import BrokerConfig
from ringlog.broker.testing import BrokerThread
from ringlog.client.wire import encode_request, request_class
from tests.fuzzkit import broker_request_classes, random_entity


def _non_nullable_arrays(cls: type) -> list[str]:
    out = []
    for field in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[field.name]
        nullable = typing.get_origin(tp) in (types.UnionType, typing.Union)
        if typing.get_origin(tp) is tuple and not nullable and field.metadata.get("tag") is None:
            out.append(field.name)
    return out


def _closed_without_answer(host: str, port: int, frame: bytes) -> bool:
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(frame)
        return s.recv(65536) == b""


def test_null_for_every_non_nullable_top_level_array(tmp_path, caplog) -> None:
    rnd = random.Random(5)
    cases = [(cls, name) for cls in broker_request_classes() for name in _non_nullable_arrays(cls)]
    assert len(cases) > 90  # every API with arrays, in every version served (93 today)
    caplog.set_level(logging.WARNING)
    with BrokerThread(BrokerConfig(listen_port=0, data_dir=str(tmp_path / "d"))) as b:
        for cls, name in cases:
            entity = dataclasses.replace(random_entity(cls, rnd), **{name: None})
            frame = encode_request(entity, 7, "nulls")
            assert _closed_without_answer(b.host, b.port, frame), f"{cls.__module__} {name}"
        # still serving
        av = request_class(18, 3)(client_software_name="x", client_software_version="1")
        with socket.create_connection((b.host, b.port), timeout=10) as s:
            s.sendall(encode_request(av, 1, "after"))
            assert len(s.recv(65536)) > 10
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, errors[:3]
    refused = [r for r in caplog.records if "is not nullable but was null" in r.getMessage()]
    assert len(refused) == len(cases)
