"""Coverage-guided fuzzing (atheris, libFuzzer) of the decoders that see untrusted bytes first.

    python tests/atheris_harness.py TARGET [libFuzzer flags, e.g. -runs=20000 -max_total_time=60]

Targets:
  frames   client.wire.FrameDecoder fed the input in random chunks, then every frame through the
           broker's request decoding (header, bounds check, kio). Allowed outcomes: a frame, a
           FrameTooLarge, InvalidRequest, UnsupportedVersion. Anything else raised, or an abort in
           kio's native reader, is a finding.
  batches  storage's produce checks (split_batches, validate_batch, check_records framing and full)
           and the record decoder. Allowed: InvalidBatchError and its subclasses.
  responses  the client's response decoding for every API and version kio ships.
libFuzzer writes a crashing input to crash-<sha1> in the working directory.
"""
from __future__ import annotations

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import atheris  # noqa: E402
from crc32c import crc32c  # noqa: E402

# Third-party modules are imported first so that only ringlog's own code is instrumented
# (instrumenting kio and its hundreds of schema modules would take longer than the run).
import attrs  # noqa: E402,F401
import cramjam  # noqa: E402,F401
import kio.index  # noqa: E402,F401
import kio.serial  # noqa: E402,F401

with atheris.instrument_imports():
    from ringlog.client.wire import FrameDecoder, FrameTooLarge, InvalidRequest, UnsupportedVersion  # noqa: E402
    from ringlog.client.wire.bounds import check_body  # noqa: E402
    from ringlog.client.wire.protocol import decode_request, decode_response, response_class  # noqa: E402
    from ringlog.storage.batch import split_batches, validate_batch  # noqa: E402
    from ringlog.storage.errors import InvalidBatchError  # noqa: E402
    from ringlog.storage.records import check_records, decode_records  # noqa: E402

_WIRE_OK = (FrameTooLarge, InvalidRequest, UnsupportedVersion)
_RESPONSES = [(k, v) for k in range(0, 100) for v in range(0, 20) if response_class(k, v) is not None]


def frames(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    decoder = FrameDecoder(1 << 20)
    while fdp.remaining_bytes():
        chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64))
        try:
            decoder.feed(chunk)
            frame = decoder.next_frame()
            while frame is not None:
                try:
                    decode_request(frame)
                except (InvalidRequest, UnsupportedVersion):
                    pass
                frame = decoder.next_frame()
        except FrameTooLarge:
            return


def batches(data: bytes) -> None:
    # Make the framing and the CRC right most of the time, so inputs reach the record checks
    # instead of stopping at the CRC: the first byte chooses.
    buf = bytearray(data[1:])
    if data and data[0] & 1 and len(buf) >= 61:
        struct.pack_into(">i", buf, 8, len(buf) - 12)
        buf[16] = 2
    if data and data[0] & 2 and len(buf) >= 61:
        struct.pack_into(">I", buf, 17, crc32c(bytes(buf[21:len(buf)])))
    try:
        for _, view in split_batches(buf):
            header = validate_batch(view, max_size=1 << 20, from_client=True)
            check_records(view, header, full=False)
            check_records(view, header, full=True)
            decode_records(view, header)
    except InvalidBatchError:
        pass


def responses(data: bytes) -> None:
    if len(data) < 2:
        return
    key, version = _RESPONSES[int.from_bytes(data[:2], "big") % len(_RESPONSES)]
    try:
        decode_response(data[2:], key, version)
    except (InvalidRequest, UnsupportedVersion):
        pass


TARGETS = {"frames": frames, "batches": batches, "responses": responses}

if __name__ == "__main__":
    target = TARGETS[sys.argv[1]]
    atheris.instrument_func(target)
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()
