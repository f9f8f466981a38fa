"""SearcherStop: the searcher's decision reaches the trial (the 0.38.1 master does not send it;
tests/cluster's ASHA test shows it on a real master). Here the master's answer is a function, to
test the watcher and its answers without a master."""

from __future__ import annotations

import threading
import time

import pytest

from trial.engine.searcher_stop import SearcherStop


class Inner:
    def __init__(self) -> None:
        self.preempt = False
        self.acked = 0
        self.closed = False

    def should_preempt(self, auto_ack: bool = True) -> bool:
        return self.preempt

    def acknowledge_preemption_signal(self) -> None:
        self.acked += 1

    def close(self) -> None:
        self.closed = True


def _until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def test_stops_once_the_searcher_decided_and_then_asks_no_more():
    state, asked = ["STATE_RUNNING"], []
    decided = threading.Event()

    def trial_state() -> str:
        asked.append(state[0])
        if len(asked) == 3:
            state[0] = "STATE_STOPPING_COMPLETED"
            decided.set()
        return state[0]

    inner = Inner()
    stop = SearcherStop(inner, trial_state, interval_s=0.01)
    assert not stop.should_preempt()  # a step never waits for the master's answer
    assert decided.wait(5) and _until(lambda: stop.should_preempt())
    assert stop.stopped
    seen = len(asked)
    time.sleep(0.1)
    assert len(asked) == seen  # decided: no more questions
    stop.close()
    assert inner.closed


def test_a_preemption_still_wins_and_a_master_that_does_not_answer_stops_nothing():
    inner, calls = Inner(), []

    def unreachable() -> str:
        calls.append(1)
        raise ConnectionError("master away")

    stop = SearcherStop(inner, unreachable, interval_s=0.01)
    assert _until(lambda: len(calls) >= 3)  # warnings, and the watcher goes on asking
    assert not stop.should_preempt()
    inner.preempt = True
    assert stop.should_preempt()
    stop.acknowledge_preemption_signal()  # the rest of core.preempt passes through
    assert inner.acked == 1
    stop.close()


@pytest.mark.parametrize(
    "state", ["STATE_STOPPING_CANCELED", "STATE_PAUSED", "STATE_ACTIVE", "STATE_STOPPING_ERROR"]
)
def test_canceled_or_paused_is_not_a_searcher_stop(state):
    calls = []
    stop = SearcherStop(Inner(), lambda: calls.append(state) or state, interval_s=0.01)
    assert _until(lambda: len(calls) >= 3)
    assert not stop.should_preempt() and not stop.stopped
    stop.close()


def test_close_ends_the_watcher_without_waiting_for_an_interval():
    stop = SearcherStop(Inner(), lambda: "STATE_RUNNING", interval_s=3600)
    started = time.monotonic()
    stop.close()
    assert time.monotonic() - started < 1.0
