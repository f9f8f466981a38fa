"""Every bundled experiment validates against Determined's own schema; broken ones are named."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from errors import ConfigError
from trial.expconf import validate_experiment
from trial.experiment import EXPERIMENTS_DIR, load_experiment, searcher_length

EXPERIMENTS = sorted(EXPERIMENTS_DIR.glob("*.yaml"))


def test_the_bundled_experiments_are_there():
    assert {p.stem for p in EXPERIMENTS} >= {"retinanet", "maskrcnn", "gfl", "retinanet-asha"}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_validates_with_determined_schema(path: Path):
    experiment = load_experiment(path)
    validate_experiment(experiment, source=str(path))
    assert experiment["resources"]["slots_per_trial"] == 8
    assert experiment["hyperparameters"]["global_batch_size"] == 16
    assert searcher_length(experiment) == 90000
    assert {"source", "cache", "dest"} <= set(experiment["data"])
    assert experiment["bind_mounts"][0]["container_path"] in experiment["data"]["cache"]


def test_asha_example_is_adaptive():
    experiment = load_experiment(EXPERIMENTS_DIR / "retinanet-asha.yaml")
    assert experiment["searcher"]["name"] == "adaptive_asha"
    assert experiment["hyperparameters"]["optim_wrapper.optimizer.lr"]["type"] == "log"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: e["resources"].__setitem__("slots_per_trial", "eight"), "slots_per_trial"),
        (
            lambda e: e["hyperparameters"].__setitem__("lr", {"type": "log", "minval": -3}),
            "hyperparameters",
        ),
        (lambda e: e.__setitem__("max_restart", 3), "max_restart"),
        (lambda e: e["searcher"].__setitem__("name", "exhaustive"), "searcher"),
    ],
    ids=["wrong-type", "incomplete-hparam", "unknown-field", "bad-searcher"],
)
def test_broken_experiment_is_rejected_naming_the_field(mutate, field):
    experiment = copy.deepcopy(load_experiment(EXPERIMENTS_DIR / "retinanet.yaml"))
    mutate(experiment)
    with pytest.raises(ConfigError, match=rf"^broken\.yaml: .*{field}"):
        validate_experiment(experiment, source="broken.yaml")


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_image_is_a_variant_of_the_image_matrix(path: Path):
    from images.matrix import expand_matrix, load_matrix

    tags = {spec.readable_tag for spec in expand_matrix(load_matrix())}
    image = load_experiment(path)["environment"]["image"]["cuda"]
    assert image.split(":", 1)[1] in tags
