"""``invoke stage-coco`` wiring, driven with invoke's MockContext (the task runs no commands)."""

from __future__ import annotations

import pytest
from invoke import Exit, MockContext
from staging_helpers import REPO


@pytest.fixture
def tasks(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    import tasks

    return tasks


def test_stage_coco_task_prints_summary(tasks, tmp_path, coco_sample, capsys):
    tasks.stage_coco(MockContext(), source=str(coco_sample), cache=str(tmp_path / "c"),
                     dest=str(tmp_path / "d"), splits="val", subset="2", seed="1")  # fmt: skip
    out = capsys.readouterr().out
    assert out.startswith("staged 1 files") and "1 downloaded, 0 cache hits" in out
    assert (tmp_path / "d" / "annotations" / "instances_val2017.json").exists()


def test_stage_coco_task_reads_experiment_config(tasks, tmp_path, coco_sample, capsys):
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"data:\n  source: {coco_sample}\n  cache: {tmp_path / 'c'}\n"
                   f"  dest: {tmp_path / 'd'}\n  splits: [train]\n")  # fmt: skip
    tasks.stage_coco(MockContext(), experiment_config=str(exp), dry_run=True)
    out = capsys.readouterr().out
    assert "fetch " in out and "instances_train2017.json" in out and "nothing was written" in out
    assert not (tmp_path / "c").exists()


def test_stage_coco_task_turns_errors_into_one_line_exit(tasks, tmp_path):
    with pytest.raises(Exit) as exc:
        tasks.stage_coco(MockContext(), source=str(tmp_path / "missing"),
                         cache=str(tmp_path / "c"), dest=str(tmp_path / "d"))  # fmt: skip
    assert exc.value.code == 1
    assert (
        str(exc.value.message).startswith("error: data.source ") and "\n" not in exc.value.message
    )


def test_stage_coco_task_help_is_complete(tasks):
    params = set(tasks.stage_coco.help)
    assert params == {"source", "cache", "dest", "splits", "with_images", "subset", "seed",
                      "workers", "verify", "dry_run", "experiment_config", "weights_mirror",
                      "stage_weights"}  # fmt: skip
