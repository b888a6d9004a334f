"""Kafka errors as data.

Handlers answer with error codes; Python exceptions mean a broken connection or a bug. Broker
operations that can fail for a client-visible reason raise `KafkaError(code, message)`, and the
handler turns it into the error code of the partition/topic it concerns. Storage errors carry the
name of the Kafka error they map to (`storage.errors.*.kafka_error`); `error_code_for` converts
any exception to an `ErrorCode`.
"""
from __future__ import annotations

from kio.schema.errors import ErrorCode

from ringlog.storage.errors import StorageError


class KafkaError(Exception):
    """A client-visible failure: `code` goes into the response, `message` into the log/response."""

    def __init__(self, code: ErrorCode, message: str = "") -> None:
        super().__init__(f"{code.name}: {message}" if message else code.name)
        self.code = code
        self.message = message or None


class CloseConnection(Exception):
    """Raised by a handler when the only correct answer is to drop the connection
    (e.g. an error on an acks=0 produce, which has no response to carry the error)."""


def error_code_for(exc: BaseException) -> ErrorCode:
    """The Kafka error code a client should see for `exc`."""
    if isinstance(exc, KafkaError):
        return exc.code
    if isinstance(exc, StorageError):
        try:
            return ErrorCode[exc.kafka_error.lower()]
        except KeyError:
            return ErrorCode.kafka_storage_error
    if isinstance(exc, OSError):
        return ErrorCode.kafka_storage_error
    return ErrorCode.unknown_server_error
