"""Kafka frame boundaries: every request and response is a 4-byte big-endian size, then that many bytes.

Sans-IO: feed bytes in, take whole frames out. The size prefix is checked against the limit as soon
as its four bytes arrive, before any buffer for the frame is grown, so a hostile prefix cannot make
the reader allocate.
"""
from __future__ import annotations

import struct

_SIZE = struct.Struct(">i")


class FrameTooLarge(Exception):
    """A size prefix larger than the configured limit (or negative)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


def frame(payload: bytes | bytearray) -> bytes:
    """Prefix `payload` with its 4-byte size."""
    return _SIZE.pack(len(payload)) + payload


class FrameDecoder:
    """Incremental frame splitter.

    `feed()` appends received bytes; `next_frame()` returns one whole frame (without its size
    prefix) or None when more bytes are needed. Raises FrameTooLarge from either call once a size
    prefix over `max_frame_size` is seen; the connection should then be closed.
    """

    __slots__ = ("_buf", "_pos", "max_frame_size", "_need")

    def __init__(self, max_frame_size: int = 100 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.max_frame_size = max_frame_size
        self._need: int | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        # Compact before growing so a long-lived connection does not keep consumed bytes.
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif self._pos > 65536 and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data
        self._check_prefix()

    def _check_prefix(self) -> None:
        if self._need is None and len(self._buf) - self._pos >= 4:
            (size,) = _SIZE.unpack_from(self._buf, self._pos)
            if size < 0 or size > self.max_frame_size:
                raise FrameTooLarge(size, self.max_frame_size)
            self._need = size

    def next_frame(self) -> bytes | None:
        self._check_prefix()
        if self._need is None:
            return None
        start = self._pos + 4
        end = start + self._need
        if end > len(self._buf):
            return None
        out = bytes(self._buf[start:end])
        self._pos = end
        self._need = None
        self._check_prefix()
        return out

    def bytes_wanted(self) -> int:
        """How many more bytes complete the frame in progress (4 when between frames)."""
        if self._need is None:
            return max(1, 4 - (len(self._buf) - self._pos))
        return self._pos + 4 + self._need - len(self._buf)
