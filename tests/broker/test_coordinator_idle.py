"""An idle group coordinator sleeps until its next deadline instead of spinning."""
from __future__ import annotations

import time

from ringlog.broker.config import BrokerConfig
from ringlog.broker.testing import BrokerThread


def test_idle_coordinator_ticks_at_most_once_a_second(tmp_path) -> None:
    with BrokerThread(BrokerConfig(listen_port=0, data_dir=str(tmp_path / "d"))) as b:
        coordinator = b.broker.coordinator
        deadline = time.monotonic() + 10
        while not coordinator.loaded.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        calls = []
        real_tick = coordinator.state.tick

        def counting_tick(now):
            calls.append(now)
            return real_tick(now)

        coordinator.state.tick = counting_tick
        time.sleep(2.5)
        coordinator.state.tick = real_tick
    # MAX_TICK_S is 1 s: two or three ticks in 2.5 s, never thousands
    assert 1 <= len(calls) <= 4, len(calls)
