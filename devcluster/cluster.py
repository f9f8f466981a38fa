"""``up``, ``down`` and ``status`` of a local cluster; its truth is ``<state dir>/cluster.json``.

``up`` records every daemon the moment it starts (PID, executable, log), so a failed or interrupted
``up`` can always be taken ``down``. ``down`` stops exactly those PIDs, removes the containers its
agents started (found by the shim's cluster label), the database, and the state directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from devcluster import binaries, master_api, podman, postgres, processes
from devcluster.processes import Daemon
from devcluster.spec import ADMIN_USER, ClusterSpec, agent_argv, master_config
from errors import ProjectError

Log = Callable[[str], None]


@dataclasses.dataclass
class State:
    """What ``up`` started, as written to ``cluster.json`` (mode 0600: it holds the passwords)."""

    spec: dict
    db_password: str
    admin_password: str
    pg_dir: str
    label: str
    daemons: list[Daemon] = dataclasses.field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> State | None:
        if not path.is_file():
            return None
        raw = json.loads(path.read_text())
        raw["daemons"] = [Daemon(**d) for d in raw.get("daemons", [])]
        return cls(**raw)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(dataclasses.asdict(self), out, indent=1)
        os.replace(tmp, path)

    def daemon(self, name: str) -> Daemon | None:
        return next((d for d in self.daemons if d.name == name), None)


def _spec_fields(spec: ClusterSpec) -> dict:
    return {k: v for k, v in dataclasses.asdict(spec).items() if k != "state_dir"}


def up(spec: ClusterSpec, log: Log = print) -> dict:
    """Start (or complete) the cluster; returns what ``status`` returns once the agents are in."""
    started = time.monotonic()
    postgres.check_installed()
    podman.check_installed()
    state = State.load(spec.state_file)
    if state is not None and state.spec != _spec_fields(spec):
        if any(d.alive() for d in state.daemons):
            have = ClusterSpec(spec.state_dir, **state.spec)
            raise ProjectError(
                f"a cluster is already up in {spec.state_dir} with {have.agents} agent(s) x "
                f"{have.slots} slot(s), master port {have.master_port}, db port {have.db_port}; "
                "run `invoke cluster down` first, or pass the same options"
            )
        state.spec = _spec_fields(spec)
    if state is None:
        cluster_id = hashlib.sha256(str(spec.state_dir.resolve()).encode()).hexdigest()[:12]
        state = State(
            spec=_spec_fields(spec),
            db_password=secrets.token_urlsafe(18),
            admin_password=secrets.token_urlsafe(12) + "-A1",  # upper, lower, digit
            pg_dir=str(spec.pg_dir),
            label=f"{podman.CLUSTER_LABEL}={cluster_id}",
        )
    _check_ports(spec, state)
    spec.logs_dir.mkdir(parents=True, exist_ok=True)
    spec.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    state.save(spec.state_file)

    seconds = binaries.ensure_built(log)
    if seconds:
        log(f"built Determined's master and agent in {seconds:.0f} s (cached for the next `up`)")
    _start_postgres(spec, state)
    _start_master(spec, state)
    for index in range(spec.agents):
        _start_agent(spec, state, index)
    report = _wait_for_agents(spec, state)
    log(f"cluster up in {time.monotonic() - started:.0f} s: {spec.agents} agent(s) x "
        f"{spec.slots} CPU slot(s)")  # fmt: skip
    return report


def _check_ports(spec: ClusterSpec, state: State) -> None:
    """Before anything starts: a port that something else holds is one line naming it."""
    master = state.daemon("master")
    ours = {
        spec.db_port: postgres.running(Path(state.pg_dir)),
        spec.master_port: master is not None and master.alive(),
    }
    for port, (what, option) in {spec.db_port: ("PostgreSQL", "--db-port"),
                                 spec.master_port: ("the master", "--master-port")}.items():  # fmt: skip
        if not ours[port] and processes.port_taken(port):
            raise ProjectError(f"port {port} ({what}) is taken by another program: pass {option}")


def _start_postgres(spec: ClusterSpec, state: State) -> None:
    pg_dir = Path(state.pg_dir)
    if postgres.running(pg_dir):
        return
    postgres.init(pg_dir, state.db_password)
    postgres.start(pg_dir, spec.db_port)
    postgres.create_database(spec.db_port, state.db_password)


def _start_master(spec: ClusterSpec, state: State) -> None:
    existing = state.daemon("master")
    if existing is not None and existing.alive():
        return
    config = master_config(
        spec,
        db_password=state.db_password,
        admin_password=state.admin_password,
        root=binaries.master_root(),
    )
    path = spec.state_dir / "master.yaml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(config, out, sort_keys=False)
    master = processes.start(
        "master",
        [str(binaries.binary("determined-master")), "--config-file", str(path)],
        log=spec.logs_dir / "master.log",
    )
    _record(spec, state, master)
    processes.wait_for(
        f"the master on {spec.master_url}",
        lambda: master_api.info(spec.master_url) is not None,
        timeout=180,
        daemon=master,
    )


def _start_agent(spec: ClusterSpec, state: State, index: int) -> None:
    agent_id = spec.agent_id(index)
    existing = state.daemon(agent_id)
    if existing is not None and existing.alive():
        return
    for old in (
        state.daemon(f"podman ({agent_id})"),
        state.daemon(f"podman-docker-shim ({agent_id})"),
    ):
        if old is not None:
            processes.stop(old)
    podman.start_engine(
        spec.agent_dir(index),
        shim=binaries.binary("podman-docker-shim"),
        label=state.label,
        log_dir=spec.logs_dir,
        record=lambda daemon: _record(spec, state, daemon),
    )
    env = {**os.environ, "DOCKER_HOST": f"unix://{spec.agent_dir(index) / 'docker.sock'}"}
    agent = processes.start(
        agent_id,
        agent_argv(spec, index, binaries.binary("determined-agent")),
        log=spec.logs_dir / f"{agent_id}.log",
        env=env,
    )
    _record(spec, state, agent)


def _record(spec: ClusterSpec, state: State, daemon: Daemon) -> None:
    state.daemons = [d for d in state.daemons if d.name != daemon.name] + [daemon]
    state.save(spec.state_file)


def _wait_for_agents(spec: ClusterSpec, state: State) -> dict:
    session = master_api.login(spec.master_url, ADMIN_USER, state.admin_password)
    wanted = {spec.agent_id(i) for i in range(spec.agents)}
    seen: list[dict] = []

    def registered() -> bool:
        seen[:] = master_api.agents(session)
        return wanted <= {a["id"] for a in seen}

    processes.wait_for(f"agents {sorted(wanted)} to register", registered, timeout=60)
    return status(spec)


def status(spec: ClusterSpec) -> dict:
    """What runs: each daemon (alive or not), the master's version, the registered agents."""
    state = State.load(spec.state_file)
    if state is None:
        return {"state_dir": str(spec.state_dir), "up": False, "daemons": []}
    info = master_api.info(spec.master_url)
    report = {
        "state_dir": str(spec.state_dir),
        "master": spec.master_url,
        "user": ADMIN_USER,
        "password": state.admin_password,
        "version": info and info.get("version"),
        "postgres": postgres.running(Path(state.pg_dir)),
        "daemons": [{"name": d.name, "pid": d.pid, "alive": d.alive()} for d in state.daemons],
        "agents": [],
    }
    if info is not None:
        try:
            session = master_api.login(spec.master_url, ADMIN_USER, state.admin_password)
            report["agents"] = master_api.agents(session)
        except ProjectError:
            pass
    report["up"] = bool(info) and all(d["alive"] for d in report["daemons"])
    return report


def down(state_dir: Path, log: Log = print) -> bool:
    """Stop everything ``up`` started and remove its containers, database and state dir.

    Returns False when there was no cluster in ``state_dir``.
    """
    spec_file = state_dir / "cluster.json"
    state = State.load(spec_file)
    if state is None:
        return False
    # Agents first (they would start containers), then their containers, the engines, the master.
    agents = [d for d in state.daemons if d.name.startswith("agent-")]
    for daemon in agents:
        processes.stop(daemon)
    removed = podman.remove_containers(state.label)
    if removed:
        log(f"removed {removed} container(s) of the cluster")
    rest = [d for d in state.daemons if d not in agents]
    for daemon in sorted(rest, key=lambda d: d.name == "master"):
        processes.stop(daemon)
    pg_dir = Path(state.pg_dir)
    postgres.stop(pg_dir)
    shutil.rmtree(pg_dir, ignore_errors=True)
    shutil.rmtree(state_dir, ignore_errors=True)
    log(
        f"cluster down: stopped {len(state.daemons)} process(es) and PostgreSQL, removed {state_dir}"
    )
    return True
