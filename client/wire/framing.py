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


# Reads smaller than this are appended to a bytearray tail instead of kept as chunks of their
# own: a peer that trickles a frame in tiny reads must not cost an object per read (a 100 MiB
# frame in 1-byte reads would otherwise hold 100M bytes objects, about 40 times its size).
_SMALL_READ = 16384
# A bytearray chunk that is being read from while it grows is compacted once this much of it is
# consumed (and that is at least half of it), so a connection that never drains its buffer
# completely (pipelined small requests) does not grow it without bound.
_COMPACT_AT = 65536


class FrameDecoder:
    """Incremental frame splitter.

    `feed()` takes received bytes; `next_frame()` returns one whole frame (without its size
    prefix) or None when more bytes are needed. Raises FrameTooLarge from either call once a size
    prefix over `max_frame_size` is seen; the connection should then be closed.

    Large reads are kept as they arrived, in a list, and a frame is cut out of them with one copy
    when it is complete: a 1 MiB fetch response arrives in several reads, and appending each to
    one growing buffer, then slicing the frame out of it, copied every byte three times. Small
    reads are gathered in a bytearray (see _SMALL_READ).
    """

    __slots__ = ("_chunks", "_off", "_have", "max_frame_size", "_need")

    def __init__(self, max_frame_size: int = 100 * 1024 * 1024) -> None:
        # received, not yet returned, in order; the first from _off on. bytes are reads kept as
        # they came; a bytearray is ours (small reads gathered), only ever the last one grows.
        self._chunks: list[bytes | bytearray] = []
        self._off = 0
        self._have = 0  # bytes in _chunks past _off
        self.max_frame_size = max_frame_size
        self._need: int | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return self._have

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        n = data.nbytes if type(data) is memoryview else len(data)
        if not n:
            return
        chunks = self._chunks
        last = chunks[-1] if chunks else None
        if n < _SMALL_READ and last is not None and (type(last) is bytearray or len(last) < _SMALL_READ):
            # a small read after a small one: gather them (the first time into a bytearray of ours)
            if type(last) is bytes:
                chunks[-1] = last = bytearray(last)
            last += data
        else:
            chunks.append(data if type(data) is bytes else bytes(data))  # the caller may reuse its buffer
        self._have += n
        self._check_prefix()

    def _take(self, n: int, skip: int = 0) -> bytes:
        """Remove the next n buffered bytes (n <= self._have) and return them without the first
        `skip` (a frame without its size prefix, cut out with one copy)."""
        chunks = self._chunks
        first = chunks[0]
        off = self._off
        end = off + n
        if skip and off + skip > len(first):  # the prefix spans chunks: rare
            self._take(skip)
            return self._take(n - skip)
        if end <= len(first):  # the usual case: one chunk holds it all
            start = off + skip
            if type(first) is bytes:
                out = first if (start == 0 and end == len(first)) else first[start:end]
            else:
                with memoryview(first) as view:
                    out = bytes(view[start:end])
            if end == len(first):
                del chunks[0]
                self._off = 0
            elif type(first) is bytearray and end >= _COMPACT_AT and 2 * end >= len(first):
                del first[:end]
                self._off = 0
            else:
                self._off = end
        else:
            parts = [memoryview(first)[off + skip :]]
            left = n - (len(first) - off)
            i = 1
            while left > len(chunks[i]):
                parts.append(chunks[i])
                left -= len(chunks[i])
                i += 1
            last = chunks[i]
            if left == len(last):
                parts.append(last)
                del chunks[: i + 1]
                self._off = 0
            else:
                parts.append(memoryview(last)[:left])
                del chunks[:i]
                self._off = left
            out = b"".join(parts)
            for v in parts:  # a bytearray with a live view cannot grow: release them now
                if type(v) is memoryview:
                    v.release()
        self._have -= n
        return out

    def _check_prefix(self) -> None:
        if self._need is None and self._have >= 4:
            first = self._chunks[0]
            if len(first) - self._off >= 4:
                (size,) = _SIZE.unpack_from(first, self._off)
            else:  # the prefix spans chunks: rare; look at four bytes without consuming them
                head = bytearray(first[self._off :])
                for c in self._chunks[1:]:
                    head += c[: 4 - len(head)]
                    if len(head) == 4:
                        break
                (size,) = _SIZE.unpack(head)
            if size < 0 or size > self.max_frame_size:
                raise FrameTooLarge(size, self.max_frame_size)
            self._need = size

    def next_frame(self) -> bytes | None:
        self._check_prefix()
        need = self._need
        if need is None or self._have < 4 + need:
            return None
        out = self._take(4 + need, skip=4)
        self._need = None
        self._check_prefix()
        return out

    def bytes_wanted(self) -> int:
        """How many more bytes complete the frame in progress (4 when between frames)."""
        if self._need is None:
            return max(1, 4 - self._have)
        return 4 + self._need - self._have
