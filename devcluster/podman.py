"""podman as each agent's Docker engine: a service per agent, behind ``podman-docker-shim``.

Seen here (podman 4.3.1, Debian 12): crun fails on this kernel's hybrid cgroups, so runc with the
cgroupfs manager; the sandbox has no CAP_SYS_RESOURCE, so containers get rlimits no higher than
ours (otherwise every start fails with "error setting rlimit type 7"); host networking only (the
master's ``task_container_defaults``): podman's default bridge, 10.88.0.0/16, is never created.
The storage and driver are the image builder's (images.buildah), so the agents run the images that
``invoke build-image`` made.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from devcluster import processes
from devcluster.processes import Daemon
from errors import ProjectError
from images import buildah

INSTALL = "install it with: bash ci/install-system.sh (Debian: apt-get install podman runc)"
CLUSTER_LABEL = "io.mmdet-determined.cluster"


def check_installed() -> None:
    for tool in ("podman", "runc"):
        if shutil.which(tool) is None:
            raise ProjectError(f"{tool} not found on PATH; {INSTALL}")


def containers_conf() -> str:
    """containers.conf for the agents' podman services."""
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 65536)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 32768)
    return (
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        'netns = "host"\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
    )


def podman_env(conf: Path) -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def podman_argv(*args: str) -> list[str]:
    return ["podman", *buildah.storage_opts(), *args]


def start_engine(
    agent_dir: Path, *, shim: Path, label: str, log_dir: Path, record: Callable[[Daemon], None]
) -> None:
    """podman's Docker-compatible service and the shim in front of it, each handed to ``record``
    the moment it starts (so that ``down`` finds it even when the next step fails).

    The agent talks to ``agent_dir/docker.sock`` (the shim), the shim to ``podman.sock``.
    """
    agent_dir.mkdir(parents=True, exist_ok=True)
    conf = agent_dir / "containers.conf"
    conf.write_text(containers_conf())
    podman_sock, docker_sock = agent_dir / "podman.sock", agent_dir / "docker.sock"
    name = agent_dir.name
    service = processes.start(
        f"podman ({name})",
        [
            shutil.which("podman") or "podman",
            *buildah.storage_opts(),
            "system",
            "service",
            "--time=0",
            f"unix://{podman_sock}",
        ],
        log=log_dir / f"podman-{name}.log",
        env=podman_env(conf),
    )
    record(service)
    processes.wait_for(f"podman service for {name}", podman_sock.exists, timeout=30, daemon=service)
    front = processes.start(
        f"podman-docker-shim ({name})",
        [str(shim), f"-listen={docker_sock}", f"-upstream={podman_sock}", f"-label={label}"],
        log=log_dir / f"shim-{name}.log",
    )
    record(front)
    processes.wait_for(f"Docker API for {name}", docker_sock.exists, timeout=10, daemon=front)


def remove_containers(label: str) -> int:
    """Remove every container carrying ``label`` (``KEY=VALUE``); returns how many."""
    if shutil.which("podman") is None:
        return 0
    listed = subprocess.run(
        podman_argv("ps", "-aq", "--filter", f"label={label}"), capture_output=True, text=True
    )
    ids = listed.stdout.split()
    if ids:
        proc = subprocess.run(
            podman_argv("rm", "-f", "-t", "5", *ids), capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise ProjectError(
                f"podman rm of the cluster's containers failed: {proc.stderr.strip()}"
            )
    return len(ids)


def image_present(ref: str) -> bool:
    return subprocess.run(podman_argv("image", "exists", ref), capture_output=True).returncode == 0
