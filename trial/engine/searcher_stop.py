"""A searcher's stop, which a Determined 0.38.1 master never signals to the running trial.

When ASHA decides a trial is not among the best at a rung, the 0.38.1 master only marks the trial
``STOPPING_COMPLETED`` (``trial.PatchSearcherState``); unlike a pause or a kill, it sends the
allocation no signal (``trial.patchState`` maps only the canceled, killed and errored stopping
states to one), so a Core API trial goes on to its full length. This wrapper of
``core.preempt`` adds what is missing: a thread of the chief reads its own trial's state from the
master every ``interval_s`` seconds, and ``should_preempt`` answers "stop" once the searcher has
decided. The trial then checkpoints and exits 0
as on a preemption, and the master records the trial COMPLETED ("hp search is finished").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("trial")

STOPPED_STATES = ("_STOPPING_COMPLETED", "_COMPLETED")
CHECK_INTERVAL_S = 2.0


class SearcherStop:
    """``should_preempt`` of ``inner``, or True once a watcher thread has read from
    ``trial_state()`` that the searcher stopped the trial (asked every ``interval_s`` seconds,
    off the training loop: a step never waits for the master)."""

    def __init__(
        self, inner: Any, trial_state: Callable[[], str], *, interval_s: float = CHECK_INTERVAL_S
    ) -> None:
        self._inner = inner
        self._trial_state = trial_state
        self._interval_s = interval_s
        self._stopped = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="searcher-stop", daemon=True)
        self._thread.start()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def should_preempt(self, auto_ack: bool = True) -> bool:
        return self._inner.should_preempt(auto_ack) or self._stopped.is_set()

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self._inner.close()

    def _watch(self) -> None:
        while not self._closed.wait(self._interval_s):
            state = self._read_state()
            if state.endswith(STOPPED_STATES):  # STATE_STOPPING_COMPLETED, STATE_COMPLETED
                logger.info("the searcher stopped this trial (trial state %s)", state)
                self._stopped.set()
                return

    def _read_state(self) -> str:
        try:
            return str(self._trial_state())
        except Exception as err:  # the master briefly away: ask again at the next check
            logger.warning("could not read this trial's state from the master: %s", err)
            return ""

    def __getattr__(self, name: str) -> Any:  # acknowledge_preemption_signal, ...
        return getattr(self._inner, name)


def master_trial_state(info: Any) -> Callable[[], str]:
    """Reads this trial's state from the master with the task's own credentials."""
    from determined.common.api import authentication, bindings, certs

    session = authentication.login_from_task(
        master_address=info.master_url, cert=certs.default_load(info.master_url)
    )
    trial_id = info.trial.trial_id

    def state() -> str:
        trial = bindings.get_GetTrial(session, trialId=trial_id).trial
        return getattr(trial.state, "value", str(trial.state))

    return state
