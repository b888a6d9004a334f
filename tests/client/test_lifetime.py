"""What leaves `async with open_producer/open_consumer/open_admin`: plain exceptions (not the
ExceptionGroup of the client's nursery), the block's own exception, delivery failures of the
exit flush, and cancellation."""
from __future__ import annotations

import logging

import pytest
import trio

from ringlog.broker.testing import BrokerThread
from ringlog.client import NewTopic, NoBrokersAvailable, open_admin, open_consumer, open_producer
from ringlog.client._lifetime import lone_error
from ringlog.client.errors import MessageTooLargeError, RequestTimedOutError, TopicAlreadyExistsError

from .helpers import all_tasks, closed_port, topic_name

OPENERS = {
    "producer": lambda b, **kw: open_producer(b, **kw),
    "consumer": lambda b, **kw: open_consumer(b, **kw),
    "admin": lambda b, **kw: open_admin(b, **kw),
}


@pytest.fixture
def own_broker(tmp_path):
    """A broker of this test alone, so the test can stop it."""
    b = BrokerThread(data_dir=str(tmp_path / "data")).start()
    try:
        yield b
    finally:
        b.stop()


async def test_error_from_the_block_is_plain(bootstrap):
    topic = topic_name("exists")
    async with open_admin(bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    # plain `except`, as a caller writes it
    caught = None
    try:
        async with open_admin(bootstrap) as admin:
            await admin.create_topics([NewTopic(topic, 1, 1)])
    except TopicAlreadyExistsError as exc:
        caught = exc
    assert caught is not None and caught.code == 36
    assert not isinstance(caught.__context__, BaseExceptionGroup)
    with pytest.raises(TopicAlreadyExistsError):
        async with open_admin(bootstrap) as admin:
            await admin.create_topics([NewTopic(topic, 1, 1)])


@pytest.mark.parametrize("kind", sorted(OPENERS))
async def test_no_broker_at_bootstrap_is_plain(kind):
    before = len(all_tasks())
    with trio.fail_after(20):
        with pytest.raises(NoBrokersAvailable):
            async with OPENERS[kind](f"127.0.0.1:{closed_port()}", retry_backoff_ms=10):
                pytest.fail("entered the block without a broker")
    assert len(all_tasks()) == before


@pytest.mark.parametrize("kind", sorted(OPENERS))
async def test_the_blocks_exception_comes_out_as_raised(ringlog_bootstrap, kind):
    raised = ValueError("from the block")
    with pytest.raises(ValueError) as info:
        async with OPENERS[kind](ringlog_bootstrap):
            raise raised
    assert info.value is raised
    # the traceback still reaches the line that raised it
    assert info.traceback[-1].name == "test_the_blocks_exception_comes_out_as_raised"


@pytest.mark.parametrize("kind", sorted(OPENERS))
async def test_cancelled_in_the_blocks_last_line_is_delivered(ringlog_bootstrap, kind):
    # The scope is cancelled with no checkpoint left in the block, so the exit is where the
    # cancellation must surface; a swallowed Cancelled lets the next line run.
    after_exit = False
    with trio.CancelScope() as scope:
        async with OPENERS[kind](ringlog_bootstrap):
            scope.cancel()
        after_exit = True
    assert scope.cancelled_caught
    assert not after_exit


@pytest.mark.parametrize("kind", sorted(OPENERS))
async def test_cancelled_while_waiting_in_the_block(ringlog_bootstrap, kind):
    before = len(all_tasks())
    after_exit = False
    with trio.move_on_after(0.3) as scope:
        async with OPENERS[kind](ringlog_bootstrap):
            await trio.sleep_forever()
        after_exit = True
    assert scope.cancelled_caught and not after_exit
    assert len(all_tasks()) == before


async def test_cancelled_during_the_exit_flush(own_broker):
    topic = topic_name("exitcancel")
    async with open_admin(own_broker.bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    after_exit = False
    with trio.move_on_after(1) as scope:
        # linger holds the record until the exit flush, which then waits for a broker that is gone
        async with open_producer(own_broker.bootstrap, linger_ms=60_000, retry_backoff_ms=20) as p:
            await p.send(topic, b"never delivered")
            await trio.to_thread.run_sync(own_broker.stop)
        after_exit = True
    assert scope.cancelled_caught and not after_exit


async def test_exit_flush_raises_a_refused_record(ringlog_bootstrap):
    topic = topic_name("refused")
    async with open_admin(ringlog_bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 1, 1, configs={"max.message.bytes": "1024"})])
    with pytest.raises(MessageTooLargeError):
        async with open_producer(ringlog_bootstrap) as p:
            await p.send(topic, b"x" * 4000)  # queued; only the exit flush finds out


async def test_exit_flush_raises_when_the_broker_is_gone(own_broker):
    topic = topic_name("gone")
    async with open_admin(own_broker.bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    with trio.fail_after(20):
        with pytest.raises(RequestTimedOutError):
            async with open_producer(own_broker.bootstrap, linger_ms=60_000, delivery_timeout_ms=1000,
                                     retry_backoff_ms=20) as p:
                handle = await p.send(topic, b"queued")
                await trio.to_thread.run_sync(own_broker.stop)
    # the handle says the same
    with pytest.raises(RequestTimedOutError):
        handle.result()


async def test_exit_flush_does_not_raise_errors_already_seen(ringlog_bootstrap):
    topic = topic_name("seen")
    async with open_admin(ringlog_bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 1, 1, configs={"max.message.bytes": "1024"})])
    async with open_producer(ringlog_bootstrap) as p:
        with pytest.raises(MessageTooLargeError):
            await p.send_and_wait(topic, b"x" * 4000)
        assert (await p.send_and_wait(topic, b"small")).offset >= 0


async def test_commit_failing_on_close_is_logged(own_broker, caplog):
    topic = topic_name("commitgone")
    async with open_admin(own_broker.bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    async with open_producer(own_broker.bootstrap) as p:
        await p.send_and_wait(topic, b"one")
    caplog.set_level(logging.WARNING, logger="ringlog.client.consumer")
    with trio.fail_after(30):
        async with open_consumer(own_broker.bootstrap, group_id=topic_name("g"), auto_offset_reset="earliest",
                                 retry_backoff_ms=20, heartbeat_interval_ms=200) as c:
            c.subscribe([topic])
            await c.getone()
            await trio.to_thread.run_sync(own_broker.stop)
    assert any("commit on close" in r.getMessage() for r in caplog.records if r.name == "ringlog.client.consumer")


async def _a_cancelled() -> trio.Cancelled:
    with trio.CancelScope() as scope:
        scope.cancel()
        try:
            await trio.lowlevel.checkpoint()
        except trio.Cancelled as exc:
            return exc
    raise AssertionError("not cancelled")


async def test_lone_error_keeps_real_groups():
    a, b = ValueError("a"), KeyError("b")
    cancelled = await _a_cancelled()
    assert lone_error(ExceptionGroup("g", [a])) is a
    assert lone_error(BaseExceptionGroup("g", [a, cancelled])) is a
    assert lone_error(BaseExceptionGroup("g", [BaseExceptionGroup("inner", [cancelled]), a])) is a
    assert lone_error(ExceptionGroup("g", [a, b])) is None
    assert lone_error(BaseExceptionGroup("g", [cancelled])) is None
    # a group the block raised stays that group
    inner = ExceptionGroup("from the block", [a, b])
    assert lone_error(ExceptionGroup("g", [inner])) is inner
