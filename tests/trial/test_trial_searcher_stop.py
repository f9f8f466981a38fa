"""SearcherStop: the searcher's decision reaches the trial (the 0.38.1 master does not send it;
tests/cluster's ASHA test shows it on a real master). Here the master's answer and the clock are
stand-ins, to test the throttle and the answers without waiting."""

from __future__ import annotations

from trial.engine.searcher_stop import SearcherStop


class Inner:
    def __init__(self) -> None:
        self.preempt = False
        self.acked = 0

    def should_preempt(self, auto_ack: bool = True) -> bool:
        return self.preempt

    def acknowledge_preemption_signal(self) -> None:
        self.acked += 1


def test_asks_the_master_at_most_every_interval_and_stops_once_the_searcher_decided():
    now, asked, state = [0.0], [], ["STATE_RUNNING"]

    def trial_state() -> str:
        asked.append(now[0])
        return state[0]

    stop = SearcherStop(Inner(), trial_state, interval_s=10, clock=lambda: now[0])
    for t in (1, 5, 9.9):
        now[0] = t
        assert not stop.should_preempt()
    assert asked == []  # every step asks; the master is asked only every 10 s
    now[0] = 10
    assert not stop.should_preempt() and asked == [10]
    state[0] = "STATE_STOPPING_COMPLETED"
    now[0] = 15
    assert not stop.should_preempt() and asked == [10]
    now[0] = 20
    assert stop.should_preempt() and stop.stopped
    now[0] = 40
    assert stop.should_preempt() and asked == [10, 20]  # decided: no more questions


def test_a_preemption_still_wins_and_a_master_that_does_not_answer_stops_nothing():
    inner = Inner()

    def unreachable() -> str:
        raise ConnectionError("master away")

    stop = SearcherStop(inner, unreachable, interval_s=0)
    assert not stop.should_preempt()  # one warning, training goes on
    inner.preempt = True
    assert stop.should_preempt()
    stop.acknowledge_preemption_signal()  # the rest of core.preempt passes through
    assert inner.acked == 1


def test_canceled_or_paused_is_not_a_searcher_stop():
    for state in (
        "STATE_STOPPING_CANCELED",
        "STATE_PAUSED",
        "STATE_ACTIVE",
        "STATE_STOPPING_ERROR",
    ):
        assert not SearcherStop(Inner(), lambda s=state: s, interval_s=0).should_preempt()
