"""What `invoke train` does around the trial, with the trial itself stood in for (issue 29): the
work dir records what runs, --fresh never costs a finished run, --resume continues the run the
work dir holds (its data, its settings) and knows when there is nothing left, and a value that
only fails when mmengine builds it is one line before anything changes."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import yaml

from errors import ConfigError, TrainingError
from trial.verbs import local
from trial.verbs.local import LocalTrain, local_config, train_local

FAST = ["log_interval=1", "num_workers=0"]


class StandIn:
    """Runs instead of `python -m trial --local`: writes what a run of N iterations leaves (a
    checkpoint, metrics.jsonl, result.json, train.log) unless told to fail first."""

    def __init__(self, *, fail: bool = False, checkpoint: bool = True) -> None:
        self.fail, self.checkpoint, self.commands = fail, checkpoint, []

    def __call__(self, command, *, cwd=None, env=None) -> int:
        self.commands.append(command)
        work = Path(_arg(command, "--work-dir"))
        experiment = yaml.safe_load(Path(_arg(command, "--experiment")).read_text())
        steps = int(_arg(command, "--max-iters") or experiment["hyperparameters"]["max_iters"])
        (work / "train.log").write_text("the new run's log\n")
        with (work / "metrics.jsonl").open("a") as f:
            f.write(json.dumps({"group": "training", "steps_completed": 1}) + "\n")
        if self.checkpoint:
            folder = work / "checkpoints" / f"ckpt-{steps}"
            folder.mkdir(parents=True)
            with zipfile.ZipFile(folder / "checkpoint.pth", "w") as archive:
                archive.writestr("archive/data.pkl", b"x" * 64)
            meta = {"steps_completed": steps, "model": experiment["hyperparameters"]["model"]}
            (folder / "metadata.json").write_text(json.dumps(meta))
        if self.fail:
            return 1
        result = {"steps": steps, "preempted": False, "checkpoint": f"ckpt-{steps}",
                  "validation": {"bbox_mAP": 0.5}}  # fmt: skip
        (work / "result.json").write_text(json.dumps(result))
        return 0


def _arg(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def files(work: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(work)): p.read_bytes() for p in sorted(work.rglob("*")) if p.is_file()
    }


@pytest.fixture
def trial(monkeypatch):
    def use(**kwargs) -> StandIn:
        stand_in = StandIn(**kwargs)
        monkeypatch.setattr(local, "run_forwarding_signals", stand_in)
        return stand_in

    return use


def recorded_config(work: Path):
    """The config the trial builds from the work dir's experiment.yaml alone."""
    from trial.runtime.data import default_data
    from trial.settings.config import build_config, load_base_config, resolve_base
    from trial.settings.hparams import load_experiment, local_hparams, model_ref, trial_settings
    from trial.settings.preflight import command_line_overrides

    experiment = load_experiment(work / "experiment.yaml")
    hparams, overrides = command_line_overrides(local_hparams(experiment["hyperparameters"]))
    settings = trial_settings(experiment, hparams, data=default_data(), work_dir=str(work / "run"),
                              extra_overrides=overrides)  # fmt: skip
    return build_config(load_base_config(resolve_base(model_ref(hparams))), settings)


def test_the_work_dir_records_what_runs(tmp_path, trial):
    """experiment.yaml said max_iters 400 for a --max-iters 4 run, and `model: retinanet` for
    `--hparam model=...` runs (issue 29, W11, W4): it is now the experiment the trial trains."""
    request = LocalTrain(model="retinanet", work_dir=str(tmp_path / "w"), max_iters=4,
                         sets=["optim_wrapper.optimizer.lr=0.002"], hparams=FAST)  # fmt: skip
    expected = local_config(request)
    trial()
    train_local(request)
    ran = recorded_config(tmp_path / "w")
    assert ran.train_cfg == expected.train_cfg and ran.train_cfg.max_iters == 4
    assert ran.optim_wrapper == expected.optim_wrapper
    assert ran.optim_wrapper.optimizer.lr == 0.002
    assert ran.model == expected.model
    assert ran.param_scheduler == expected.param_scheduler


def test_an_experiment_named_by_model_trains_and_reports_its_own_model(tmp_path, trial):
    """`invoke train retinanet-asha` locally said "unknown model" though --cluster takes it
    (issue 29, C6); the summary names the model that ran."""
    trial()
    result = train_local(LocalTrain(model="retinanet-asha", work_dir=str(tmp_path / "w"),
                                    max_iters=2, hparams=FAST))  # fmt: skip
    assert result["model"] == "retinanet"
    recorded = yaml.safe_load((tmp_path / "w" / "experiment.yaml").read_text())
    assert recorded["hyperparameters"]["model"] == "retinanet"


def previous_run(work: Path, trial, **request) -> dict[str, bytes]:
    trial()
    train_local(LocalTrain(model="retinanet", work_dir=str(work), hparams=FAST, **request))
    return files(work)


