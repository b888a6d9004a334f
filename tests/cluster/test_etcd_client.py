"""broker.cluster.etcd against a real etcd: key-value, txn compare-and-swap, leases, watches,
endpoint fail-over and the errors of bad input."""
from __future__ import annotations

import pytest
import trio

from ringlog.broker.cluster.etcd import (
    EtcdClient,
    EtcdError,
    EtcdUnavailable,
    cmp_create_revision,
    cmp_mod_revision,
    op_get,
    op_put,
    parse_endpoints,
    prefix_end,
)
from ringlog.client.cli.etcd_process import free_port


async def wait_for(predicate, timeout=10.0, interval=0.02):
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(interval)


async def test_put_get_prefix_delete(etcd):
    client = EtcdClient(etcd.url)
    rev = await client.put("/t/a", b"\x00\xffbinary")
    await client.put("/t/b", "two")
    await client.put("/u/c", "other")
    kv = await client.get("/t/a")
    assert kv.value == b"\x00\xffbinary" and kv.create_revision == kv.mod_revision == rev and kv.version == 1
    kvs, revision = await client.get_prefix("/t/")
    assert [k.key for k in kvs] == ["/t/a", "/t/b"] and revision >= rev + 2
    assert await client.get("/t/missing") is None
    assert await client.delete("/t/", prefix=True) == 2
    assert (await client.get_prefix("/t/"))[0] == []
    assert (await client.get("/u/c")).value == b"other"


def test_prefix_end_and_endpoints():
    assert prefix_end("/a/") == b"/a0"
    assert prefix_end(b"a\xff") == b"b"
    assert parse_endpoints("http://h1:1,h2:2") == [("h1", 1), ("h2", 2)]
    for bad in ("", "https://h:1", "http://:5", "http://h:x"):
        with pytest.raises(ValueError):
            parse_endpoints(bad)


async def test_txn_create_once_and_compare_and_swap(etcd):
    client = EtcdClient(etcd.url)
    first = await client.txn([cmp_create_revision("/lock", 0)], [op_put("/lock", "1")], [op_get("/lock")])
    second = await client.txn([cmp_create_revision("/lock", 0)], [op_put("/lock", "2")], [op_get("/lock")])
    assert first.succeeded and not second.succeeded
    assert second.ranges()[0][0].value == b"1"
    kv = await client.get("/lock")
    # a compare-and-swap on mod_revision: the first writer wins, a stale one loses
    ok = await client.txn([cmp_mod_revision("/lock", kv.mod_revision)], [op_put("/lock", "3")])
    stale = await client.txn([cmp_mod_revision("/lock", kv.mod_revision)], [op_put("/lock", "4")])
    assert ok.succeeded and not stale.succeeded
    assert (await client.get("/lock")).value == b"3"


async def test_lease_keys_vanish_when_not_kept_alive(etcd):
    client = EtcdClient(etcd.url)
    lease = await client.lease_grant(2)
    await client.put("/member", "x", lease=lease)
    assert (await client.get("/member")).lease == lease
    assert await client.lease_keepalive(lease) == 2
    await client.lease_revoke(lease)
    assert await client.get("/member") is None
    assert await client.lease_keepalive(lease) == 0  # expired or revoked: TTL 0
    short = await client.lease_grant(1)
    await client.put("/member2", "y", lease=short)

    async def gone():
        return await client.get("/member2") is None

    await wait_for(gone, timeout=10)


async def test_watch_sees_every_change_in_order(etcd):
    client = EtcdClient(etcd.url)
    _, revision = await client.get_prefix("/w/")
    seen = []
    done = trio.Event()

    async def on_events(events, rev):
        seen.extend((e.type, e.kv.key, e.kv.value) for e in events)
        if len(seen) >= 3:
            done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.watch, "/w/", revision + 1, on_events)
        await client.put("/w/1", "a")
        await client.put("/w/2", "b")
        await client.put("/x/ignored", "c")
        await client.delete("/w/1")
        with trio.fail_after(10):
            await done.wait()
        nursery.cancel_scope.cancel()
    assert seen == [("PUT", "/w/1", b"a"), ("PUT", "/w/2", b"b"), ("DELETE", "/w/1", b"")]


async def test_fail_over_to_the_next_endpoint(etcd):
    dead = f"http://127.0.0.1:{free_port()}"
    client = EtcdClient(f"{dead},{etcd.url}", timeout=2)
    await client.put("/f", "1")
    assert client.endpoint == etcd.url and client.failovers == 1
    assert (await client.get("/f")).value == b"1"


async def test_errors(etcd):
    nobody = EtcdClient(f"http://127.0.0.1:{free_port()},http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(EtcdUnavailable, match="no etcd endpoint answered"):
        await nobody.get("/x")
    client = EtcdClient(etcd.url)
    with pytest.raises(EtcdError):
        await client.put("/k", "v", lease=12345)  # no such lease: etcd refuses, not retried
