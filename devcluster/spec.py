"""What a local cluster is (pure): its directories, ports, and the master's configuration."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from errors import ConfigError

DETERMINED_VERSION = "0.38.1"
ADMIN_USER = "admin"
DB_USER = "determined"
DB_NAME = "determined"
# A local image never leaves this machine: the agents must not try to pull it from a registry.
LOCAL_IMAGE_PREFIX = "localhost/"


def default_state_dir() -> Path:
    """Where a cluster keeps its database, logs, sockets and checkpoints.

    ``$MMDET_DET_CLUSTER_DIR``, else ``/var/lib/mmdet-determined/cluster`` for root (PostgreSQL runs
    as the ``postgres`` user there and must be able to reach its data directory), else
    ``~/.local/state/mmdet-determined/cluster``.
    """
    if os.environ.get("MMDET_DET_CLUSTER_DIR"):
        return Path(os.environ["MMDET_DET_CLUSTER_DIR"]).expanduser()
    if os.geteuid() == 0:
        return Path("/var/lib/mmdet-determined/cluster")
    return Path.home() / ".local" / "state" / "mmdet-determined" / "cluster"


@dataclass(frozen=True)
class ClusterSpec:
    """One cluster: ``agents`` agents with ``slots`` CPU slots each, on these ports."""

    state_dir: Path
    master_port: int = 8080
    db_port: int = 5433
    agents: int = 1
    slots: int = 2

    def __post_init__(self) -> None:
        for name in ("master_port", "db_port"):
            port = getattr(self, name)
            if not 1024 <= port <= 65535:
                raise ConfigError(f"--{name.replace('_', '-')} {port}: pick a port in 1024..65535")
        if self.master_port == self.db_port:
            raise ConfigError(f"--master-port and --db-port are both {self.master_port}")
        if not 1 <= self.agents <= 16:
            raise ConfigError(f"--agents {self.agents}: must be 1..16")
        if not 1 <= self.slots <= 64:
            raise ConfigError(f"--slots {self.slots}: must be 1..64")

    @property
    def master_url(self) -> str:
        return f"http://127.0.0.1:{self.master_port}"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "cluster.json"

    @property
    def checkpoint_dir(self) -> Path:
        return self.state_dir / "checkpoints"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pg_dir(self) -> Path:
        """PostgreSQL's data directory. As root it lives under /var/lib (the ``postgres`` user
        cannot enter e.g. /root or pytest's 0700 temp dirs), named after the state dir."""
        if os.geteuid() != 0:
            return self.state_dir / "postgres"
        digest = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:12]
        return Path("/var/lib/mmdet-determined/postgres") / digest

    def agent_id(self, index: int) -> str:
        return f"agent-{index + 1}"

    def agent_dir(self, index: int) -> Path:
        return self.state_dir / self.agent_id(index)


def master_config(spec: ClusterSpec, *, db_password: str, admin_password: str, root: Path) -> dict:
    """The master's YAML configuration (as a dict) for ``spec``.

    ``root`` holds ``static/`` (migrations, entrypoint scripts) from Determined's module.
    ``launch_error: false``: an experiment created before an agent registers waits instead of
    failing with "slots requested exceeds cluster capacity" (Determined's own CI sets it too).
    """
    return {
        "port": spec.master_port,
        "root": str(root),
        "db": {
            "host": "127.0.0.1",
            "port": spec.db_port,
            "user": DB_USER,
            "password": db_password,
            "name": DB_NAME,
        },
        "cache": {"cache_dir": str(spec.state_dir / "master-cache")},
        "checkpoint_storage": {
            "type": "shared_fs",
            "host_path": str(spec.checkpoint_dir),
            "storage_path": "determined-checkpoints",
        },
        "launch_error": False,
        "telemetry": {"enabled": False},
        "security": {"initial_user_password": admin_password},
        "resource_manager": {
            "type": "agent",
            "default_aux_resource_pool": "default",
            "default_compute_resource_pool": "default",
        },
        "resource_pools": [{"pool_name": "default"}],
        # Host networking: a container reaches the master at 127.0.0.1, and nothing ever touches
        # podman's default bridge (10.88.0.0/16).
        "task_container_defaults": {
            "network_mode": "host",
            "environment_variables": ["DET_SKIP_PIP_INSTALL=1"],
        },
        "log": {"level": "info", "color": False},
    }


def agent_argv(spec: ClusterSpec, index: int, agent_binary: Path) -> list[str]:
    """The command line of agent ``index`` (its Docker socket comes through ``DOCKER_HOST``)."""
    return [
        str(agent_binary),
        "run",
        "--master-host=127.0.0.1",
        f"--master-port={spec.master_port}",
        f"--agent-id={spec.agent_id(index)}",
        f"--artificial-slots={spec.slots}",
        "--container-master-host=127.0.0.1",
        f"--container-master-port={spec.master_port}",
        "--log-level=info",
        "--log-color=false",
    ]
