"""Consumer-group coordination, sans-IO.

* `state`: the group coordinator state machine (`GroupCoordinator`): JoinGroup, SyncGroup,
  Heartbeat, LeaveGroup, OffsetCommit/OffsetFetch, admin operations, `tick(now)` timeouts and
  offsets expiry; every operation returns records to persist and replies to send after.
* `records`: the `__consumer_offsets` record formats (Kafka's offset commit and group metadata
  keys and values).

No I/O and no Trio here: broker.coordinator_runtime drives it on the broker's event loop.
"""
from .state import (
    COMPLETING_REBALANCE,
    DEAD,
    EMPTY,
    PREPARING_REBALANCE,
    STABLE,
    CommitEntry,
    CommitReply,
    CommitRequest,
    CommittedOffset,
    CoordinatorConfig,
    GroupCoordinator,
    GroupSummary,
    HeartbeatRequest,
    JoinMember,
    JoinReply,
    JoinRequest,
    LeaveMember,
    LeaveReply,
    Outcome,
    SyncReply,
    SyncRequest,
    lag_report,
)

OFFSETS_TOPIC = "__consumer_offsets"

__all__ = [
    "COMPLETING_REBALANCE", "DEAD", "EMPTY", "PREPARING_REBALANCE", "STABLE", "OFFSETS_TOPIC",
    "CommitEntry", "CommitReply", "CommitRequest", "CommittedOffset", "CoordinatorConfig",
    "GroupCoordinator", "GroupSummary", "HeartbeatRequest", "JoinMember", "JoinReply", "JoinRequest",
    "LeaveMember", "LeaveReply", "Outcome", "SyncReply", "SyncRequest", "lag_report",
]
