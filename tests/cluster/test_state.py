"""The controller's pure decisions (broker.cluster.state): assignment, election, epoch ends."""
from __future__ import annotations

import pytest

from ringlog.broker.cluster.replica import LeaderReplication, whole_batches
from ringlog.broker.cluster.state import (
    NO_LEADER,
    PartitionState,
    TopicRecord,
    assign_replicas,
    decide,
    end_offset_for_epoch,
    forget_replica,
    initial_state,
)
from ringlog.storage.records import build_batch


def test_round_robin_spreads_leaders_and_never_repeats_a_broker():
    replicas = assign_replicas([3, 1, 2], 6, 3, start=1)
    assert [r[0] for r in replicas] == [2, 3, 1, 2, 3, 1]
    assert all(len(set(r)) == 3 for r in replicas)
    assert assign_replicas([1, 2, 3], 2, 1) == [(1,), (2,)]
    with pytest.raises(ValueError, match="larger than the 2 live"):
        assign_replicas([1, 2], 1, 3)


def test_initial_state_leads_with_the_first_live_replica():
    assert initial_state((2, 3, 1), {1, 2, 3}) == PartitionState(2, 0, (2, 3, 1), (2, 3, 1))
    assert initial_state((2, 3, 1), {1, 3}) == PartitionState(3, 0, (3, 1), (2, 3, 1))
    assert initial_state((2,), set()).leader == NO_LEADER


def test_election_from_the_isr_only():
    s = PartitionState(1, 4, (1, 2, 3), (1, 2, 3))
    assert decide(s, {1, 2, 3}, unclean=False) is None
    # a follower dies: it leaves the ISR, the leader and epoch stay
    assert decide(s, {1, 2}, unclean=False) == PartitionState(1, 4, (1, 2), (1, 2, 3))
    # the leader dies: the next ISR member leads with the next epoch
    assert decide(s, {2, 3}, unclean=False) == PartitionState(2, 5, (2, 3), (1, 2, 3))
    # only an out-of-sync replica is alive: offline unless unclean election is on
    lonely = PartitionState(1, 4, (1,), (1, 2, 3))
    offline = decide(lonely, {3}, unclean=False)
    assert offline == PartitionState(NO_LEADER, 5, (1,), (1, 2, 3))
    assert decide(offline, {3}, unclean=False) is None  # stays offline, no epoch churn
    assert decide(lonely, {3}, unclean=True) == PartitionState(3, 5, (3,), (1, 2, 3))
    # the last ISR member returns: it leads again
    assert decide(offline, {1, 3}, unclean=False) == PartitionState(1, 6, (1,), (1, 2, 3))


def test_a_replaced_data_dir_leaves_the_isr_and_never_leads():
    s = PartitionState(1, 4, (1, 2, 3), (1, 2, 3))
    # a follower's copy is gone: it leaves the ISR, nothing else changes
    assert forget_replica(s, 2, {1, 2, 3}) == PartitionState(1, 4, (1, 3), (1, 2, 3))
    # the leader's copy is gone: the next live ISR member leads with the next epoch
    assert forget_replica(s, 1, {1, 2, 3}) == PartitionState(2, 5, (2, 3), (1, 2, 3))
    assert forget_replica(s, 1, {1, 3}) == PartitionState(3, 5, (3,), (1, 2, 3))
    # it was the last in-sync copy: offline with an empty ISR, which election does not undo
    lonely = PartitionState(NO_LEADER, 6, (1,), (1, 2, 3))
    gone = forget_replica(lonely, 1, {1, 2, 3})
    assert gone == PartitionState(NO_LEADER, 6, (), (1, 2, 3))
    assert decide(gone, {1, 2, 3}, unclean=False) is None
    assert decide(lonely, {1, 2, 3}, unclean=False).leader == 1  # what the guard prevents
    # not in the ISR: nothing to do
    assert forget_replica(PartitionState(2, 1, (2,), (1, 2)), 1, {1, 2}) is None


def test_state_and_topic_round_trip():
    s = PartitionState(2, 7, (2, 1), (1, 2, 3))
    assert PartitionState.decode(s.encode().encode(), 99) == PartitionState(2, 7, (2, 1), (1, 2, 3), 99)
    t = TopicRecord("t", "id", 2, {"min.insync.replicas": "2"}, ((1, 2), (2, 1)))
    assert TopicRecord.decode("t", t.encode().encode()) == t


def test_end_offset_for_epoch():
    cache = [(0, 0), (2, 100), (5, 250)]
    assert end_offset_for_epoch(cache, 0, 300) == (0, 100)
    assert end_offset_for_epoch(cache, 1, 300) == (0, 100)  # epoch 1 never wrote: epoch 0's end
    assert end_offset_for_epoch(cache, 2, 300) == (2, 250)
    assert end_offset_for_epoch(cache, 7, 300) == (5, 300)
    assert end_offset_for_epoch([(3, 10)], 1, 300) == (-1, -1)


class _Log:
    log_end_offset = 100


class _Part:
    log = _Log()
    high_watermark = 40


def test_leader_high_watermark_is_the_isr_minimum_and_never_falls():
    role = LeaderReplication(1, 3, (1, 2, 3), (1, 2, 3), epoch_start=40, now=0)
    part = _Part()
    assert role.high_watermark(part, 100) == 40  # followers not heard from yet
    role.fetched(2, 90, 100, now=1000)
    role.fetched(3, 70, 100, now=1000)
    assert role.high_watermark(part, 100) == 70
    role.isr = {1, 2}  # 3 left the ISR
    assert role.high_watermark(part, 100) == 90
    part.high_watermark = 95
    assert role.high_watermark(part, 100) == 95  # never backwards
    # 3 fetched our log end: caught up now; 2 has not fetched since: lagging after the lag time
    role.fetched(3, 100, 100, now=5000)
    assert role.laggards(now=5000, lag_ms=2000) == {2}
    assert role.joiners(95) == {3}


def test_whole_batches_drops_a_cut_last_batch():
    a = build_batch([(None, b"a", (), 1)])
    b = build_batch([(None, b"bb", (), 1)])
    assert whole_batches(bytes(a) + bytes(b)) == [bytes(a), bytes(b)]
    assert whole_batches(bytes(a) + bytes(b)[:-3]) == [bytes(a)]
    assert whole_batches(b"") == []


def test_directory_id_is_made_once_and_bound_to_its_node(tmp_path):
    from ringlog.broker.cluster.node import ClusterJoinError, load_directory_id

    first = load_directory_id(str(tmp_path), 2)
    assert load_directory_id(str(tmp_path), 2) == first
    assert "node.id=2" in (tmp_path / "meta.properties").read_text()
    with pytest.raises(ClusterJoinError, match="belongs to node id 2, not 3"):
        load_directory_id(str(tmp_path), 3)
    # a replaced (empty) data dir gets a new id: that is what the cluster notices
    other = tmp_path / "wiped"
    other.mkdir()
    assert load_directory_id(str(other), 2) != first