def test_fresh_gives_the_previous_run_back_when_the_new_one_fails_early(tmp_path, trial):
    """--fresh deleted the finished run before the new one had trained a step; the new run then
    failed (issue 29, W2). The previous run now stays until the new one has a checkpoint."""
    work = tmp_path / "w"
    before = previous_run(work, trial, max_iters=4)
    trial(fail=True, checkpoint=False)
    with pytest.raises(TrainingError, match=r"the previous run in .* is kept"):
        train_local(LocalTrain(model="retinanet", work_dir=str(work), max_iters=2, fresh=True,
                               hparams=FAST))  # fmt: skip
    after = files(work)
    assert after.pop("failed-run.log") == b"the new run's log\n"
    assert after == before


def test_fresh_keeps_a_new_run_that_has_a_checkpoint(tmp_path, trial):
    work = tmp_path / "w"
    previous_run(work, trial, max_iters=4)
    trial(fail=True, checkpoint=True)
    with pytest.raises(TrainingError):
        train_local(LocalTrain(model="retinanet", work_dir=str(work), max_iters=2, fresh=True,
                               hparams=FAST))  # fmt: skip
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == ["ckpt-2"]
    assert not (work / ".previous-run").exists()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("optim_wrapper.optimizer.lr=abc", "config key 'optim_wrapper.optimizer.lr' ('abc')"),
        ("model.backbone.depth=19", "config key 'model.backbone.depth' (19): model does not build"),
        ("train_dataloader.batch_size=0", "config key 'train_dataloader.batch_size' must be a "
         "positive whole number (images per rank), got 0"),
    ],
    ids=["lr-text", "depth", "batch-0"],
)  # fmt: skip
def test_a_value_that_does_not_build_is_one_line_and_fresh_deletes_nothing(
    tmp_path, trial, option, message
):
    """Values wrong only when mmengine builds them passed preflight; with --fresh the finished
    run was deleted, then the trial failed with two error lines (issue 29, C1, W2)."""
    work = tmp_path / "w"
    before = previous_run(work, trial, max_iters=4)
    stand_in = trial()
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train_local(LocalTrain(model="retinanet", work_dir=str(work), max_iters=2, fresh=True,
                               sets=[option], hparams=FAST))  # fmt: skip
    assert files(work) == before and stand_in.commands == []


def test_a_typeless_component_sets_its_keys(tmp_path):
    """`--set 'optim_wrapper.optimizer={lr: 0.02}'` was `KeyError: 'type'` in the trial
    (issue 29, C1): a mapping without a type sets the keys it names, as on a cluster."""
    cfg = local_config(LocalTrain(model="retinanet", work_dir=str(tmp_path / "w"),
                                  sets=["optim_wrapper.optimizer={lr: 0.02}"]))  # fmt: skip
    assert cfg.optim_wrapper.optimizer.lr == 0.02 and cfg.optim_wrapper.optimizer.type == "AdamW"


def test_resume_of_a_finished_run_changes_nothing(tmp_path, trial):
    """`--resume` of a run already at its last iteration trained "4 iterations" again, rewrote
    result.json without its mAP and added a second checkpoint at step 4 (issue 29, W3)."""
    work = tmp_path / "w"
    before = previous_run(work, trial, max_iters=4)
    stand_in = trial()
    result = train_local(LocalTrain(model="retinanet", work_dir=str(work), resume=True))
    assert stand_in.commands == [] and files(work) == before
    assert local.result_line(result) == (
        f"retinanet: already at iteration 4 of 4 in {work}; nothing to do (a larger --max-iters "
        "trains further)"
    )
    longer = train_local(LocalTrain(model="retinanet", work_dir=str(work), resume=True,
                                    max_iters=6))  # fmt: skip
    assert longer["steps"] == 6 and "--resume" in stand_in.commands[0]


def test_resume_continues_the_runs_own_data_and_settings(tmp_path, trial, coco_sample, capsys):
    """A copied work dir resumed without its --data got the built-in set's profile (another
    model): "loaded state dict contains a parameter group that doesn't match" (issue 29, C2).
    The work dir remembers; a different number of ranks is a warning."""
    work = tmp_path / "w"
    previous_run(work, trial, max_iters=2, data=str(coco_sample), nproc=2)
    first = yaml.safe_load((work / "experiment.yaml").read_text())
    stand_in = trial()
    train_local(LocalTrain(model="retinanet", work_dir=str(work), resume=True, max_iters=4))
    assert _arg(stand_in.commands[0], "--data") == str(coco_sample)
    again = yaml.safe_load((work / "experiment.yaml").read_text())
    assert again["hyperparameters"] == {**first["hyperparameters"], "max_iters": 4}
    warning = capsys.readouterr().err.strip().splitlines()[-1]
    assert warning.startswith("warning: --resume with 1 rank(s): the run in ")
    assert "trained with 2" in warning
