"""A client whose broker goes away says so on its logger (rate-limited), and carries on when the
broker is back."""
from __future__ import annotations

import logging

import trio

from ringlog.broker.testing import BrokerThread
from ringlog.client import NewTopic, NoBrokersAvailable, open_admin, open_consumer, open_producer

from .helpers import closed_port, topic_name, wait_until


def _records(caplog, level: int, port: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == "ringlog.client.consumer" and r.levelno == level and f":{port} " in r.getMessage()]


async def test_consumer_warns_when_its_broker_is_gone_and_recovers(tmp_path, caplog):
    data_dir = str(tmp_path / "data")
    broker = BrokerThread(data_dir=data_dir).start()
    port = broker.port
    topic = topic_name("gone")
    try:
        async with open_admin(broker.bootstrap) as admin:
            await admin.create_topics([NewTopic(topic, 1, 1)])
        async with open_producer(broker.bootstrap) as p:
            await p.send_and_wait(topic, b"before")
        caplog.set_level(logging.DEBUG, logger="ringlog.client.consumer")
        async with open_consumer(broker.bootstrap, auto_offset_reset="earliest", retry_backoff_ms=50,
                                 fetch_max_wait_ms=100) as c:
            c.assign([(topic, 0)])
            with trio.fail_after(10):
                assert (await c.getone()).value == b"before"
            assert not _records(caplog, logging.WARNING, port)

            await trio.to_thread.run_sync(broker.stop)
            # said within seconds, while the application just waits for records
            await wait_until(lambda: _records(caplog, logging.WARNING, port), 5, "a warning about the broker")
            warning = _records(caplog, logging.WARNING, port)[0]
            assert "cannot reach broker" in warning.getMessage()
            # every further attempt is only DEBUG: one warning for many failed attempts
            await wait_until(lambda: len(_records(caplog, logging.DEBUG, port)) >= 10, 10, "ten reconnect attempts")
            assert len(_records(caplog, logging.WARNING, port)) == 1

            # the broker is back on the same port: the consumer reconnects and reads on
            broker = BrokerThread(data_dir=data_dir, listen_port=port).start()
            async with open_producer(broker.bootstrap) as p:
                await p.send_and_wait(topic, b"after")
            with trio.fail_after(20):
                assert (await c.getone()).value == b"after"
            assert _records(caplog, logging.INFO, port), "no line saying the broker is reachable again"
    finally:
        broker.stop()


async def test_nothing_is_logged_above_debug_for_a_failed_bootstrap(caplog):
    # NoBrokersAvailable says it; a warning as well would be a second line for the same thing
    # (the ringlog CLI prints exactly one).
    caplog.set_level(logging.DEBUG, logger="ringlog.client")
    port = closed_port()
    try:
        async with open_consumer(f"127.0.0.1:{port}", retry_backoff_ms=10):
            raise AssertionError("entered without a broker")
    except NoBrokersAvailable:
        pass
    mine = [r for r in caplog.records if r.name.startswith("ringlog.client")]
    assert mine and all(r.levelno == logging.DEBUG for r in mine)
