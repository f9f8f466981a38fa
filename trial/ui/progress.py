"""ProgressHook: a local run's progress on its console (trial/ui/console.py), one bar per phase.

It only reads what the Runner already computed (the smoothed loss in the message hub, the
validation metrics), so it changes nothing about training; DetCoreHook still does the reporting.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from mmengine.hooks import Hook

from trial.ui.console import (
    LIBRARY_NOISE,
    PREDICTIONS_FILE,
    Console,
    ConsoleLogHandler,
    duration_text,
    metrics_text,
)


def console_hooks(console: Console | None, work_dir: Path, *, interval: int) -> tuple[Hook, ...]:
    """The hooks of a local run with a console: its progress, and the predictions picture."""
    from trial.ui.preview import PredictionsPreviewHook

    preview = PredictionsPreviewHook(Path(work_dir) / PREDICTIONS_FILE)
    return (preview,) if console is None else (ProgressHook(console, interval=interval), preview)


class ProgressHook(Hook):
    """Training: a bar with the loss and eta (or a plain line every ``interval`` iterations).
    Validation: a bar over the batches, then one line with the mAP. mmengine's own warnings and
    errors appear on the console once each.

    Priority LOW: after LoggerHook (BELOW_NORMAL) in every stage, so an iteration's loss is in
    the message hub (RuntimeInfoHook, VERY_HIGH, puts it there) and the log line was written first.
    """

    priority = "LOW"

    def __init__(self, console: Console, *, interval: int = 10) -> None:
        self.console = console
        self.interval = max(1, interval)
        self._handler: logging.Handler | None = None
        self._train_bar: Any = None
        self._val_bar: Any = None
        self._training = False
        self._start = 0.0
        self._first_iter = 0

    def before_run(self, runner) -> None:
        self._handler = ConsoleLogHandler(self.console, skip=LIBRARY_NOISE)
        runner.logger.addHandler(self._handler)

    def after_run(self, runner) -> None:
        if self._handler is not None:
            runner.logger.removeHandler(self._handler)

    def before_train(self, runner) -> None:
        self._start = time.monotonic()
        self._first_iter = runner.iter
        self._train_bar = self.console.bar(
            total=runner.max_iters, initial=runner.iter, desc="train"
        )

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        steps = runner.iter + 1
        loss = self._loss(runner)
        if self._train_bar is not None:
            self._train_bar.set_postfix_str(f"loss {loss:.3f}" if loss is not None else "", False)
            self._train_bar.update(1)
        elif steps % self.interval == 0 or steps == runner.max_iters:
            done = steps - self._first_iter
            eta = (time.monotonic() - self._start) / done * (runner.max_iters - steps)
            loss_text = f"loss {loss:.4f}  " if loss is not None else ""
            self.console.line(
                f"train {steps}/{runner.max_iters}  {loss_text}eta {duration_text(eta)}"
            )

    def after_train(self, runner) -> None:
        self.console.close(self._train_bar)
        self._train_bar = None

    def before_val_epoch(self, runner) -> None:
        # one bar at a time: training's ends here (its line stays) and restarts after validation
        self._training = self._train_bar is not None
        self.after_train(runner)
        total = len(runner.val_dataloader)
        self._val_bar = self.console.bar(total=total, desc="val", leave=False)

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self._val_bar is not None:
            self._val_bar.update(1)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.console.close(self._val_bar)
        self._val_bar = None
        self.console.line(f"val   at iteration {runner.iter}: {metrics_text(metrics or {})}")
        if self._training and runner.iter < runner.max_iters:
            self._train_bar = self.console.bar(
                total=runner.max_iters, initial=runner.iter, desc="train"
            )

    def _loss(self, runner) -> float | None:
        hub = runner.message_hub
        if "train/loss" not in hub.log_scalars:
            return None
        return float(hub.get_scalar("train/loss").mean(self.interval))
