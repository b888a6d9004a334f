"""The log cleaner task: compacts partitions whose cleanup.policy contains "compact".

Every log.retention.check.interval.ms it walks the partition logs; for each compacted one,
storage.compaction.plan_clean decides (on the Trio thread, under the broker's log lock) whether a
clean is due (min.cleanable.dirty.ratio, min.compaction.lag.ms, a passed tombstone horizon). The
heavy part, reading the old segments and writing the cleaned ones, runs in a worker thread
(build_clean); the commit then happens under the log lock: on the Trio thread a check that the log
is still as planned (else the result is discarded: truncated, segments deleted or closed
meanwhile), in a worker thread the crash-safe swap of the files (swap_clean), and back on the Trio
thread the switch of the log's segments (install_clean).
One partition at a time, so at most one worker thread is busy cleaning.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from ringlog.storage.compaction import build_clean, clean_is_current, discard, install_clean, plan_clean, swap_clean

from .core import drop_in_thread
from .logging_setup import event

if TYPE_CHECKING:
    from .core import Broker

log = logging.getLogger("ringlog.cleaner")


async def clean_partition(broker: Broker, topic: str, partition: int, plog) -> object | None:
    """Plan, build (worker thread) and commit one clean of `plog`; the CleanStats or None."""
    async with broker.log_lock:
        if plog.closed or "compact" not in plog.config.cleanup_policy:
            return None
        part = broker.partition(topic, partition)
        # never past the last stable offset: an open transaction is not compacted (Kafka's rule)
        plan = plan_clean(plog, broker.now_ms(), max_offset=part.last_stable_offset if part is not None else None)
    if plan is None:
        return None
    result = None
    try:
        # abandon_on_cancel: shutdown must not wait for a long clean; the plan's stop flag makes
        # the abandoned thread give up soon, and its .cleaned files are removed (or, if it is
        # killed with the process, by the next open of the log).
        result = await trio.to_thread.run_sync(build_clean, plan, abandon_on_cancel=True)
    except trio.Cancelled:
        plan.stop()
        raise
    async with broker.log_lock:
        if clean_is_current(plog, plan):
            before = (plog.segment_count(), plog.size_bytes)
            # Shielded: once the files are being swapped, the log must learn of the new ones.
            with trio.CancelScope(shield=True):
                swapped = await trio.to_thread.run_sync(swap_clean, plan, result, plog.config)
                stats = install_clean(plog, plan, result, swapped, before)
                # The replaced segments' files are unlinked; the plan and result hold the last
                # references to their fds, whose closing frees the blocks: in a thread too.
                holder = [plan, result, swapped]
                del plan, result, swapped
                await trio.to_thread.run_sync(drop_in_thread, holder)
        else:
            await trio.to_thread.run_sync(discard, plan, result)
            stats = None
    if stats is None:
        log.info("clean of %s-%d discarded: the log changed meanwhile", topic, partition)
        return None
    log.info(
        "cleaned %s-%d up to offset %d: %d -> %d bytes, %d -> %d segments, kept %d of %d records",
        topic, partition, stats.map_end, stats.bytes_before, stats.bytes_after, stats.segments_before,
        stats.segments_after, stats.records_kept, stats.records_read,
        extra=event("log_cleaned", topic=topic, partition=partition, bytes_before=stats.bytes_before,
                    bytes_after=stats.bytes_after, segments_after=stats.segments_after),
    )
    return stats


async def serve_cleaner(broker: Broker) -> None:
    """Run forever (cancelled with the broker)."""
    interval = max(0.05, broker.config.retention_check_interval_ms / 1000)
    while True:
        await trio.sleep(interval)
        for (topic, partition), plog in broker._all_logs():
            if "compact" not in plog.config.cleanup_policy:
                continue
            try:
                await clean_partition(broker, topic, partition, plog)
            except Exception:
                # a failed clean leaves the log as it was (the swap is crash-safe); try again later
                log.exception("cleaning %s-%d failed", topic, partition)


__all__ = ["clean_partition", "serve_cleaner"]
