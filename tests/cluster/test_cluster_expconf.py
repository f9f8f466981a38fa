"""The offline experiment checks (trial/expconf) against the real 0.38.1 master's ``validateOnly``:
Determined's own expconf test vectors, every bundled experiment, the ``shm_size`` question, and the
project's deliberately stricter rules, verdict by verdict.

A vector's fragment is placed at its field inside a small complete experiment and sent to both.
The vectors come from ``../shared/determined-expconf-cases`` (a fresh clone has none: the vector
test says so and skips; the rest runs anywhere)."""

from __future__ import annotations

import copy
import sys

import pytest
import yaml

from common import REPO_ROOT
from trial.expconf import check_experiment
from trial.expconf.master import PROJECT_RULE

sys.path.insert(0, str(REPO_ROOT / "tests" / "trial"))  # the vectors' loader and placement
from test_trial_expconf_vectors import MISSING, MOUNTS, VECTORS, _place

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

BASE = {"name": "v", "entrypoint": "python3 -c pass", "searcher": {"name": "single", "metric": "x"}}
# Where the master's verdict depends on the cluster, not on the config: the project cannot know.
CLUSTER_STATE = {
    "experiment.yaml::full valid experiment::sane_as::experiment": (
        "names resource pool 'asdf', which this cluster does not have"
    ),
}
# The project refuses what the master accepts, on purpose (each message says so).
STRICTER = {
    "searcher.max_time": {"searcher": {"name": "adaptive_asha", "metric": "x", "max_trials": 2,
                                       "max_time": 0, "time_metric": "batches"}},
    "entrypoint": {"entrypoint": ""},
    "hyperparameters.lr.vals": {"hyperparameters": {"lr": {"type": "categorical", "vals": []}}},
}  # fmt: skip


def master_verdict(session, config) -> str | None:
    """None when the master would create the experiment, else its refusal."""
    from determined.common.api import bindings, errors

    request = bindings.v1CreateExperimentRequest(config=yaml.safe_dump(config), validateOnly=True)
    try:
        session.post("/api/v1/experiments", json=request.to_json(True))
    except errors.APIException as err:
        return str(err)
    return None


def project_verdict(config) -> str | None:
    problems = check_experiment(config)
    return problems[0].line("") if problems else None


def _full(vector) -> dict:
    mount, extra = MOUNTS[vector.schema]
    if not mount:
        return (
            {**BASE, **copy.deepcopy(vector.case)} if isinstance(vector.case, dict) else vector.case
        )
    config = {**copy.deepcopy(BASE), **copy.deepcopy(extra)}
    return _place(config, mount, copy.deepcopy(vector.case))


def test_determineds_own_vectors_get_the_masters_verdict(real_cluster):
    if not VECTORS:
        pytest.skip(MISSING)
    disagreements, agreed = [], 0
    for vector in VECTORS:
        config = _full(vector)
        said_master, said_project = (
            master_verdict(real_cluster.session, config),
            project_verdict(config),
        )
        if (said_master is None) == (said_project is None):
            agreed += 1
        elif vector.id not in CLUSTER_STATE:
            disagreements.append(f"{vector.id}: master {said_master!r}, project {said_project!r}")
    assert disagreements == []
    assert agreed == len(VECTORS) - len(CLUSTER_STATE)
    assert agreed > 150  # both verdicts, many times over (176 of 177 seen)


@pytest.mark.parametrize(
    "path", sorted((REPO_ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_bundled_experiment_is_accepted_by_both(real_cluster, path):
    config = yaml.safe_load(path.read_text())
    assert master_verdict(real_cluster.session, config) is None
    assert project_verdict(config) is None


@pytest.mark.parametrize("shm_size", ["4G", "4GB", "4096M", "4294967296", "4Gi", 4294967296])
def test_shm_size_is_bytes_for_both(real_cluster, shm_size):
    """Settled on the real master: it decodes shm_size as an integer (its schema says otherwise)."""
    config = {**BASE, "resources": {"shm_size": shm_size}}
    said_master, said_project = (
        master_verdict(real_cluster.session, config),
        project_verdict(config),
    )
    if isinstance(shm_size, int):
        assert said_master is None and said_project is None
    else:
        assert said_master is not None and "shm_size" in said_master
        assert said_project is not None and "shm_size: 4294967296" in said_project


@pytest.mark.parametrize("field", sorted(STRICTER))
def test_the_projects_stricter_rules_say_so(real_cluster, field):
    config = {**BASE, **STRICTER[field]}
    assert master_verdict(real_cluster.session, config) is None  # Determined takes it
    said = project_verdict(config)
    assert said is not None and said.startswith(f": {field}:") and PROJECT_RULE in said
