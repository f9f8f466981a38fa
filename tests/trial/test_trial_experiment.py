"""Experiment YAML -> trial settings, and local resolution of hyperparameter specs."""

from __future__ import annotations

import pytest

from errors import ConfigError
from trial.config import DataPaths
from trial.experiment import load_experiment, local_hparams, searcher_length, trial_settings

DATA = DataPaths("/t.json", "/v.json", "/t/", "/v/")
EXP = {
    "searcher": {"max_length": {"batches": 90000}},
    "min_validation_period": {"batches": 7500},
    "min_checkpoint_period": {"batches": 2500},
}


def test_lengths_and_intervals_come_from_the_experiment():
    s = trial_settings(
        EXP, {"model": "retinanet", "global_batch_size": 16}, data=DATA, work_dir="/w", world_size=8
    )
    assert (s.max_iters, s.val_interval, s.checkpoint_interval, s.batch_size) == (
        90000,
        7500,
        2500,
        2,
    )


def test_hyperparameters_other_than_reserved_become_overrides():
    hp = {"model": "retinanet", "global_batch_size": 16, "optim_wrapper.optimizer.lr": 0.01}
    s = trial_settings(EXP, hp, data=DATA, work_dir="/w", extra_overrides={"a.b": 1})
    assert dict(s.overrides) == {"optim_wrapper.optimizer.lr": 0.01, "a.b": 1}


def test_max_iters_override_caps_the_intervals():
    s = trial_settings(EXP, {"model": "gfl"}, data=DATA, work_dir="/w", max_iters=40)
    assert (s.max_iters, s.val_interval, s.checkpoint_interval) == (40, 40, 40)


@pytest.mark.parametrize(
    ("searcher", "message"),
    [
        ({"max_length": {"epochs": 12}}, "must be in batches"),
        ({"max_length": 0}, "positive number of batches"),
        ({}, "positive number of batches"),
    ],
)
def test_bad_searcher_lengths_are_refused(searcher, message):
    with pytest.raises(ConfigError, match=message):
        searcher_length({"searcher": searcher})


def test_global_batch_must_divide_over_slots():
    with pytest.raises(
        ConfigError, match="global_batch_size 12 must be a positive multiple of the 8 slots"
    ):
        trial_settings(EXP, {"global_batch_size": 12}, data=DATA, work_dir="/w", world_size=8)


def test_local_hparams_resolve_determined_specs():
    hp = {
        "a": 1,
        "b": {"type": "const", "val": "x"},
        "c": {"type": "categorical", "vals": [3, 4]},
        "d": {"type": "int", "minval": 2, "maxval": 8},
        "e": {"type": "log", "base": 10, "minval": -3, "maxval": -1},
        "f": {"g": {"type": "const", "val": 2}},
    }
    assert local_hparams(hp) == {
        "a": 1,
        "b": "x",
        "c": 3,
        "d": 5,
        "e": pytest.approx(0.01),
        "f": {"g": 2},
    }


def test_load_experiment_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("searcher: [unclosed\n")
    with pytest.raises(ConfigError, match=f"experiment config {bad} is not valid YAML"):
        load_experiment(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_experiment(tmp_path / "missing.yaml")
