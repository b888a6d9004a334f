"""Cluster mode: the security state (ACLs, SCRAM/PLAIN credentials, client quotas) lives in etcd.

Three documents under the cluster prefix, each the same JSON as its single-node file:
`security/acls` (acls.json), `security/credentials` (credentials.json) and `security/quotas`
(quotas.json). A change is a compare-and-swap on the document's mod_revision: the handler's edit
is applied to the state this broker applied last, written with a txn that succeeds only if nobody
wrote the document meanwhile (else the txn reads the newer one, it is applied, and the edit is
made again on it). The answer leaves once etcd accepted the write and the watch applied it here.

At the first start of a cluster no document exists: each broker offers its local state (the files
read at start-up, written by `ringlog users` / `ringlog acls` offline) with a create-if-absent
txn; the first broker wins, the others adopt etcd's. Every applied document is also written to
the local file (a worker thread) as a cache for the offline tools; the broker never reads it back
in cluster mode. A malformed document is logged and skipped (the state stays as it was).
"""
from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio
from kio.schema.errors import ErrorCode

from ..errors import KafkaError
from ..logging_setup import event
from ..security.authorizer import Acl
from ..security.state import acls_json
from ..security.store import ACLS, CREDENTIALS, QUOTAS, write_json
from .etcd import EtcdError, KeyValue, cmp_create_revision, cmp_mod_revision, op_get, op_put

if TYPE_CHECKING:
    from .node import ClusterNode

log = logging.getLogger("ringlog.cluster")

KINDS = ("acls", "credentials", "quotas")
FILES = {"acls": ACLS, "credentials": CREDENTIALS, "quotas": QUOTAS}
# a deleted document is the empty state (what the single-node files hold when empty)
EMPTY = {"acls": {"version": 1, "acls": []}, "credentials": {"version": 1, "users": {}},
         "quotas": {"version": 1, "quotas": []}}
# a write that etcd did not accept (and this broker did not apply) within this long answers
# REQUEST_TIMED_OUT; below the clients' default request timeout (30 s)
WRITE_WAIT_S = 10.0
# Edit: the state applied last -> (the new document, or None for "nothing changes"; the result)
Edit = Callable[[], tuple[Any, Any]]


class SharedSecurity:
    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        self.broker = node.broker
        # per document: the mod_revision the CAS compares with (0: absent) and the revision of
        # the last event applied (events older than it are skipped, they may arrive twice)
        self.base = {k: 0 for k in KINDS}
        self.seen = {k: 0 for k in KINDS}
        self._changed = trio.Event()
        self._mirror_lock = trio.Lock()

    def key(self, kind: str) -> str:
        return self.node.key("security", kind)

    def local_document(self, kind: str) -> Any:
        """This broker's current state as the document (None: nothing to offer, the authorizer is off)."""
        security = self.broker.security
        if kind == "acls":
            return acls_json(security.authorizer.acls) if security.authorizer is not None else None
        if kind == "credentials":
            return security.credentials.snapshot()
        return self.broker.quotas.snapshot()

    async def seed(self) -> None:
        """Create-if-absent of every document from the local state (the first broker wins)."""
        for kind in KINDS:
            document = self.local_document(kind)
            if document is None:
                continue
            key = self.key(kind)
            result = await self.node.etcd.txn([cmp_create_revision(key, 0)], [op_put(key, json.dumps(document))])
            if result.succeeded:
                log.info("seeded %s in etcd from this broker's data dir", key[len(self.node.prefix):],
                         extra=event("security_seeded", kind=kind))

    # --- applying -----------------------------------------------------------------------------

    async def apply(self, kind: str, kv: KeyValue, deleted: bool) -> None:
        """One event of the watch (or a txn's read): PUT (or DELETE) of a document."""
        if kind not in KINDS:
            log.error("ignoring unknown etcd key %s", kv.key)
            return
        revision = kv.mod_revision
        if revision <= self.seen[kind]:
            return
        self.seen[kind] = revision
        self.base[kind] = 0 if deleted else revision
        try:
            document = copy.deepcopy(EMPTY[kind]) if deleted else json.loads(kv.value)
            self._install(kind, document)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("ignoring a malformed etcd value of %s (revision %d): %r", kv.key, revision, exc,
                      extra=event("security_malformed", kind=kind))
            document = None
        self._notify()
        if document is not None:
            await self._mirror(kind, document)

    def _install(self, kind: str, document: Any) -> None:
        """Decode fully first (ValueError & co. leave the state untouched), then replace."""
        security = self.broker.security
        if kind == "acls":
            acls = [Acl.from_json(d) for d in document["acls"]]
            if security.authorizer is not None:
                security.authorizer.replace(acls)
        elif kind == "credentials":
            users = document["users"]
            if not isinstance(users, dict) or not all(isinstance(m, dict) for m in users.values()):
                raise ValueError('"users" is not a table of tables')
            security.credentials.users = users
        else:
            from ..handlers.client_quotas import sync_task_time
            from ..quotas import from_json

            self.broker.quotas.load(from_json(document))
            sync_task_time(self.broker.quotas)

    async def _mirror(self, kind: str, document: Any) -> None:
        """The local file as a cache (a worker thread); a failure is logged, the state stays."""
        data_dir = self.broker.config.data_dir
        try:
            async with self._mirror_lock:
                await trio.to_thread.run_sync(write_json, data_dir, FILES[kind], document)
        except OSError as exc:
            log.warning("could not write the local copy of %s: %s", FILES[kind], exc)

    def _notify(self) -> None:
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    # --- writing ------------------------------------------------------------------------------

    async def update(self, kind: str, edit: Edit) -> Any:
        """Apply `edit` to the current state in etcd (compare-and-swap, again on a conflict) and
        wait until this broker applied it; REQUEST_TIMED_OUT when etcd does not answer in time."""
        key = self.key(kind)
        with trio.move_on_after(WRITE_WAIT_S):
            while True:
                base = self.base[kind]
                document, result = edit()
                if document is None:
                    return result
                compare = cmp_mod_revision(key, base) if base else cmp_create_revision(key, 0)
                try:
                    txn = await self.node.etcd.txn([compare], [op_put(key, json.dumps(document))], [op_get(key)])
                except EtcdError as exc:
                    raise KafkaError(ErrorCode.request_timed_out, f"etcd is unavailable: {exc}") from None
                if txn.succeeded:
                    while self.seen[kind] < txn.revision:
                        await self._changed.wait()
                    return result
                # another broker wrote first: take its version (the watch skips it later), edit again
                current = txn.ranges()[0] if txn.ranges() else []
                if current:
                    await self.apply(kind, current[0], deleted=False)
                else:
                    self.base[kind] = 0
        raise KafkaError(ErrorCode.request_timed_out, f"the change of {kind} was not confirmed by etcd and applied "
                                                      f"here within {WRITE_WAIT_S:g} s (it may still apply)")

