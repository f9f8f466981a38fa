"""DetCoreHook on mmengine's toy runner, against a recording stand-in for the Determined master.

A master cannot exist here, so the core context is a mock that logs every call to an event list;
the Runner, loops, hooks and checkpoint files are mmengine's real ones.
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

import pytest
import torch
from mmengine.testing import RunnerTestCase

from errors import TrainingError
from trial.engine.hook import CHECKPOINT_FILE, DetCoreHook, should_report_progress, to_det_metrics


class MockMasterCore:
    """Records what the hook reports; preempt says yes from the ``preempt_at``-th check on."""

    def __init__(self, root: Path, preempt_at: int | None = None) -> None:
        self.events: list[tuple] = []
        self.root = root
        self.preempt_at = preempt_at
        self._checks = 0
        self.train, self.checkpoint, self.preempt = self, self, self

    def report_training_metrics(self, *, steps_completed, metrics):
        self.events.append(("train", steps_completed, dict(metrics)))

    def report_validation_metrics(self, *, steps_completed, metrics):
        self.events.append(("val", steps_completed, dict(metrics)))

    def report_progress(self, progress):
        self.events.append(("progress", progress))

    @contextlib.contextmanager
    def store_path(self, metadata):
        storage_id = str(uuid.uuid4())
        path = self.root / storage_id
        path.mkdir(parents=True)
        yield path, storage_id
        self.events.append(("checkpoint", metadata["steps_completed"], storage_id))

    def should_preempt(self, auto_ack=True):
        self._checks += 1
        return self.preempt_at is not None and self._checks >= self.preempt_at


def kinds(events, kind):
    return [e for e in events if e[0] == kind]


class TestDetCoreHook(RunnerTestCase):
    def _runner(self, core, *, max_iters=12, val_interval=6, checkpoint_interval=4):
        cfg = self.iter_based_cfg.copy()
        cfg.train_cfg = dict(by_epoch=False, max_iters=max_iters, val_interval=val_interval)
        cfg.default_hooks = dict(logger=dict(type="LoggerHook", interval=2), checkpoint=None)
        runner = self.build_runner(cfg)
        hook = DetCoreHook(core, checkpoint_interval=checkpoint_interval, report_interval=2)
        runner.register_hook(hook)
        return runner, hook

    def test_reports_metrics_checkpoints_and_progress_in_order(self):
        core = MockMasterCore(Path(self.temp_dir.name) / "ckpt")
        runner, hook = self._runner(core)
        runner.train()
        train = kinds(core.events, "train")
        assert [e[1] for e in train] == [2, 4, 6, 8, 10, 12]
        assert {"loss", "lr"} <= set(train[0][2])
        val = kinds(core.events, "val")
        assert [e[1] for e in val] == [6, 12]
        # ToyMetric's key (prefix stripped), Determined 0.38's time metrics and the mean training
        # loss since the last validation, for ASHA
        assert set(val[0][2]) == {"acc", "batches", "epochs", "train_loss"}
        losses = runner.message_hub.log_scalars["train/loss"].data[0]  # one value per step
        assert val[0][2]["train_loss"] == pytest.approx(losses[:6].mean())
        assert val[1][2]["train_loss"] == pytest.approx(losses[6:12].mean())
        toy_epoch = len(runner.train_dataloader.dataset) / runner.train_dataloader.batch_size
        for kind in (train, val):
            assert all(e[2]["batches"] == e[1] for e in kind)
            assert all(e[2]["epochs"] == pytest.approx(e[1] / toy_epoch) for e in kind)
        # every 4 steps, and the end state once (12 is both: saved once)
        assert [e[1] for e in kinds(core.events, "checkpoint")] == [4, 8, 12]
        progress = [e[1] for e in kinds(core.events, "progress")]
        assert progress == sorted(progress) and progress[-1] == 1.0
        assert not hook.preempted
        saved = torch.load(core.root / hook.last_checkpoint / CHECKPOINT_FILE, weights_only=False)
        assert saved["meta"]["iter"] == 12 and "optimizer" in saved and "state_dict" in saved

    def test_preemption_from_mocked_master_checkpoints_and_stops(self):
        core = MockMasterCore(Path(self.temp_dir.name) / "ckpt", preempt_at=5)
        runner, hook = self._runner(core, checkpoint_interval=100)
        runner.train()
        assert hook.preempted
        assert runner.iter == 5
        assert [e[1] for e in kinds(core.events, "checkpoint")] == [5]
        assert (
            torch.load(core.root / hook.last_checkpoint / CHECKPOINT_FILE, weights_only=False)[
                "meta"
            ]["iter"]
            == 5
        )

    def test_no_core_context_is_one_clear_error(self):
        with pytest.raises(TrainingError, match="needs a Determined core context"):
            DetCoreHook(None)


def test_to_det_metrics_keeps_finite_scalars_and_strips_prefixes():
    tags = {
        "coco/bbox_mAP": 0.5,
        "loss": torch.tensor(1.5),
        "lr": 0.01,
        "nan": float("nan"),
        "coco/bbox_mAP_copypaste": "0.5 0.6",
        "flag": True,
        "vec": torch.ones(2),
    }
    assert to_det_metrics(tags) == {"bbox_mAP": 0.5, "loss": 1.5, "lr": 0.01}


@pytest.mark.parametrize(
    ("steps", "max_steps", "last", "expected"),
    [
        (1, 1000, -1, 0),
        (9, 1000, 0, None),
        (10, 1000, 0, 1),
        (1000, 1000, 99, 100),
        (5, 0, -1, 100),
    ],
)
def test_progress_is_reported_at_most_once_per_percent(steps, max_steps, last, expected):
    assert should_report_progress(steps, max_steps, last) == expected
