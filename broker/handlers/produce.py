"""Produce (0) v3-9 (v0-2 advertised for librdkafka's feature detection, answered UNSUPPORTED_VERSION).

Per partition: split the records into batches and validate each (framing, CRC-32C, counts, size
limit, client rules: storage.batch.validate_batch; the records inside, inflated first when
compressed, up to message.max.decompressed.bytes), ask the idempotent-producer state, then push
the batches into the partition's ring (broker.partition.Partition.submit). The handler is `sequential`: the connection
reads its next request only after this one's batches are in the rings, so pipelined batches keep
their order, and in "block" backpressure mode a full ring stops the reading. Then it waits for the
group commit (acks 1/all are the same on a single node: written, and fsynced under fsync=always).

acks=0: no response at all; an error closes the connection (the only signal the client gets).

Client quotas (broker.quotas): when a producer_byte_rate is set anywhere, the request's record
bytes are counted against the client's quota as the request is read; over it, the answer
carries throttle_time_ms and the connection reads no further request for that long (acks=0 too).

A partition whose records may take long to check is checked in a worker thread: inflating a
compressed batch takes about a millisecond per MiB, up to the limit, and must not stall the
other connections. What the codec headers say bounds that cost (storage.records.inflate_bound):
batches that inflate to at most 256 KiB, such as the Java client's default 16 KiB batches, stay
on the Trio thread with the uncompressed ones (the framing walk costs nanoseconds a record),
where the hop to a thread would cost more than the check.
"""
from __future__ import annotations

import datetime
import logging
import struct

import trio
from kio.schema.errors import ErrorCode

from ringlog.storage.batch import CODEC_GZIP, CODEC_LZ4, CODEC_NONE, CODEC_SNAPPY, CODEC_ZSTD, split_batches, validate_batch
from ringlog.storage.compaction import records_have_keys
from ringlog.storage.log import INT64_MAX
from ringlog.storage.records import DEFAULT_MAX_DECOMPRESSED, build_batch, check_records, decode_records, inflate_bound
from ringlog.storage.errors import DecompressedTooLargeError, StorageError

from ..errors import CloseConnection, KafkaError, error_code_for
from ..ingest import PendingAppend, RingFull
from ..logging_setup import event
from ..quotas import PRODUCER_BYTE_RATE
from ..security import authorizer as acl
from . import RequestContext, handler, make, nested

log = logging.getLogger("ringlog.produce")


class _Result:
    __slots__ = ("index", "error", "message", "entry", "base_offset", "log_append_time", "record_errors")

    def __init__(self, index: int) -> None:
        self.index = index
        self.error = ErrorCode.none
        self.message: str | None = None
        self.entry: PendingAppend | None = None
        self.base_offset = -1
        self.log_append_time = -1
        self.record_errors: tuple[tuple[int, str], ...] = ()


