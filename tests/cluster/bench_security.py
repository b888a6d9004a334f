"""Cluster benchmark of the security state in etcd: how long CreateAcls through broker 1 takes to
answer, and how long until DescribeAcls on broker 2 lists the binding (counted from the send).
Two brokers (SASL_PLAINTEXT, authorizer on) and a real etcd on this machine.

    .venv/bin/python -m tests.cluster.bench_security [--calls 50]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import trio

from ringlog.client.admin import open_admin
from ringlog.client.cli.etcd_process import EtcdProcess
from ringlog.client.connection import builder

from ..security.conftest import add_users
from .test_security import SecuredCluster, _sasl


async def _measure(cluster, calls: int) -> tuple[list[float], list[float]]:
    answered, visible = [], []
    async with open_admin(cluster.brokers[1].bootstrap, **_sasl("admin", "admin-pw")) as a1, \
            open_admin(cluster.brokers[2].bootstrap, **_sasl("admin", "admin-pw")) as a2:
        one, two = await a1.cluster.connection(1), await a2.cluster.connection(2)
        for i in range(calls):
            create, describe = builder(30, 3), builder(29, 3)
            start = time.perf_counter()
            resp = await one.request(create(creations=[create(
                "AclCreation", resource_type=2, resource_name=f"bench-{i}", resource_pattern_type=3,
                principal="User:bench", host="*", operation=8, permission_type=3)]))
            answered.append((time.perf_counter() - start) * 1000)
            assert int(resp.results[0].error_code) == 0, resp
            while not (await two.request(describe(
                    resource_type_filter=2, resource_name_filter=f"bench-{i}", pattern_type_filter=3,
                    principal_filter=None, host_filter=None, operation=1, permission_type=1))).resources:
                pass
            visible.append((time.perf_counter() - start) * 1000)
    return answered, visible


def _line(what: str, xs: list[float]) -> str:
    xs = sorted(xs)
    return f"| {what} | {statistics.median(xs):.1f} ms | {xs[int(len(xs) * 0.95)]:.1f} ms |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-security-"))
    with EtcdProcess(str(root / "etcd")) as etcd:
        cluster = SecuredCluster(etcd, root, n=2, name="bench-security")
        for node in (1, 2):
            os.makedirs(root / f"broker-{node}", exist_ok=True)
            add_users(str(root / f"broker-{node}"), {"admin": "admin-pw"})
        cluster.start()
        try:
            answered, visible = trio.run(_measure, cluster, args.calls)
        finally:
            cluster.stop()
    print(f"{args.calls} CreateAcls through broker 1, one binding each\n")
    print("| | p50 | p95 |\n|---|---|---|")
    print(_line("CreateAcls answered by broker 1", answered))
    print(_line("listed by DescribeAcls on broker 2", visible))


if __name__ == "__main__":
    main()
