"""Daemons started by PID and stopped by PID: never by name, never someone else's process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from errors import ProjectError


@dataclass(frozen=True)
class Daemon:
    """A process ``up`` started: its PID, the executable it runs, and its log."""

    name: str
    pid: int
    exe: str
    log: str

    def alive(self) -> bool:
        """True while this PID still runs this executable (a reused PID is not ours)."""
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except (OSError, IndexError):
            return False
        if state in ("Z", "X"):
            return False
        # Empty while the kernel is still loading the program (seen right after Popen returns).
        return cmdline == [b""] or cmdline[0].decode() == self.exe


def start(
    name: str, argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None
) -> Daemon:
    """Start ``argv`` in its own session (Ctrl-C to ``invoke`` does not reach it), output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    return Daemon(name=name, pid=proc.pid, exe=str(argv[0]), log=str(log))


def stop(daemon: Daemon, *, timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s; a daemon already gone is fine."""
    if not daemon.alive():
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(daemon.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(daemon.pid)
            if not daemon.alive():
                return
            time.sleep(0.1)
    raise ProjectError(f"{daemon.name} (pid {daemon.pid}) survived SIGKILL; see {daemon.log}")


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def port_taken(port: int) -> bool:
    """True when something already listens on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for(
    what: str, ready: Callable[[], bool], *, timeout: float, daemon: Daemon | None = None
) -> None:
    """Poll ``ready`` until it is true; fail in one line naming ``what`` (and the daemon's log when
    it died or the time ran out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if daemon is not None and not daemon.alive():
            raise ProjectError(f"{daemon.name} exited while starting; last lines in {daemon.log}")
        time.sleep(0.25)
    where = f"; see {daemon.log}" if daemon is not None else ""
    raise ProjectError(f"{what} not ready after {timeout:.0f} s{where}")
