"""``invoke cluster up / status / down`` for real: PostgreSQL, Determined's master and agents built
from its Go module, podman behind the shim. What a user relies on: up reports a working master
with its agents, a second up is fast and changes nothing, down leaves nothing behind, and a taken
port or a missing tool is one line before anything starts."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common import REPO_ROOT as REPO
from common import free_port
from devcluster import master_api, podman
from devcluster.cluster import State
from devcluster.processes import Daemon

INVOKE = [sys.executable, "-m", "invoke"]

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def _cluster(*args: str, state: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*INVOKE, "cluster", *args, "--state-dir", str(state)], cwd=REPO,
                          capture_output=True, text=True, timeout=900, env=env)  # fmt: skip


def _exports(stdout: str) -> dict[str, str]:
    pairs = (line.removeprefix("export ").split("=", 1) for line in stdout.splitlines())
    return dict(p for p in pairs if len(p) == 2)


def _mounts_under(path: Path) -> list[str]:
    return [line for line in Path("/proc/mounts").read_text().splitlines() if str(path) in line]


def test_up_status_down_leaves_nothing_behind(tmp_path):
    state_dir = tmp_path / "cluster"
    ports = ["--master-port", str(free_port()), "--db-port", str(free_port())]
    up = _cluster("up", "--agents", "2", "--slots", "1", *ports, state=state_dir)
    assert up.returncode == 0, up.stderr[-2000:]
    env = _exports(up.stdout)
    assert set(env) == {"DET_MASTER", "DET_USER", "DET_PASS"}
    info = master_api.info(env["DET_MASTER"])
    assert info is not None and info["version"] == "0.38.1"
    session = master_api.login(env["DET_MASTER"], env["DET_USER"], env["DET_PASS"])
    assert sorted((a["id"], a["slots"]) for a in master_api.agents(session)) == [
        ("agent-1", 1), ("agent-2", 1)]  # fmt: skip
    state = State.load(state_dir / "cluster.json")
    pids = {d.name: d.pid for d in state.daemons}
    assert set(pids) == {"master", "agent-1", "agent-2", "podman (agent-1)", "podman (agent-2)",
                         "podman-docker-shim (agent-1)", "podman-docker-shim (agent-2)"}  # fmt: skip
    assert env["DET_PASS"] not in (state_dir / "logs" / "master.log").read_text()

    start = time.monotonic()
    again = _cluster("up", "--agents", "2", "--slots", "1", *ports, state=state_dir)
    assert again.returncode == 0, again.stderr[-2000:]
    assert time.monotonic() - start < 30
    assert {d.name: d.pid for d in State.load(state_dir / "cluster.json").daemons} == pids

    other = _cluster("up", "--agents", "3", *ports, state=state_dir)
    assert other.returncode == 1
    assert other.stderr.strip().splitlines() == [
        f"error: a cluster is already up in {state_dir} with 2 agent(s) x 1 slot(s), master port "
        f"{ports[1]}, db port {ports[3]}; run `invoke cluster down` first, or pass the same options"
    ]
    status = _cluster("status", *ports, state=state_dir)
    assert status.returncode == 0 and _exports(status.stdout) == env

    down = _cluster("down", state=state_dir)
    assert down.returncode == 0, down.stderr[-2000:]
    assert not any(Daemon(d.name, d.pid, d.exe, d.log).alive() for d in state.daemons)
    assert master_api.info(env["DET_MASTER"]) is None
    assert not state_dir.exists() and not Path(state.pg_dir).exists()
    assert _mounts_under(state_dir) == []
    listed = subprocess.run(podman.podman_argv("ps", "-aq", "--filter", f"label={state.label}"),
                            capture_output=True, text=True)  # fmt: skip
    assert listed.stdout.split() == []
    gone = _cluster("status", *ports, state=state_dir)
    assert gone.returncode == 1 and "no cluster in" in gone.stderr
    assert _cluster("down", state=state_dir).returncode == 0  # nothing to do is fine


def test_a_taken_port_is_one_line_and_nothing_starts(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = _cluster("up", "--master-port", str(port), "--db-port", str(free_port()),
                        state=tmp_path / "c")  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: port {port} (the master) is taken by another program: pass --master-port"
    ]
    assert not (tmp_path / "c").exists()


def test_a_missing_tool_names_the_install_step(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("pg_ctl", "initdb", "runuser", "go"):  # everything but podman and runc
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{bin_dir}"}
    proc = _cluster("up", "--master-port", str(free_port()), state=tmp_path / "c", env=env)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: podman not found on PATH; install it with: bash ci/install-system.sh "
        "(Debian: apt-get install podman runc)"
    ]
