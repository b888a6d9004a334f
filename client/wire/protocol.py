"""Kafka request/response headers and kio glue, shared by the broker and the client. Sans-IO.

Request header (v1; v2 adds tagged fields after client_id, used by flexible API versions)::

    api_key i16 | api_version i16 | correlation_id i32 | client_id nullable string (i16 length)
    [| tagged fields]                                        (v2 only)

Response header: correlation_id i32, plus an empty tagged-field section (one 0 byte) for flexible
versions (v1) -- except ApiVersions, whose response header is always v0 so that a client that sent
an unsupported version can still read the answer.

Bodies are kio entities; kio (pinned) generates them from Kafka's message JSON for every version.
"""
from __future__ import annotations

import functools
import io
import struct
from typing import Any

import attrs
from kio.index import UnknownAPIKey, UnknownEntity, load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer
from kio.serial.errors import SerialError

from .bounds import BodyError, _uvarint, check_body
from .framing import frame

API_VERSIONS_KEY = 18

_HEAD = struct.Struct(">hhi")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


class InvalidRequest(Exception):
    """The bytes of a request cannot be decoded (truncated, malformed, unknown tagged field)."""


class UnsupportedVersion(Exception):
    """kio has no entity for this API key and version."""

    def __init__(self, api_key: int, api_version: int) -> None:
        super().__init__(f"API key {api_key} version {api_version} is not supported")
        self.api_key = api_key
        self.api_version = api_version