@handler(api_key=0, min_version=3, max_version=9, advertise_min_version=0, sequential=True)
async def produce(ctx: RequestContext, request) -> object:
    broker = ctx.broker
    acks = int(request.acks)
    block = broker.config.backpressure == "block"
    full_check = broker.config.record_validation == "full"
    throttle_ms = 0
    results: list[tuple[str, list[_Result]]] = []
    try:
        if broker.quotas.produce_on:
            # client quotas (broker.quotas): counted and muted before the next request is read
            # (Kafka reads a connection's next request only after this one's answer)
            throttle_ms = _quota_throttle(ctx, request)
        for topic_data in request.topic_data:
            name = topic_data.name
            info = broker.metadata.get(name)
            config = broker.log_config_for(name) if info is not None else None
            allowed = ctx.authorize(acl.WRITE, acl.TOPIC, name)
            per_topic: list[_Result] = []
            results.append((name, per_topic))
            for pdata in topic_data.partition_data:
                res = _Result(int(pdata.index))
                per_topic.append(res)
                if acks not in (0, 1, -1):
                    res.error = ErrorCode.invalid_required_acks
                    continue
                if not allowed:
                    res.error = ErrorCode.topic_authorization_failed
                    continue
                if request.transactional_id is not None and not ctx.authorize(
                        acl.WRITE, acl.TRANSACTIONAL_ID, request.transactional_id):
                    res.error = ErrorCode.transactional_id_authorization_failed
                    continue
                part = broker.partition(name, res.index) if info is not None else None
                if part is None or not res.index < info.partitions:
                    res.error = ErrorCode.unknown_topic_or_partition
                    continue
                if broker.cluster is not None:  # cluster mode: only the leader takes writes
                    refusal = broker.cluster.produce_refusal(part, acks)
                    if refusal is not None:
                        res.error = refusal
                        continue
                tp = part.tp
                try:
                    entry = await _validate_partition(broker, tp, pdata.records, config, full_check)
                except DecompressedTooLargeError as exc:
                    # Warning, not info: a client (or an attacker) sent a batch that inflates
                    # beyond what the broker holds; an operator may need to raise the limit.
                    res.error = error_code_for(exc)
                    res.message = str(exc)
                    log.warning("produce from %s to %s-%d refused: %s (message.max.decompressed.bytes)",
                                ctx.peer, name, res.index, exc,
                                extra=event("produce_too_inflated", peer=ctx.peer, topic=name,
                                            partition=res.index, reason=str(exc)))
                    continue
                except StorageError as exc:
                    res.error = error_code_for(exc)
                    res.message = str(exc)
                    log.info("produce from %s to %s-%d rejected: %s", ctx.peer, name, res.index, exc)
                    continue
                except KafkaError as exc:
                    res.error, res.message = exc.code, exc.message
                    res.record_errors = getattr(exc, "record_errors", ())
                    continue
                if broker.pipelines.active:  # ingest.pipeline of the topic (broker.pipeline_runtime)
                    try:
                        entry = await _through_pipeline(broker, info, entry)
                    except (StorageError, KafkaError) as exc:
                        res.error, res.message = error_code_for(exc), str(exc)
                        continue
                if part.closed:  # deleted while its records were checked in a thread
                    res.error = ErrorCode.unknown_topic_or_partition
                    continue
                # transactions: only partitions added to the producer's open transaction
                txn_error = broker.txn.check_batches(request.transactional_id, part, entry.headers)
                if txn_error is not None:
                    res.error, res.message = txn_error
                    continue
                verdict = part.check_producers(entry.headers)
                if verdict is not None:
                    if isinstance(verdict, ErrorCode):
                        res.error = verdict
                    else:  # a duplicate: answer with the offset it got the first time
                        res.base_offset = int(verdict.base_offset)
                    continue
                try:
                    await part.submit(entry, block=block)
                except RingFull as exc:
                    part.abort_producers(entry.headers)
                    res.error = ErrorCode.not_enough_replicas
                    res.message = f"broker is busy, retry: {exc}"
                    throttle_ms = max(throttle_ms, broker.config.backpressure_throttle_ms)
                    continue
                except KafkaError as exc:  # deleted while waiting for ring space
                    part.abort_producers(entry.headers)
                    res.error, res.message = exc.code, exc.message
                    continue
                except BaseException:
                    # Cancelled while waiting for ring space (connection gone, shutdown): the
                    # batches will not be written, so they must not stay "in flight" for the
                    # producer state (its retry would be refused as an in-flight duplicate).
                    part.abort_producers(entry.headers)
                    raise
                res.entry = entry
    finally:
        ctx.release_reader()

    if acks == 0:
        failed = [(t, r) for t, rs in results for r in rs if r.error != ErrorCode.none]
        if failed:
            topic, res = failed[0]
            raise CloseConnection(f"acks=0 produce to {topic}-{res.index} failed: {res.error.name}")
        return _no_response()

    for topic, per_topic in results:
        for res in per_topic:
            if res.entry is None:
                continue
            await res.entry.done.wait()
            if res.entry.error is not None:
                res.error = error_code_for(res.entry.error)
                res.message = str(res.entry.error)
            else:
                first = res.entry.infos[0]
                if acks == -1 and broker.cluster is not None:  # acks=all: until the ISR holds it
                    part = broker.partition(topic, res.index)
                    refusal = await broker.cluster.wait_replicated(
                        part, res.entry.infos[-1].last_offset + 1, request.timeout.total_seconds()) \
                        if part is not None else ErrorCode.not_leader_or_follower
                    if refusal is not None:
                        res.error = refusal
                        continue
                res.base_offset = int(first.base_offset)
                if broker.log_config_for(topic).message_timestamp_type == "LogAppendTime":
                    res.log_append_time = int(first.log_append_time)

    Response = ctx.response_class()
    TopicResp = nested(Response, "TopicProduceResponse")
    PartResp = nested(Response, "PartitionProduceResponse")
    RecordError = nested(Response, "BatchIndexAndErrorMessage") if int(request.__version__) >= 8 else None
    return make(
        Response,
        responses=tuple(
            make(
                TopicResp,
                name=topic,
                partition_responses=tuple(
                    make(
                        PartResp,
                        index=res.index,
                        error_code=res.error,
                        base_offset=res.base_offset,
                        log_append_time=_ts(res.log_append_time),
                        log_start_offset=_log_start(broker, topic, res.index),
                        record_errors=tuple(make(RecordError, batch_index=i, batch_index_error_message=m)
                                            for i, m in res.record_errors) if RecordError is not None else (),
                        error_message=res.message,
                    )
                    for res in per_topic
                ),
            )
            for topic, per_topic in results
        ),
        throttle_time=datetime.timedelta(milliseconds=throttle_ms),
    )


