"""Typed storage errors.

Storage raises narrow exceptions; the broker converts each to a Kafka error code at the handler
boundary (`kafka_error` names the code a broker should answer with).
"""
from __future__ import annotations


class StorageError(Exception):
    """Base class of every error the storage package raises on purpose."""

    kafka_error = "KAFKA_STORAGE_ERROR"


class InvalidBatchError(StorageError):
    """A batch from a client breaks a rule of the format; nothing of it was written."""

    kafka_error = "INVALID_RECORD"


class CorruptBatchError(InvalidBatchError):
    """The bytes of a batch are damaged: bad CRC, impossible lengths, truncation."""

    kafka_error = "CORRUPT_MESSAGE"


class DecompressedTooLargeError(CorruptBatchError):
    """A compressed records block inflates past the size limit the reader was given.

    Refused before the inflated bytes exist: decompression stops at the limit. It is a
    CorruptBatchError so every reader that copes with an undecodable batch copes with this one,
    but a client hears INVALID_RECORD: the bytes may be intact, the broker just will not hold them
    (and CORRUPT_MESSAGE is retriable for the Java client, which would resend the same batch).
    """

    kafka_error = "INVALID_RECORD"


class UnsupportedMagicError(InvalidBatchError):
    """Only RecordBatch v2 (magic 2) is stored."""

    kafka_error = "UNSUPPORTED_FOR_MESSAGE_FORMAT"


class BatchTooLargeError(InvalidBatchError):
    """A batch is larger than the log's max.message.bytes."""

    kafka_error = "MESSAGE_TOO_LARGE"


class OffsetOutOfRangeError(StorageError):
    """A read asked for an offset below the log start or above the log end."""

    kafka_error = "OFFSET_OUT_OF_RANGE"


class StorageIOError(StorageError):
    """An operating-system error (disk full, I/O error) while writing or flushing.

    The log has rolled back to its last consistent state: no partial batch is visible, and the
    next append tries again. `errno` is the operating system's error number when one is known
    (EMFILE: the process ran out of file descriptors).
    """

    kafka_error = "KAFKA_STORAGE_ERROR"

    def __init__(self, message: str = "", *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno
