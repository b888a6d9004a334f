"""Sans-IO Kafka protocol layer shared by the broker and the client: framing, headers, kio glue.

No sockets and no trio here: bytes in, frames and entities out.
"""
from .framing import FrameDecoder, FrameTooLarge, frame
from .protocol import (
    ErrorCode,
    InvalidRequest,
    RequestHeader,
    UnsupportedVersion,
    decode_request,
    decode_request_body,
    decode_response,
    encode_body,
    encode_request,
    encode_response,
    is_flexible,
    parse_request_header,
    read_unsigned_varint,
    request_class,
    response_class,
    response_header_bytes,
    write_unsigned_varint,
)

__all__ = [
    "ErrorCode",
    "FrameDecoder",
    "FrameTooLarge",
    "InvalidRequest",
    "RequestHeader",
    "UnsupportedVersion",
    "decode_request",
    "decode_request_body",
    "decode_response",
    "encode_body",
    "encode_request",
    "encode_response",
    "frame",
    "is_flexible",
    "parse_request_header",
    "read_unsigned_varint",
    "request_class",
    "response_class",
    "response_header_bytes",
    "write_unsigned_varint",
]
