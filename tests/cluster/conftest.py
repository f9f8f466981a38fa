"""A real Determined 0.38.1 cluster for the tests in this folder: ``invoke cluster up`` in a temp
state dir on free ports (one agent, two CPU slots), taken ``down`` at the end of the session.

The agents run the project's cpu image, as ``invoke build-image --variant cpu`` builds it; a
session without it fails at once with the command that builds it (CI's cluster stage builds it
first)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_helpers import Cluster, cluster_cli, free_port, local_image

from devcluster import master_api, podman
from staging.testing.servers import environment


@pytest.fixture(scope="session")
def cpu_image() -> str:
    ref = local_image()
    if not podman.image_present(ref):
        pytest.fail(
            f"{ref} is not built; build it first: invoke build-image --variant cpu --wheelhouse auto",
            pytrace=False,
        )
    return ref


@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory, cpu_image) -> Iterator[Cluster]:
    state_dir = tmp_path_factory.mktemp("realcluster") / "cluster"
    args = ["--agents", "1", "--slots", "2", "--master-port", str(free_port()),
            "--db-port", str(free_port())]  # fmt: skip
    up = cluster_cli("up", *args, state=state_dir)
    if up.returncode != 0:
        cluster_cli("down", state=state_dir)
        pytest.fail(f"invoke cluster up failed: {up.stderr[-1500:]}", pytrace=False)
    env = dict(
        line.removeprefix("export ").split("=", 1)
        for line in up.stdout.splitlines()
        if line.startswith("export ")
    )
    session = master_api.login(env["DET_MASTER"], env["DET_USER"], env["DET_PASS"])
    cluster = Cluster(
        master=env["DET_MASTER"], user=env["DET_USER"], password=env["DET_PASS"],
        state_dir=state_dir, args=args, session=session, image=cpu_image,
    )  # fmt: skip
    try:
        with environment(env):  # `invoke train --cluster` logs in with DET_USER / DET_PASS
            yield cluster
    finally:
        down = cluster_cli("down", state=state_dir)
        assert down.returncode == 0, down.stderr[-1500:]


@pytest.fixture(scope="session")
def cluster_data(coco_sample: Path) -> Path:
    """The COCO sample the trials stage (bind-mounted read-only into their containers)."""
    return coco_sample.resolve()
