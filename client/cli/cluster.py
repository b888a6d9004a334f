"""`ringlog cluster status` and `ringlog dev-cluster`.

`cluster status` asks any broker for Metadata (so it needs no etcd access): the live brokers, the
controller, and the partitions that are under-replicated (ISR smaller than the replica list) or
offline (no leader). Exit 0 when every partition is fully replicated, 1 when some are not.

`dev-cluster --brokers N [--data-dir D]` runs, in the foreground, a local etcd and N brokers on
loopback ports (node ids 1..N, each its own data directory under D), prints the bootstrap list
once every broker is ready, and stops them all on Ctrl-C (or when one of them exits). Its brokers
set offsets.topic.replication.factor to min(N, 3), so consumer groups work with one or two brokers.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    add_bootstrap,
    add_json,
    command,
    print_json,
    print_table,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    cluster = subparsers.add_parser("cluster", help="the state of a cluster (brokers, controller, replication)",
                                    description="Inspect a ringlog cluster through any of its brokers.")
    sub = cluster.add_subparsers(dest="cluster_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("status", help="brokers, controller, under-replicated and offline partitions",
                       description="Brokers, controller, and partitions whose ISR is short or that have no "
                                   "leader. Exit 1 when any partition is under-replicated or offline.")
    add_json(p)
    add_bootstrap(p)
    p.set_defaults(func=_status)

    p = subparsers.add_parser("dev-cluster", help="run a local etcd and N brokers for trying cluster mode",
                              description="Start etcd and N brokers on loopback in the foreground; print the "
                                          "bootstrap list; Ctrl-C stops them all.")
    p.add_argument("--brokers", type=int, default=3, metavar="N", help="number of brokers (default 3)")
    p.add_argument("--data-dir", metavar="D", help="where etcd and the brokers keep their data "
                                                   "(default: a new temporary directory)")
    p.add_argument("--cluster-name", default="dev", help="cluster.name of the brokers (default dev)")
    p.set_defaults(func=_dev_cluster)


@command("ringlog cluster status")
async def _status(args: argparse.Namespace) -> int:
    from .topics import open_admin

    async with open_admin(args) as admin:
        topics = await admin.describe_topics(None)
        brokers = sorted(admin.cluster.brokers.values(), key=lambda b: b.node_id)
        controller = admin.cluster.controller_id
    under, offline = [], []
    for name in sorted(topics):
        for p, info in sorted(topics[name].partitions.items()):
            row = {"topic": name, "partition": p, "leader": info.leader, "leader_epoch": info.leader_epoch,
                   "replicas": list(info.replicas), "isr": list(info.isr)}
            if info.leader < 0:
                offline.append(row)
            elif len(info.isr) < len(info.replicas):
                under.append(row)
    doc = {"controller": controller, "brokers": [{"node_id": b.node_id, "host": b.host, "port": b.port}
                                                 for b in brokers],
           "under_replicated": under, "offline": offline}
    if args.json:
        print_json(doc)
    else:
        print(f"controller: {controller}")
        print_table(["BROKER", "HOST", "PORT"], [(b.node_id, b.host, b.port) for b in brokers], right=["PORT"])
        for title, rows in (("under-replicated partitions", under), ("offline partitions", offline)):
            print(f"\n{title}: {len(rows)}")
            if rows:
                print_table(["TOPIC", "PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR"],
                            [(r["topic"], r["partition"], r["leader"], r["leader_epoch"],
                              ",".join(map(str, r["replicas"])), ",".join(map(str, r["isr"]))) for r in rows])
    return EXIT_FAILED if under or offline else EXIT_OK


def _broker_command(node: int, data_dir: str, etcd_url: str, name: str, port: int, brokers: int) -> list[str]:
    # __consumer_offsets gets as many replicas as there are brokers, up to Kafka's default of 3
    # (a cluster smaller than offsets.topic.replication.factor would never create it)
    return [sys.executable, "-m", "ringlog.client.cli", "broker", "--node-id", str(node), "--etcd", etcd_url,
            "--cluster-name", name, "--data-dir", data_dir, "--listen", f"127.0.0.1:{port}",
            "--set", f"offsets.topic.replication.factor={min(brokers, 3)}"]


def _dev_cluster(args: argparse.Namespace) -> int:
    from .etcd_process import EtcdProcess, free_port

    if not 1 <= args.brokers <= 64:
        print("ringlog dev-cluster: --brokers must be between 1 and 64", file=sys.stderr)
        return 2
    root = os.path.abspath(args.data_dir) if args.data_dir else tempfile.mkdtemp(prefix="ringlog-dev-cluster-")
    os.makedirs(root, exist_ok=True)
    etcd = EtcdProcess(os.path.join(root, "etcd"))
    procs: list[subprocess.Popen] = []
    try:
        try:
            etcd.start()
        except (OSError, RuntimeError) as exc:
            print(f"ringlog dev-cluster: cannot start etcd: {exc}", file=sys.stderr)
            return 1
        ports = [free_port() for _ in range(args.brokers)]
        logs = []
        for i, port in enumerate(ports, 1):
            log_path = os.path.join(root, f"broker-{i}.log")
            logs.append(log_path)
            with open(log_path, "ab") as out:
                procs.append(subprocess.Popen(_broker_command(i, os.path.join(root, f"broker-{i}"), etcd.url,
                                                              args.cluster_name, port, args.brokers),
                                              stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        ready = set()
        deadline = time.monotonic() + 120
        while len(ready) < len(procs):
            for i, (proc, log_path) in enumerate(zip(procs, logs)):
                if proc.poll() is not None:
                    raise CliError(f"broker {i + 1} exited with {proc.returncode}; see {log_path}")
                with open(log_path, errors="replace") as f:
                    if "ringlog broker ready on" in f.read():
                        ready.add(i)
            if time.monotonic() > deadline:
                raise CliError(f"the brokers did not become ready within 120 s; see {root}")
            time.sleep(0.2)
        print(f"etcd: {etcd.url}")
        print(f"data and logs: {root}")
        print("bootstrap: " + ",".join(f"127.0.0.1:{p}" for p in ports), flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        failed = next(i for i, p in enumerate(procs) if p.poll() is not None)
        raise CliError(f"broker {failed + 1} exited with {procs[failed].returncode}; see {logs[failed]}")
    except KeyboardInterrupt:
        return 0
    except CliError as exc:
        print(f"ringlog dev-cluster: {exc}", file=sys.stderr)
        return 1
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        etcd.stop()
