"""DescribeLogDirs (35) v1-4: the one data directory, its partitions' sizes, the volume's space.

Kafka's answer (ReplicaManager.describeLogDirs): one result per log directory with its absolute
path; `topics` null -> every partition in it, else only the requested partitions that exist there
(unknown ones are left out, not errors); partition size = bytes of its segments; offset lag = log
end offset minus high watermark (records written but not yet visible); no future logs (no
AlterReplicaLogDirs). v4 adds the volume's total and usable bytes (statvfs). v0 is not served:
Kafka 4 removed it (KIP-896).
"""
from __future__ import annotations

import datetime
import os

import trio
from kio.schema.errors import ErrorCode

from ..security import authorizer as acl
from . import RequestContext, handler, make, nested


def _volume(path: str) -> tuple[int, int]:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


@handler(api_key=35, min_version=1, max_version=4)
async def describe_log_dirs(ctx: RequestContext, request) -> object:
    broker = ctx.broker
    if not ctx.authorize(acl.DESCRIBE, acl.CLUSTER, acl.CLUSTER_NAME):
        return ctx.refused(acl.CLUSTER)
    Response = ctx.response_class()
    Result = nested(Response, "DescribeLogDirsResult")
    Topic = nested(Response, "DescribeLogDirsTopic")
    Partition = nested(Response, "DescribeLogDirsPartition")
    if request.topics is None:
        wanted = {info.name: range(info.partitions) for info in broker.metadata}
    else:
        wanted = {}
        for t in request.topics:
            wanted.setdefault(t.topic, []).extend(int(p) for p in t.partitions)
    topics = []
    for name, partitions in wanted.items():
        parts = []
        for index in sorted(set(partitions)):
            log = broker.partition_log(name, index)
            if log is None:
                continue
            lag = max(0, log.log_end_offset - broker.high_watermark(name, index))
            parts.append(make(Partition, partition_index=index, partition_size=log.size_bytes,
                              offset_lag=lag, is_future_key=False))
        if parts:
            topics.append(make(Topic, name=name, partitions=tuple(parts)))
    path = os.path.abspath(broker.config.data_dir)
    # statvfs can stall on a sick disk: keep it off the Trio thread
    total, usable = await trio.to_thread.run_sync(_volume, path)
    result = make(Result, error_code=ErrorCode.none, log_dir=path, topics=tuple(topics),
                  total_bytes=total, usable_bytes=usable)
    return make(Response, throttle_time=datetime.timedelta(0), error_code=ErrorCode.none, results=(result,))
