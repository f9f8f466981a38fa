"""DetCoreHook: the one bridge between mmengine's Runner and Determined's Core API.

The Runner trains exactly as mmdet's tools/train.py would; this hook only observes and applies
effects: it reports training and validation metrics, stores checkpoints through Determined's
checkpoint storage, reports progress, and stops the loop cleanly on preemption.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from errors import TrainingError

logger = logging.getLogger("trial")

CHECKPOINT_FILE = "checkpoint.pth"
METRIC_PREFIXES = ("coco/",)


def to_det_metrics(tags: Mapping[str, Any], *, prefixes: tuple[str, ...] = METRIC_PREFIXES) -> dict:
    """Keep finite scalar metrics, strip evaluator prefixes (``coco/bbox_mAP`` -> ``bbox_mAP``)."""
    metrics = {}
    for key, value in tags.items():
        if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
            value = value.item()
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            continue
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        metrics[key] = value
    return metrics


def should_report_progress(steps: int, max_steps: int, last_percent: int) -> int | None:
    """The new whole percent to report, or None when progress moved less than 1%."""
    percent = min(100, int(100 * steps / max(1, max_steps)))
    return percent if percent > last_percent else None


@HOOKS.register_module()
class DetCoreHook(Hook):
    """Report metrics, store checkpoints and honour preemption through a Determined core context.

    Priority VERY_LOW: in ``after_train_iter`` this runs after ParamSchedulerHook (VERY_HIGH) has
    stepped the LR and after LoggerHook (BELOW_NORMAL) has smoothed the losses, i.e. in the slot
    CheckpointHook (VERY_LOW) would take, so a checkpoint holds the same state CheckpointHook's would.
    The trial sets ``default_hooks.checkpoint=None``: this hook is the only saver. It is registered
    as an instance (``runner.register_hook``) because the core context is a live object, not config.
    """

    priority = "VERY_LOW"

    def __init__(
        self,
        core_context: Any,
        *,
        checkpoint_interval: int = 0,
        report_interval: int = 50,
        checkpoint_metadata: Mapping[str, Any] | None = None,
        before_save: Callable[[Any], None] | None = None,
    ) -> None:
        if core_context is None:
            raise TrainingError(
                "DetCoreHook needs a Determined core context; run through `python -m trial` "
                "(or `invoke train`), which creates one locally or on the cluster"
            )
        self.core = core_context
        self.checkpoint_interval = checkpoint_interval
        self.report_interval = max(1, report_interval)
        self.checkpoint_metadata = dict(checkpoint_metadata or {})
        self.before_save = before_save  # called on every rank first (BufferSyncHook.sync)
        self.preempted = False
        self.last_checkpoint: str | None = None
        self.last_validation: dict[str, Any] = {}  # what rank 0 last reported
        self._last_saved_step = -1
        self._last_train_report = -1
        self._last_val_report = -1
        self._last_percent = -1
        self._samples_per_epoch = 0
        self._samples_per_step = 0

    def before_train(self, runner) -> None:
        loader = runner.train_dataloader
        batch = loader.batch_size or getattr(loader.batch_sampler, "batch_size", 0)
        self._samples_per_step = int(batch or 0) * runner.world_size
        self._samples_per_epoch = len(loader.dataset)

    def time_metrics(self, steps: int) -> dict[str, float]:
        """``batches`` and ``epochs`` as Determined 0.38's training loops report them (ASHA's
        ``time_metric`` must be among the validation metrics)."""
        epochs = steps * self._samples_per_step / max(1, self._samples_per_epoch)
        return {"batches": steps, "epochs": round(epochs, 6)}

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        steps = runner.iter + 1
        if steps % self.report_interval == 0 or steps == runner.max_iters:
            self._report_train(runner, batch_idx, steps)
        if self.checkpoint_interval and steps % self.checkpoint_interval == 0:
            self._save_and_upload(runner, steps)
        self._maybe_preempt(runner, steps)

    def after_val_epoch(self, runner, metrics: Mapping[str, Any] | None = None) -> None:
        self._report_val(runner, runner.iter, metrics or {})

    def after_train(self, runner) -> None:
        # Always leave a checkpoint of the final state (the trial's resumable end point).
        self._save_and_upload(runner, runner.iter)

    def _report_train(self, runner, batch_idx: int, steps: int) -> None:
        if steps == self._last_train_report:
            return
        self._last_train_report = steps
        tags, _ = runner.log_processor.get_log_after_iter(runner, batch_idx, "train")
        metrics = to_det_metrics(tags)
        if runner.rank == 0 and metrics:
            self.core.train.report_training_metrics(
                steps_completed=steps, metrics={**metrics, **self.time_metrics(steps)}
            )
            percent = should_report_progress(steps, runner.max_iters, self._last_percent)
            if percent is not None:
                self._last_percent = percent
                self.core.train.report_progress(percent / 100)

    def _report_val(self, runner, steps: int, metrics: Mapping[str, Any]) -> None:
        det_metrics = to_det_metrics(metrics)
        if runner.rank != 0 or not det_metrics or steps == self._last_val_report:
            return
        since = steps - max(self._last_val_report, 0)
        self._last_val_report = steps
        extra = self.time_metrics(steps)
        train_loss = self._mean_train_loss(runner, since)
        if train_loss is not None:
            extra["train_loss"] = train_loss
        self.last_validation = {**det_metrics, **extra}
        self.core.train.report_validation_metrics(
            steps_completed=steps, metrics=self.last_validation
        )

    @staticmethod
    def _mean_train_loss(runner, window: int) -> float | None:
        """Rank 0's mean training ``loss`` over the ``window`` steps since the last validation:
        reported with the validation metrics so that a search may rank trials by it (ASHA's
        metric must be a validation metric; early COCO mAP is 0 for every trial, a tie)."""
        history = runner.message_hub.log_scalars.get("train/loss")
        if history is None or window < 1 or not len(history.data[0]):
            return None
        value = float(history.mean(window))
        return value if math.isfinite(value) else None

    def _save_and_upload(self, runner, steps: int) -> None:
        if steps == self._last_saved_step:
            return
        self._last_saved_step = steps
        if self.before_save is not None:
            self.before_save(runner)
        if (
            runner.rank != 0
        ):  # Runner.save_checkpoint is master-only; shard=False store is chief-only
            return
        metadata = {"steps_completed": steps, **self.checkpoint_metadata}
        with self.core.checkpoint.store_path(metadata) as (path, storage_id):
            # Written under a temp name and renamed: a kill mid-write never leaves a partial
            # checkpoint.pth (and Determined writes metadata.json only after this block).
            partial = CHECKPOINT_FILE + ".incomplete"
            runner.save_checkpoint(
                str(path),
                filename=partial,
                by_epoch=False,
                save_optimizer=True,
                save_param_scheduler=True,
            )
            os.replace(os.path.join(path, partial), os.path.join(path, CHECKPOINT_FILE))
        self.last_checkpoint = storage_id
        logger.info("stored checkpoint %s at step %d", storage_id, steps)

    def _maybe_preempt(self, runner, steps: int) -> None:
        if self.preempted or not self.core.preempt.should_preempt():
            return
        logger.info("preemption requested at step %d: checkpointing and stopping", steps)
        self.preempted = True
        self._save_and_upload(runner, steps)
        runner.train_loop.stop_training = True
