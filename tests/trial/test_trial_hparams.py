"""Experiment YAML -> trial settings, and local resolution of hyperparameter specs."""

from __future__ import annotations

import pytest

from errors import ConfigError
from trial.settings.config import DataPaths
from trial.settings.hparams import load_experiment, local_hparams, training_length, trial_settings

DATA = DataPaths("/t.json", "/v.json", "/t/", "/v/")
EXP = {"searcher": {"name": "single", "metric": "bbox_mAP"}}
HP = {"model": "retinanet", "max_iters": 90000, "val_interval": 7500, "checkpoint_interval": 2500}
OLD_EXP = {  # the pre-0.38 form: still read, deprecated
    "searcher": {"max_length": {"batches": 90000}},
    "min_validation_period": {"batches": 7500},
    "min_checkpoint_period": {"batches": 2500},
}


def test_lengths_and_intervals_come_from_the_hyperparameters():
    s = trial_settings(EXP, {**HP, "global_batch_size": 16}, data=DATA, work_dir="/w", world_size=8)
    assert (s.max_iters, s.val_interval, s.checkpoint_interval, s.batch_size) == (
        90000,
        7500,
        2500,
        2,
    )


def test_the_deprecated_searcher_length_and_periods_still_work():
    s = trial_settings(OLD_EXP, {"model": "retinanet"}, data=DATA, work_dir="/w")
    assert (s.max_iters, s.val_interval, s.checkpoint_interval) == (90000, 7500, 2500)


def test_hyperparameters_win_over_the_deprecated_fields():
    s = trial_settings(OLD_EXP, {"max_iters": 100, "val_interval": 50}, data=DATA, work_dir="/w")
    assert (s.max_iters, s.val_interval, s.checkpoint_interval) == (100, 50, 100)  # 2500, capped


def test_asha_trains_for_max_time_batches_unless_max_iters_is_set():
    asha = {"searcher": {"name": "adaptive_asha", "time_metric": "batches", "max_time": 3000}}
    assert training_length(asha, {}) == 3000
    assert training_length(asha, {"max_iters": 1000}) == 1000
    epochs = {"searcher": {"name": "adaptive_asha", "time_metric": "epochs", "max_time": 12}}
    with pytest.raises(ConfigError, match=r"set hyperparameters\.max_iters"):
        training_length(epochs, {})


def test_reserved_hyperparameters_do_not_become_overrides():
    hp = {**HP, "global_batch_size": 16, "optim_wrapper.optimizer.lr": 0.01}
    s = trial_settings(EXP, hp, data=DATA, work_dir="/w", extra_overrides={"a.b": 1})
    assert dict(s.overrides) == {"optim_wrapper.optimizer.lr": 0.01, "a.b": 1}


def test_explicit_overrides_win_over_hyperparameters_at_any_depth():
    hp = {**HP, "optim_wrapper.optimizer": {"type": "AdamW", "lr": 5e-4}, "x.y": 1}
    s = trial_settings(
        EXP,
        hp,
        data=DATA,
        work_dir="/w",
        extra_overrides={"optim_wrapper.optimizer.lr": 1e-3, "x": 2},
    )
    assert dict(s.overrides) == {
        "optim_wrapper.optimizer": {"type": "AdamW", "lr": 5e-4},
        "optim_wrapper.optimizer.lr": 1e-3,
        "x": 2,  # replaces x.y
    }


def test_max_iters_override_caps_the_intervals():
    s = trial_settings(EXP, {**HP, "model": "gfl"}, data=DATA, work_dir="/w", max_iters=40)
    assert (s.max_iters, s.val_interval, s.checkpoint_interval) == (40, 40, 40)


@pytest.mark.parametrize(
    ("experiment", "hparams", "message"),
    [
        ({"searcher": {"max_length": {"epochs": 12}}}, {}, "must be in batches"),
        ({"searcher": {"max_length": 0}}, {}, "searcher.max_length must be a positive"),
        ({"searcher": {}}, {}, "no training length; set hyperparameters.max_iters"),
        (EXP, {"max_iters": "lots"}, "hyperparameters.max_iters must be a positive whole number"),
        (EXP, {**HP, "val_interval": 0}, "hyperparameters.val_interval must be a positive"),
        (EXP, {**HP, "global_batch_size": "abc"}, "global_batch_size must be a positive whole"),
        (EXP, {**HP, "image_scale": [128]}, r"image_scale must be \[width, height\]"),
        (EXP, {**HP, "num_workers": -1}, "num_workers must be a positive whole number"),
    ],
)
def test_bad_lengths_and_settings_are_one_line(experiment, hparams, message):
    with pytest.raises(ConfigError, match=message):
        trial_settings(experiment, hparams, data=DATA, work_dir="/w")


def test_global_batch_must_divide_over_slots():
    with pytest.raises(
        ConfigError, match="global_batch_size 12 must be a positive multiple of the 8 slots"
    ):
        trial_settings(EXP, {**HP, "global_batch_size": 12}, data=DATA, work_dir="/w", world_size=8)


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
