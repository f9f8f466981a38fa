"""``invoke cluster up|down|status`` (and ``python -m devcluster``): what the user reads."""

from __future__ import annotations

import sys
from pathlib import Path

from devcluster import binaries, cluster
from devcluster.spec import ADMIN_USER, DETERMINED_VERSION, ClusterSpec, default_state_dir
from errors import ConfigError

ACTIONS = ("up", "down", "status", "build")


def run(
    action: str,
    *,
    agents: int = 1,
    slots: int = 2,
    master_port: int = 8080,
    db_port: int = 5433,
    state_dir: str | None = None,
) -> int:
    """Carry out ``action``; returns the exit code (0, or 1 for ``status`` of a cluster not up)."""
    if action not in ACTIONS:
        raise ConfigError(f"unknown action {action!r}; choose one of: {', '.join(ACTIONS)}")
    if action == "build":
        seconds = binaries.ensure_built(_say)
        done = f"built in {seconds:.0f} s" if seconds else "already built"
        _say(f"Determined {DETERMINED_VERSION} master and agent {done}: {binaries.install_dir()}")
        return 0
    folder = Path(state_dir).expanduser().resolve() if state_dir else default_state_dir()
    if action == "down":
        if not cluster.down(folder, log=_say):
            _say(f"no cluster in {folder}; nothing to do")
        return 0
    spec = ClusterSpec(folder, master_port=master_port, db_port=db_port, agents=agents, slots=slots)
    if action == "up":
        _print_report(cluster.up(spec, log=_say), first=True)
        return 0
    report = cluster.status(spec)
    _print_report(report, first=False)
    return 0 if report["up"] else 1


def _say(line: str) -> None:
    """Progress and status for people, on stderr: stdout holds only the shell lines."""
    print(f"[cluster] {line}", file=sys.stderr, flush=True)


def _print_report(report: dict, *, first: bool) -> None:
    if not report.get("daemons"):
        _say(f"no cluster in {report['state_dir']} (start one: invoke cluster up)")
        return
    for daemon in report["daemons"]:
        _say(f"  {daemon['name']:<32} pid {daemon['pid']:<8} "
             f"{'running' if daemon['alive'] else 'NOT RUNNING'}")  # fmt: skip
    _say(f"  {'postgres':<32} {'running' if report['postgres'] else 'NOT RUNNING'}")
    agents = ", ".join(f"{a['id']} ({a['slots']} slots)" for a in report["agents"]) or "none"
    _say(f"master {report['master']}: Determined {report['version'] or 'NOT ANSWERING'}; "
         f"agents: {agents}")  # fmt: skip
    if report["up"] or first:
        print(f"export DET_MASTER={report['master']}")
        print(f"export DET_USER={ADMIN_USER}")
        print(f"export DET_PASS={report['password']}")
        if first:
            _say('use it: eval "$(invoke cluster status)" sets the three above; then `det '
                 "experiment list`, or invoke train retinanet-local --cluster; stop it: invoke cluster "
                 "down")  # fmt: skip
