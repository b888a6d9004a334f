"""KIP-430 authorized operations: asked for, every operation the resource type supports (there
is no authorizer, and Kafka without one answers the same); not asked for, Kafka's INT32_MIN."""
from __future__ import annotations

import datetime
import importlib

from kio.schema.errors import ErrorCode

OMITTED = -(2**31)
# AclOperation codes of AclEntry.supportedOperations per resource type
TOPIC = {3, 4, 5, 6, 7, 8, 10, 11}      # READ WRITE CREATE DELETE ALTER DESCRIBE DESCRIBE/ALTER_CONFIGS
GROUP = {3, 6, 8, 10, 11}               # READ DELETE DESCRIBE DESCRIBE_CONFIGS ALTER_CONFIGS
CLUSTER = {5, 7, 8, 9, 10, 11, 12}      # CREATE ALTER DESCRIBE CLUSTER_ACTION DESCRIBE/ALTER_CONFIGS IDEMPOTENT_WRITE


def req(api: str, version: int, cls: str, /, **fields):
    return getattr(importlib.import_module(f"kio.schema.{api}.v{version}.request"), cls)(**fields)


def bits(field: int) -> set[int]:
    return {n for n in range(32) if field & (1 << n)}


def test_metadata_topic_and_cluster_operations(raw_client) -> None:
    client = raw_client()
    topic = req("metadata", 10, "MetadataRequestTopic", name="ops", topic_id=None)
    for asked in (False, True):
        r = client.call(req("metadata", 10, "MetadataRequest", topics=(topic,), allow_auto_topic_creation=True,
                            include_cluster_authorized_operations=asked, include_topic_authorized_operations=asked))
        assert r.topics[0].error_code == ErrorCode.none
        if asked:
            assert bits(r.topics[0].topic_authorized_operations) == TOPIC
            assert bits(r.cluster_authorized_operations) == CLUSTER
        else:
            assert r.topics[0].topic_authorized_operations == OMITTED
            assert r.cluster_authorized_operations == OMITTED


def test_describe_cluster_operations(raw_client) -> None:
    client = raw_client()
    for asked, expected in ((True, CLUSTER), (False, None)):
        r = client.call(req("describe_cluster", 1, "DescribeClusterRequest",
                            include_cluster_authorized_operations=asked, endpoint_type=1))
        assert r.error_code == ErrorCode.none
        if expected is None:
            assert r.cluster_authorized_operations == OMITTED
        else:
            assert bits(r.cluster_authorized_operations) == expected


def test_describe_groups_operations(raw_client) -> None:
    client = raw_client()
    # an empty group exists once it has committed offsets
    topic = req("offset_commit", 2, "OffsetCommitRequestTopic", name="ops", partitions=(
        req("offset_commit", 2, "OffsetCommitRequestPartition", partition_index=0, committed_offset=1,
            committed_metadata=""),))
    client.call(req("metadata", 10, "MetadataRequest",
                    topics=(req("metadata", 10, "MetadataRequestTopic", name="ops", topic_id=None),),
                    allow_auto_topic_creation=True, include_cluster_authorized_operations=False,
                    include_topic_authorized_operations=False))
    c = client.call(req("offset_commit", 2, "OffsetCommitRequest", group_id="og", generation_id_or_member_epoch=-1,
                        member_id="", retention_time=datetime.timedelta(milliseconds=-1), topics=(topic,)))
    assert c.topics[0].partitions[0].error_code == ErrorCode.none
    asked = client.call(req("describe_groups", 5, "DescribeGroupsRequest", groups=("og", "nope"),
                            include_authorized_operations=True))
    og, nope = asked.groups
    assert og.error_code == ErrorCode.none and bits(og.authorized_operations) == GROUP
    assert nope.group_state == "Dead"
    plain = client.call(req("describe_groups", 5, "DescribeGroupsRequest", groups=("og",),
                            include_authorized_operations=False))
    assert plain.groups[0].authorized_operations == OMITTED
