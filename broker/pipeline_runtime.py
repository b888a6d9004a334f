"""The broker's ingest pipelines at run time: compiled once from the config's [pipelines]
tables, looked up per topic (its ingest.pipeline config), applied to HTTP ingest and to Kafka
Produce, and counted per stage for /metrics:

    ringlog_pipeline_records_in_total{pipeline,stage}
    ringlog_pipeline_records_out_total{pipeline,stage}
    ringlog_pipeline_records_dropped_total{pipeline,stage}
    ringlog_pipeline_values_masked_total{pipeline,stage}
    ringlog_pipeline_seconds_total{pipeline,stage}

(stage is "<position>:<type>", e.g. "2:mask"). With no pipelines configured `active` is False and
nothing here runs on the produce path.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import trio
from kio.schema.errors import ErrorCode

from .errors import KafkaError
from .ingest import PendingAppend
from .metrics import _counter
from .pipelines import Pipeline, compile_pipelines, rewrite_batch

TOPIC_CONFIG = "ingest.pipeline"
# Produced records blobs up to this size run through a pipeline on the Trio thread (some
# microseconds a record); larger ones in a worker thread, so other connections keep moving.
INLINE_BYTES = 64 * 1024


class MissingPipeline(KafkaError):
    pass


class PipelineSet:
    def __init__(self, tables: Mapping[str, Any], metrics: Any = None) -> None:
        self.pipelines: dict[str, Pipeline] = compile_pipelines(tables)
        self.active = bool(self.pipelines)
        # One pipeline runs at a time in a worker thread: stages keep counters and sampling state.
        self.limiter = trio.CapacityLimiter(1)
        if metrics is not None and self.active:
            metrics.registry.register(_Collector(self))

    def for_topic(self, info: Any) -> Pipeline | None:
        """The pipeline of a topic (a metadata TopicInfo); None when it names none. KafkaError
        INVALID_CONFIG when it names one the broker does not have: its records are refused rather
        than stored without the masking they were meant to get."""
        name = (info.configs or {}).get(TOPIC_CONFIG) if info is not None else None
        if not name:
            return None
        pipeline = self.pipelines.get(name)
        if pipeline is None:
            raise MissingPipeline(ErrorCode.invalid_config,
                                  f"topic {info.name} names ingest.pipeline {name!r}, which the broker config "
                                  f"does not declare ([pipelines.{name}])")
        return pipeline

    async def apply_to_produce(self, pipeline: Pipeline, entry: PendingAppend, now_ms: int,
                               max_decompressed: int) -> PendingAppend:
        """A validated Produce entry with its batches re-encoded by `pipeline` (see
        pipelines.rewrite_batch); the entry's headers stay those the producer sent, which is what
        the idempotent-producer state tracks."""
        def work() -> list[bytearray]:
            return [rewrite_batch(pipeline, raw, header, now_ms, max_decompressed)[0]
                    for raw, header in zip(entry.batches, entry.headers)]

        if entry.size > INLINE_BYTES:
            batches = await trio.to_thread.run_sync(work, limiter=self.limiter)
        else:
            batches = work()
        return PendingAppend(tp=entry.tp, batches=batches, headers=entry.headers,
                             size=sum(len(b) for b in batches))

    def collect(self) -> Iterator[Any]:
        labels = ["pipeline", "stage"]
        stats = [((p.name, s.name), s) for p in self.pipelines.values() for s in p.stages]
        yield _counter("ringlog_pipeline_records_in", "Records that entered the pipeline stage.", labels,
                       {k: s.records_in for k, s in stats})
        yield _counter("ringlog_pipeline_records_out", "Records the pipeline stage passed on.", labels,
                       {k: s.records_out for k, s in stats})
        yield _counter("ringlog_pipeline_records_dropped", "Records the pipeline stage dropped (filter, sample).",
                       labels, {k: s.dropped for k, s in stats})
        yield _counter("ringlog_pipeline_values_masked", "Values the pipeline stage masked.", labels,
                       {k: s.masked for k, s in stats})
        yield _counter("ringlog_pipeline_seconds", "Time spent in the pipeline stage.", labels,
                       {k: s.seconds for k, s in stats})


class _Collector:
    def __init__(self, pipelines: PipelineSet) -> None:
        self.pipelines = pipelines

    def collect(self) -> Iterator[Any]:
        return self.pipelines.collect()
