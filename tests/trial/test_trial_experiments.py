"""Experiments are checked against Determined 0.38.1's rules offline: the bundled ones pass, the 0.38
ASHA form passes, and every field a 0.38.1 master would refuse is refused on one line naming it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest

from errors import ConfigError
from trial.expconf import validate_experiment
from trial.settings.hparams import EXPERIMENTS_DIR, load_experiment, training_length

EXPERIMENTS = sorted(EXPERIMENTS_DIR.glob("*.yaml"))
LOCAL = EXPERIMENTS_DIR / "retinanet-local.yaml"  # for `invoke cluster up`; tests/cluster runs it
COCO_1X = [p for p in EXPERIMENTS if p != LOCAL]


def bundled(name: str = "retinanet") -> dict:
    return copy.deepcopy(load_experiment(EXPERIMENTS_DIR / f"{name}.yaml"))


def test_the_bundled_experiments_are_there():
    assert {p.stem for p in EXPERIMENTS} >= {"retinanet", "maskrcnn", "gfl", "retinanet-asha"}


@pytest.mark.parametrize("path", COCO_1X, ids=lambda p: p.name)
def test_bundled_experiment_is_valid_for_determined_038_without_deprecations(path: Path):
    experiment = load_experiment(path)
    assert validate_experiment(experiment, source=str(path)) == []
    assert experiment["resources"]["slots_per_trial"] == 8
    assert experiment["resources"]["shm_size"]  # DataLoader workers need more than 64 MB
    assert experiment["hyperparameters"]["global_batch_size"] == 16
    assert training_length(experiment, experiment["hyperparameters"]) == 90000
    assert {"source", "cache", "dest"} <= set(experiment["data"])
    assert experiment["bind_mounts"][0]["container_path"] in experiment["data"]["cache"]


def test_asha_example_uses_the_038_time_budget():
    experiment = load_experiment(EXPERIMENTS_DIR / "retinanet-asha.yaml")
    searcher = experiment["searcher"]
    assert searcher["name"] == "adaptive_asha" and "max_length" not in searcher
    assert (searcher["time_metric"], searcher["max_time"]) == ("batches", 90000)
    assert experiment["hyperparameters"]["optim_wrapper.optimizer.lr"]["type"] == "log"


def test_asha_with_only_max_length_is_refused_naming_max_time_and_time_metric():
    experiment = bundled("retinanet-asha")
    searcher = experiment["searcher"]
    del searcher["max_time"], searcher["time_metric"]
    searcher["max_length"] = {"batches": 90000}
    with pytest.raises(ConfigError) as err:
        validate_experiment(experiment, source="asha.yaml")
    message = str(err.value)
    assert message.startswith("asha.yaml: searcher.max_time: ")
    assert "max_time and time_metric" in message and "\n" not in message


def test_old_single_searcher_form_still_validates_with_a_notice_per_deprecated_field():
    experiment = bundled()
    experiment["searcher"]["max_length"] = {"batches": 90000}
    experiment["min_validation_period"] = {"batches": 7500}
    notices = validate_experiment(experiment, source="old.yaml")
    assert notices == [
        "old.yaml: searcher.max_length is deprecated in Determined 0.38.1; "
        "set hyperparameters.max_iters instead",
        "old.yaml: min_validation_period is deprecated in Determined 0.38.1; "
        "set hyperparameters.val_interval instead",
    ]


def _set(path: str, value) -> Callable[[dict], None]:
    def mutate(experiment: dict) -> None:
        *parents, leaf = path.split(".")
        node = experiment
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    return mutate


# (mutation, field named in the error, words the error must contain)
BROKEN = {
    "wrong-type": (
        _set("resources.slots_per_trial", "eight"),
        "resources.slots_per_trial",
        "not of type",
    ),
    "shm-size": (_set("resources.shm_size", "lots"), "resources.shm_size", "4294967296"),
    "priority": (_set("resources.priority", 100), "resources.priority", "maximum"),
    "unknown-field": (_set("max_restart", 3), "max_restart", "did you mean 'max_restarts'"),
    "unknown-resource": (
        _set("resources.slot_per_trial", 8),
        "resources.slot_per_trial",
        "slots_per_trial",
    ),
    "negative-restarts": (_set("max_restarts", -1), "max_restarts", "minimum"),
    "bad-searcher": (_set("searcher.name", "exhaustive"), "searcher.name", "adaptive_asha"),
    "removed-searcher": (_set("searcher.name", "adaptive_simple"), "searcher.name", "removed"),
    "no-metric": (_set("searcher.metric", None), "searcher.metric", "is required"),
    "asha-unknown-field": (
        _set("searcher.max_epochs", 3),
        "searcher.max_epochs",
        "is not a field of any searcher",
    ),
    "relative-bind-mount": (
        _set("bind_mounts", [{"host_path": "cache", "container_path": "/c"}]),
        "bind_mounts[0].host_path",
        "must be an absolute path",
    ),
    "env-vars-not-list": (
        _set("environment.environment_variables", "A=1"),
        "environment.environment_variables",
        "",
    ),
    "image-map-key": (
        _set("environment.image", {"cuda11": "x"}),
        "environment.image.cuda11",
        "did you mean 'cuda'",
    ),
    "storage-type": (
        _set("checkpoint_storage", {"type": "ftp"}),
        "checkpoint_storage.type",
        "shared_fs",
    ),
    "storage-field": (
        _set("checkpoint_storage", {"type": "gcs", "bucket": "b", "host_path": "/x"}),
        "checkpoint_storage.host_path",
        "is not a field of gcs checkpoint storage",
    ),
    "incomplete-hparam": (
        _set("hyperparameters.lr", {"type": "log", "minval": -3}),
        "hyperparameters.lr.maxval",
        "is required",
    ),
    "hparam-range": (
        _set("hyperparameters.depth", {"type": "int", "minval": 5, "maxval": 5}),
        "hyperparameters.depth",
        "minval must be less than maxval",
    ),
    "hparam-type": (
        _set("hyperparameters.lr", {"type": "uniform", "minval": 0, "maxval": 1}),
        "hyperparameters.lr.type",
        "categorical",
    ),
    "no-entrypoint": (
        lambda e: e.pop("entrypoint"),
        "entrypoint",
        "determined.launch.torch_distributed",
    ),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_broken_field_is_refused_on_one_line_naming_it(case):
    mutate, field, words = BROKEN[case]
    experiment = bundled()
    mutate(experiment)
    with pytest.raises(ConfigError) as err:
        validate_experiment(experiment, source="broken.yaml")
    message = str(err.value)
    assert message.startswith(f"broken.yaml: {field}: "), message
    assert words in message and "\n" not in message, message


def test_grid_search_needs_a_count_for_ranges():
    experiment = bundled()
    experiment["searcher"] = {"name": "grid", "metric": "bbox_mAP"}
    experiment["hyperparameters"]["wd"] = {"type": "double", "minval": 0.0, "maxval": 1.0}
    with pytest.raises(ConfigError, match=r"hyperparameters\.wd: grid search is in use but count"):
        validate_experiment(experiment, source="grid.yaml")
    experiment["hyperparameters"]["wd"]["count"] = 3
    assert validate_experiment(experiment, source="grid.yaml") == []


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_image_is_a_variant_of_the_image_matrix(path: Path):
    from images.matrix import expand_matrix, load_matrix

    tags = {spec.readable_tag for spec in expand_matrix(load_matrix())}
    image = load_experiment(path)["environment"]["image"]
    image = image if isinstance(image, str) else image["cuda"]
    assert image.split(":", 1)[1] in tags


def test_the_local_cluster_experiment_runs_this_machines_cpu_image_and_disks():
    from images.matrix import expand_matrix, load_matrix, select

    experiment = load_experiment(LOCAL)
    assert validate_experiment(experiment, source=str(LOCAL)) == []
    (cpu,) = select(expand_matrix(load_matrix()), ["cpu"])
    assert experiment["environment"]["image"] == f"mmdet-determined:{cpu.readable_tag}"
    mounts = {m["container_path"]: m for m in experiment["bind_mounts"]}
    assert mounts[experiment["data"]["source"]]["read_only"] is True
    assert any(experiment["data"]["cache"].startswith(f"{path}/") for path in mounts)
    assert experiment["resources"]["slots_per_trial"] == 1