@attrs.frozen(slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    # bytes the header occupies in the frame; the body starts here
    header_size: int
    flexible: bool


# --- schema look-ups (cached: they import modules and build readers) -------------------------


@functools.cache
def request_class(api_key: int, api_version: int) -> type | None:
    try:
        return load_request_schema(api_key, api_version)
    except (UnknownAPIKey, UnknownEntity):
        return None


@functools.cache
def response_class(api_key: int, api_version: int) -> type | None:
    try:
        return load_response_schema(api_key, api_version)
    except (UnknownAPIKey, UnknownEntity):
        return None


@functools.cache
def is_flexible(api_key: int, api_version: int) -> bool:
    cls = request_class(api_key, api_version)
    if cls is not None:
        return bool(cls.__flexible__)
    # Versions kio does not know: ApiVersions became flexible at v3; assume so for later ones.
    return api_key == API_VERSIONS_KEY and api_version >= 3


@functools.cache
def _reader(cls: type):
    return entity_reader(cls)


@functools.cache
def _writer(cls: type):
    return entity_writer(cls)


# --- varints used by the header's tagged fields --------------------------------------------


def read_unsigned_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    try:
        return _uvarint(buf, pos, len(buf))
    except BodyError as exc:
        raise InvalidRequest(f"{exc} of the frame") from None


def write_unsigned_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# --- broker side ------------------------------------------------------------------------------


def parse_request_header(data: bytes | memoryview) -> RequestHeader:
    """Decode the request header at the start of a frame (without its size prefix)."""
    if len(data) < 10:
        raise InvalidRequest(f"request of {len(data)} bytes is shorter than a request header")
    api_key, api_version, correlation_id = _HEAD.unpack_from(data, 0)
    (n,) = _I16.unpack_from(data, 8)
    pos = 10
    client_id: str | None = None
    if n >= 0:
        if pos + n > len(data):
            raise InvalidRequest("client_id runs past the end of the frame")
        try:
            client_id = bytes(data[pos : pos + n]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest("client_id is not UTF-8") from exc
        pos += n
    elif n != -1:
        raise InvalidRequest(f"client_id length {n}")
    flexible = is_flexible(api_key, api_version)
    if flexible:
        # Skip any tagged fields the client put in the header; none are defined that we use.
        count, pos = read_unsigned_varint(data, pos)
        for _ in range(count):
            _tag, pos = read_unsigned_varint(data, pos)
            size, pos = read_unsigned_varint(data, pos)
            pos += size
            if pos > len(data):
                raise InvalidRequest("header tagged field runs past the end of the frame")
    return RequestHeader(api_key, api_version, correlation_id, client_id, pos, flexible)


def decode_request_body(header: RequestHeader, data: bytes | memoryview) -> Any:
    """Decode the body of a request whose header was parsed from the same frame."""
    cls = request_class(header.api_key, header.api_version)
    if cls is None:
        raise UnsupportedVersion(header.api_key, header.api_version)
    try:
        # Every length is checked against the bytes left before kio allocates from it.
        check_body(cls, data, header.header_size)
        entity, size = _reader(cls)(data, header.header_size)
    except BodyError as exc:
        raise InvalidRequest(f"malformed {cls.__name__} v{header.api_version}: {exc}") from exc
    except (SerialError, KeyError, ValueError, TypeError, UnicodeDecodeError, OverflowError) as exc:
        # kio raises KeyError for unknown tagged fields, its own errors for underflow and the like.
        raise InvalidRequest(f"cannot decode {cls.__name__} v{header.api_version}: {exc!r}") from exc
    # Bytes after the body are ignored, as Kafka's own parser does: librdkafka 2.x sends three
    # extra bytes after a Metadata v12 request that asks for all topics.
    return entity


def decode_request(data: bytes | memoryview) -> tuple[RequestHeader, Any]:
    header = parse_request_header(data)
    return header, decode_request_body(header, data)


def response_header_bytes(header: RequestHeader) -> bytes:
    """The response header for a request: correlation id, plus tagged fields when flexible."""
    if header.flexible and header.api_key != API_VERSIONS_KEY:
        return _I32.pack(header.correlation_id) + b"\x00"
    return _I32.pack(header.correlation_id)


def encode_response(header: RequestHeader, response: Any) -> bytes:
    """A whole response frame (size prefix, header, body) for `response`, a kio entity."""
    buf = io.BytesIO()
    buf.write(response_header_bytes(header))
    _writer(type(response))(buf, response)
    return frame(buf.getvalue())


def encode_body(entity: Any) -> bytes:
    buf = io.BytesIO()
    _writer(type(entity))(buf, entity)
    return buf.getvalue()


# --- client side ------------------------------------------------------------------------------


def encode_request(request: Any, correlation_id: int, client_id: str | None = None) -> bytes:
    """A whole request frame for `request`, a kio request entity."""
    api_key = int(request.__api_key__)
    version = int(request.__version__)
    head = bytearray(_HEAD.pack(api_key, version, correlation_id))
    if client_id is None:
        head += _I16.pack(-1)
    else:
        raw = client_id.encode("utf-8")
        head += _I16.pack(len(raw)) + raw
    if request.__flexible__:
        head += b"\x00"
    buf = io.BytesIO()
    buf.write(head)
    _writer(type(request))(buf, request)
    return frame(buf.getvalue())


def decode_response(data: bytes | memoryview, api_key: int, api_version: int) -> tuple[int, Any]:
    """(correlation_id, kio response entity) from a response frame without its size prefix."""
    if len(data) < 4:
        raise InvalidRequest("response shorter than its header")
    (correlation_id,) = _I32.unpack_from(data, 0)
    pos = 4
    cls = response_class(api_key, api_version)
    if cls is None:
        raise UnsupportedVersion(api_key, api_version)
    if cls.__flexible__ and api_key != API_VERSIONS_KEY:
        count, pos = read_unsigned_varint(data, pos)
        for _ in range(count):
            _tag, pos = read_unsigned_varint(data, pos)
            size, pos = read_unsigned_varint(data, pos)
            pos += size
            if pos > len(data):
                raise InvalidRequest("response header tagged field runs past the end of the frame")
    try:
        # A broken or hostile broker must not be able to abort the client either.
        check_body(cls, data, pos)
        entity, _size = _reader(cls)(data, pos)
    except BodyError as exc:
        raise InvalidRequest(f"malformed {cls.__name__} v{api_version}: {exc}") from exc
    except (SerialError, KeyError, ValueError, TypeError, UnicodeDecodeError, OverflowError) as exc:
        raise InvalidRequest(f"cannot decode {cls.__name__} v{api_version}: {exc!r}") from exc
    return correlation_id, entity


__all__ = [
    "ErrorCode",
    "InvalidRequest",
    "RequestHeader",
    "UnsupportedVersion",
    "decode_request",
    "decode_request_body",
    "decode_response",
    "encode_body",
    "encode_request",
    "encode_response",
    "is_flexible",
    "parse_request_header",
    "request_class",
    "response_class",
    "response_header_bytes",
]
