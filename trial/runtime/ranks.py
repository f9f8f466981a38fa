"""``python -m trial --local --nproc N``: N ranks on this machine through torch's own launcher.

The ranks run ``python -m torch.distributed.run --standalone --nproc-per-node N -m -- trial --local
...``; each builds Determined's DistributedContext from torch's environment, as on a cluster. This
process supervises the launcher. torch's launcher treats SIGTERM/SIGINT as fatal (it kills the
ranks and exits non-zero), so it runs in its own session and a signal here becomes a preemption
request instead: a marker file the ranks poll every step and agree on, after which every rank
checkpoints and stops and the launcher exits 0. A second signal (more than a second later: a
terminal's Ctrl-C may also arrive forwarded by a parent) goes to torch's launcher, which stops the
ranks (SIGTERM, then SIGKILL after its grace period) and exits non-zero.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common import free_ports

logger = logging.getLogger("trial")

PREEMPT_REQUEST = "preempt.request"
DUPLICATE_SIGNAL_S = 1.0
_PR_SET_PDEATHSIG = 1
# determined.constants reads these at import: the ports of the chief's ZMQ broadcast server.
DET_PORT_VARS = ("INTER_TRAIN_PROCESS_COMM_PORT_1", "INTER_TRAIN_PROCESS_COMM_PORT_2")


def preempt_request_file(work_dir: str | Path) -> Path:
    """The marker whose existence asks the local ranks to checkpoint and stop."""
    return Path(work_dir).resolve() / PREEMPT_REQUEST


def torchrun_argv(
    *, nproc: int, nnodes: int = 1, node_rank: int = 0, master: str = "", port: int = 0
) -> list[str]:
    """torch's launcher (``python -m torch.distributed.run``) for ``nproc`` ranks per node, up to
    the program it runs: one node gets a private rendezvous on a free local port
    (``--standalone``); several nodes meet at ``master:port`` (node ``node_rank``)."""
    argv = [sys.executable, "-m", "torch.distributed.run"]
    if nnodes == 1:
        argv.append("--standalone")
    else:
        argv += ["--nnodes", str(nnodes), "--node-rank", str(node_rank)]
        argv += ["--master-addr", master, "--master-port", str(port)]
    return [*argv, "--nproc-per-node", str(nproc)]


def ranks_command(trial_args: Sequence[str], *, nproc: int) -> list[str]:
    """torch's launcher running ``python -m trial <trial_args>`` as ``nproc`` local ranks."""
    # "--": the trial's options after it are never taken (or prefix-matched) as torch's
    return [*torchrun_argv(nproc=nproc), "-m", "--", "trial", *trial_args]


def run_ranks(trial_args: Sequence[str], *, nproc: int, work_dir: str | Path) -> int:
    """Run the ranks to the end; return the launcher's exit code (0: finished or preempted)."""
    request = preempt_request_file(work_dir)
    request.parent.mkdir(parents=True, exist_ok=True)
    request.unlink(missing_ok=True)
    try:
        return run_forwarding_signals(
            ranks_command(trial_args, nproc=nproc),
            relay=lambda proc: _SignalRelay(proc, request),
            # OMP_NUM_THREADS: what torch's launcher sets for each rank anyway, minus its banner
            env={**free_det_ports(), "OMP_NUM_THREADS": "1", **os.environ},
            preexec_fn=_die_with_parent,
        )
    finally:
        request.unlink(missing_ok=True)


def run_forwarding_signals(
    command: Sequence[str],
    *,
    relay: Callable[[subprocess.Popen], Callable[[int, Any], None]] | None = None,
    **popen: Any,
) -> int:
    """Run ``command`` in its own session, pass SIGINT/SIGTERM on to it, wait, return its exit code.

    Its own session: a terminal's Ctrl-C reaches only this process, which forwards it once, so the
    child sees exactly one signal (checkpoint and stop) and is never killed mid-checkpoint or
    orphaned. ``relay(proc)`` may supply another handler (the ranks' preemption request). A killed
    child's code is reported the shell way, 128 + signal number.
    """
    proc = subprocess.Popen(list(command), start_new_session=True, **popen)

    def forward(signum: int, _frame: Any) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    handler = relay(proc) if relay else forward
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return 128 - code if code < 0 else code


class _SignalRelay:
    """First SIGTERM/SIGINT: ask the ranks to preempt. A later one: the launcher stops them."""

    def __init__(self, proc: subprocess.Popen, request: Path) -> None:
        self._proc = proc
        self._request = request
        self._first: float | None = None

    def __call__(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        now = time.monotonic()
        if self._first is None:
            self._first = now
            self._request.touch()
            logger.warning("received %s: every rank checkpoints and stops at the next step", name)
        elif now - self._first > DUPLICATE_SIGNAL_S and self._proc.poll() is None:
            logger.warning("received %s again: torch's launcher stops the ranks now", name)
            self._proc.send_signal(signal.SIGTERM)


def free_det_ports() -> dict[str, str]:
    """Free ports for Determined's chief broadcast server (default 12360/12362, fixed), so two
    local multi-rank runs on one machine do not collide. An explicit environment wins."""
    ports = free_ports(len(DET_PORT_VARS))
    return {var: str(port) for var, port in zip(DET_PORT_VARS, ports, strict=True)}


def _die_with_parent() -> None:
    """In the launcher's process: get SIGTERM if this supervisor dies (Linux), no orphaned ranks."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