def _quota_throttle(ctx: RequestContext, request) -> int:
    """Count the request's record bytes against the client's producer_byte_rate; the throttle
    time (the connection is muted for it)."""
    size = sum(len(p.records) for t in request.topic_data for p in t.partition_data if p.records is not None)
    throttle_ms = ctx.broker.quotas.record(PRODUCER_BYTE_RATE, ctx.principal, ctx.client_id, size, ctx.now_ms())
    if throttle_ms:
        ctx.broker.metrics.throttled(PRODUCER_BYTE_RATE, throttle_ms)
        ctx.throttle(throttle_ms)
    return throttle_ms


# Inflated bytes a partition's compressed batches may reach and still be checked on the Trio
# thread: some 0.1-0.2 ms of decompression, about what the hop to a worker thread costs.
_INLINE_INFLATE_BYTES = 256 * 1024
# With record.validation=full, records blobs up to this size are decoded on the Trio thread
# (about 6 us a record: some 100 records, well under a millisecond); larger ones in a thread.
_INLINE_FULL_CHECK_BYTES = 16 * 1024
_BATCH_LENGTH = struct.Struct(">i")


def _inflate_cost(records, limit: int) -> int:
    """Bytes the compressed batches of the records blob may inflate to, from their headers
    alone (storage.records.inflate_bound). Damage stops the walk: _validate reports it."""
    pos = 0
    end = len(records)
    cost = 0
    while pos + 61 <= end:
        (length,) = _BATCH_LENGTH.unpack_from(records, pos + 8)
        if length < 49 or pos + 12 + length > end:  # not a whole batch: damage
            break
        codec = records[pos + 22] & 0x07  # low byte of the attributes (i16 at 21): the codec
        if codec:
            cost += inflate_bound(codec, memoryview(records)[pos + 61 : pos + 12 + length], limit)
        pos += 12 + length
    return cost


async def _validate_partition(broker, tp, records, config, full_check: bool) -> PendingAppend:
    # A topic allowed larger batches than the broker's limit (its max.message.bytes) gets them
    # compressed too: a batch accepted uncompressed is never refused for being compressed.
    max_decompressed = max(broker.config.message_max_decompressed_bytes, config.max_message_bytes)
    before, after = config.message_timestamp_before_max_ms, config.message_timestamp_after_max_ms
    # Kafka's transition rule: the deprecated difference applies where before/after are unset.
    if before == INT64_MAX:
        before = config.message_timestamp_difference_max_ms
    if after == INT64_MAX:
        after = config.message_timestamp_difference_max_ms
    create_time = config.message_timestamp_type != "LogAppendTime"
    timestamps = (broker.now_ms(), before, after, create_time) if before < INT64_MAX or after < INT64_MAX else None
    target = _TARGET_CODECS.get(config.compression_type)  # None: as the producer compressed it
    args = (tp, records, config.max_message_bytes, full_check, "compact" in config.cleanup_policy, max_decompressed,
            timestamps, target)
    if records and (_inflate_cost(records, max_decompressed) > _INLINE_INFLATE_BYTES
                    or ((full_check or target is not None) and len(records) > _INLINE_FULL_CHECK_BYTES)):
        return await trio.to_thread.run_sync(_validate_in_thread, *args, limiter=broker.record_check_limiter)
    return _validate(*args)


async def _through_pipeline(broker, info, entry: PendingAppend) -> PendingAppend:
    pipeline = broker.pipelines.for_topic(info)
    if pipeline is None:
        return entry
    return await broker.pipelines.apply_to_produce(pipeline, entry, broker.now_ms(),
                                                   broker.config.message_max_decompressed_bytes)


def _validate_in_thread(*args) -> PendingAppend:
    try:
        return _validate(*args)
    except (StorageError, KafkaError) as exc:
        # Without its traceback, whose frames hold the inflated records (up to the limit):
        # trio.to_thread keeps the exception in a reference cycle, alive until the cycle
        # collector runs, and a stream of refused batches would pile them up meanwhile.
        raise exc.with_traceback(None)


class RecordErrors(KafkaError):
    """A batch refused for some of its records (KIP-467): Produce v8+ lists them by their index
    in the batch, with Kafka's messages."""

    def __init__(self, code: ErrorCode, message: str, record_errors: list[tuple[int, str]]) -> None:
        super().__init__(code, message)
        self.record_errors = tuple(record_errors)


