"""A burst that fills a partition's ring: POST /ingest answers 503 with Retry-After at once
(never holding the caller), everything answered 200 is in the log exactly once, nothing
answered 503 is, and once the burst is over the endpoint accepts again."""
from __future__ import annotations

import json
import threading

import httpx

from ringlog.broker.testing import BrokerThread

from .conftest import Gateway, consume_all, gateway_config

CLIENTS = 8
MAX_REQUESTS = 400  # per client; the burst stops early once some 503s were seen


def test_full_ring_answers_503_and_loses_nothing(tmp_path) -> None:
    # a 1 KiB ring and fsync on every round: requests of ~2 KiB outrun the writer
    config = gateway_config(tmp_path, ring_bytes_per_partition=1024, fsync="always")
    with BrokerThread(config) as b:
        g = Gateway(b)
        g.create_topic("burst")
        accepted: list[int] = []
        refused: list[int] = []
        statuses: list[httpx.Response] = []
        lock = threading.Lock()
        stop = threading.Event()

        def client(n: int) -> None:
            with httpx.Client(base_url=g.url, timeout=30) as http:
                for i in range(MAX_REQUESTS):
                    if stop.is_set():
                        return
                    rid = n * MAX_REQUESTS + i
                    body = "\n".join(json.dumps({"req": rid, "line": j, "pad": "x" * 40}) for j in range(30))
                    r = http.post("/ingest/burst", content=body, headers={"Content-Type": "application/x-ndjson"})
                    with lock:
                        statuses.append(r)
                        if r.status_code == 200:
                            assert r.json()["accepted"] == 30
                            accepted.append(rid)
                        else:
                            refused.append(rid)
                            if len(refused) >= 20:
                                stop.set()

        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert all(not t.is_alive() for t in threads)
        codes = {r.status_code for r in statuses}
        assert codes <= {200, 503}, codes
        full = [r for r in statuses if r.status_code == 503]
        assert full, "the burst never filled the ring"
        for r in full:
            assert r.headers["Retry-After"] == "1"
            body = r.json()
            assert body["accepted"] == 0 and "ring" in body["error"] and "full" in body["error"]
        assert accepted
        # every accepted line is there once; no refused line is
        got = consume_all(g.bootstrap, "burst", 30 * len(accepted))
        seen = [json.loads(m.value()) for m in got]
        assert len(seen) == 30 * len(accepted)
        assert sorted({s["req"] for s in seen}) == sorted(accepted)
        assert sorted((s["req"], s["line"]) for s in seen) == sorted((r, j) for r in accepted for j in range(30))
        # the ring drained: the endpoint accepts again
        r = g.http.post("/ingest/burst", content=b'{"after":1}', headers={"Content-Type": "application/x-ndjson"})
        assert r.status_code == 200
        metrics = g.http.get("/metrics").text
        assert 'ringlog_backpressure_events_total{mode="reject",partition="0",topic="burst"}' in metrics
        g.http.close()