def _refuse_records(tp, view, header, compacted: bool, timestamps, max_decompressed: int) -> None:
    """Kafka's LogValidator record checks, for the batches that need them: a key on every record
    of a compacted topic, and timestamps inside message.timestamp.before/after.max.ms."""
    name = f"{tp[0]}-{tp[1]}"
    errors: list[tuple[int, str]] = []
    timestamp_error = False
    for index, record in enumerate(decode_records(view, header, max_decompressed=max_decompressed)):
        if compacted and record.key is None:
            errors.append((index, f"Compacted topic cannot accept message without key in topic partition {name}"))
            continue
        if timestamps is None:
            continue
        now, before, after, create_time = timestamps
        if create_time and record.timestamp != -1:
            if now - record.timestamp > before or record.timestamp - now > after:
                timestamp_error = True
                errors.append((index, f"Timestamp {record.timestamp} of message with offset {record.offset} is out "
                                      f"of range. The timestamp should be within [{now - before}, {now + after}]"))
        elif header.is_log_append_time:
            timestamp_error = True
            errors.append((index, "Invalid timestamp type in message. Producer should not set timestamp type to "
                                  "LogAppendTime."))
    if not errors:
        return
    if timestamp_error:
        raise RecordErrors(ErrorCode.invalid_timestamp, "One or more records have been rejected due to invalid "
                                                        "timestamp", errors)
    shown = ", ".join(f"RecordError(batchIndex={i}, message='{m}')" for i, m in errors[:3])
    raise RecordErrors(ErrorCode.invalid_record, f"One or more records have been rejected due to {len(errors)} record "
                                                 f"errors in total, and only showing the first three errors at most: "
                                                 f"[{shown}]", errors)


_TARGET_CODECS = {"uncompressed": CODEC_NONE, "gzip": CODEC_GZIP, "snappy": CODEC_SNAPPY, "lz4": CODEC_LZ4,
                  "zstd": CODEC_ZSTD}


def _recompress(view, header, codec: int, max_size: int, max_decompressed: int) -> tuple[bytearray, object]:
    """The batch rebuilt in `codec` (a topic's compression.type), as Kafka's LogValidator does:
    the same records, timestamps, producer id, epoch, sequence and transactional flag."""
    records = decode_records(view, header, max_decompressed=max_decompressed)
    rebuilt = bytearray(build_batch(
        [(r.key, r.value, r.headers, r.timestamp) for r in records], compression=codec,
        producer_id=header.producer_id, producer_epoch=header.producer_epoch, base_sequence=header.base_sequence,
        partition_leader_epoch=header.partition_leader_epoch, transactional=header.is_transactional))
    # recompressed, it may no longer fit (Kafka: RecordTooLargeException, MESSAGE_TOO_LARGE)
    return rebuilt, validate_batch(rebuilt, max_size=max_size, from_client=True)


def _validate(tp, records, max_size: int, full_check: bool, compacted: bool = False,
              max_decompressed: int = DEFAULT_MAX_DECOMPRESSED, timestamps=None,
              target: int | None = None) -> PendingAppend:
    """Runs on the Trio thread or in a worker thread: touches nothing but its arguments.
    `timestamps`: (now ms, before max ms, after max ms, topic uses CreateTime) when the topic
    limits record timestamps, else None; `target`: the codec batches are stored in (None: the
    producer's)."""
    if not records:
        raise KafkaError(ErrorCode.invalid_record, "no record batches in the request")
    batches: list[bytearray] = []
    headers = []
    size = 0
    for _, view in split_batches(records):
        header = validate_batch(view, max_size=max_size, from_client=True)
        # A valid CRC only proves the bytes arrived as the client built them: garbage records
        # inside would be stored and break every consumer, so their framing is checked too.
        check_records(view, header, full=full_check, max_decompressed=max_decompressed)
        # Kafka's LogValidator: a compacted topic keeps the latest record per key, so every
        # record needs one.
        if not header.is_control and (timestamps is not None or (
                compacted and not records_have_keys(view, header, max_decompressed=max_decompressed))):
            _refuse_records(tp, view, header, compacted, timestamps, max_decompressed)
        if target is not None and header.compression != target and not header.is_control:
            stored, header = _recompress(view, header, target, max_size, max_decompressed)
        else:
            stored = bytearray(view)
        batches.append(stored)
        headers.append(header)
        size += len(stored)
    return PendingAppend(tp=tp, batches=batches, headers=headers, size=size)


def _ts(ms: int):
    if ms < 0:
        return None
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)


def _log_start(broker, topic: str, partition: int) -> int:
    part = broker.partition(topic, partition)
    return int(part.log.log_start_offset) if part is not None else -1


def _no_response():
    from . import NO_RESPONSE

    return NO_RESPONSE
