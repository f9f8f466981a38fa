"""Helpers for the export tests: train a tiny run, run stock mmdet where this project is absent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from common import REPO_ROOT as REPO
from trial.verbs import artifact

# Small but real: 160 px images, batch 2, 4 iterations, validation on the whole val split.
FAST = ["image_scale=[160, 160]", "global_batch_size=2", "log_interval=2", "num_workers=0"]
# After 4 iterations every score is below the configs' 0.05 threshold: keep all top-k boxes so that
# predictions (and mAP) compare real numbers, and draw a validation image every 4 val images.
KEEP_ALL = {
    "retinanet": ["model.test_cfg.score_thr=0.0"],
    "maskrcnn": ["model.test_cfg.rcnn.score_thr=0.0"],
}
DRAW = ["default_hooks.visualization.interval=4"]

# Runs in a Python where this project cannot be imported: -I (no PYTHONPATH, no cwd, no user site)
# and -S (no site-packages .pth files, so not even the editable install's path hook); the venv's
# site-packages (torch, mmcv, mmdet) are added by hand. Only mmdet's public API loads the export.
STOCK_SCRIPT = r"""
import importlib.util, json, os, sys
sys.path.append(sys.argv[1])
config, weights, image, out = sys.argv[2:6]
for name in ("trial", "staging", "images", "errors", "common", "bench"):
    assert importlib.util.find_spec(name) is None, f"{name} is importable"
assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ
import numpy as np
from mmdet.apis import DetInferencer, inference_detector, init_detector
model = init_detector(config, weights, device="cpu")
pred = inference_detector(model, image).pred_instances
arrays = {k: pred[k].numpy() for k in ("bboxes", "scores", "labels")}
if "masks" in pred:
    arrays["masks"] = pred.masks.numpy()
np.savez_compressed(out, **arrays)
inferencer = DetInferencer(model=config, weights=weights, device="cpu", show_progress=False)
again = inferencer(image, return_datasamples=True, no_save_vis=True)["predictions"][0].pred_instances
assert np.allclose(again.scores.numpy(), arrays["scores"], atol=1e-6)
json.dump({"classes": list(model.dataset_meta["classes"])}, open(out + ".json", "w"))
"""


def stock_predict(export_dir: Path, image: Path, out: Path) -> dict:
    """Predictions of the export on ``image`` by stock mmdet in a fresh, project-free Python."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    command = [
        sys.executable, "-I", "-S", "-c", STOCK_SCRIPT, sysconfig.get_paths()["purelib"],
        str(export_dir / "config.py"), str(export_dir / "model.pth"), str(image), str(out),
    ]  # fmt: skip
    proc = subprocess.run(
        command, cwd=out.parent, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    arrays = dict(np.load(out if out.suffix == ".npz" else f"{out}.npz"))
    arrays["meta"] = json.loads(Path(f"{out}.json").read_text())
    return arrays


def trial_predict(work_dir: Path, checkpoint: str, image: Path) -> dict:
    """The trial's own inference: its full training config and checkpoint, its val pipeline."""
    import torch
    from mmcv.transforms import Compose
    from mmdet.apis import inference_detector, init_detector
    from mmengine.config import Config

    import trial.engine.metrics  # noqa: F401  (the trial config names ZeroSafeCocoMetric)
    from trial.runtime.train import trusted_checkpoint_loading

    path = work_dir / "checkpoints" / checkpoint / "checkpoint.pth"
    with trusted_checkpoint_loading():
        cfg = Config.fromstring(torch.load(path, weights_only=False)["meta"]["cfg"], ".py")
        model = init_detector(cfg, str(path), device="cpu")
    pipeline = Compose(cfg.val_dataloader.dataset.pipeline)  # what validation ran
    pred = inference_detector(model, str(image), test_pipeline=pipeline).pred_instances
    arrays = {k: pred[k].numpy() for k in ("bboxes", "scores", "labels")}
    if "masks" in pred:
        arrays["masks"] = pred.masks.numpy()
    return arrays


def invoke(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "invoke", "-r", str(REPO), *args]
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=900, env=env or os.environ.copy()
    )


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def bundled_types(cfg: Any) -> list[str]:
    """Every ``type`` in ``cfg`` that is one of the trial's own (an export must hold none)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            if node.get("type") in artifact.TRIAL_TYPES:
                found.append(node["type"])
            for value in node.values():
                walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)

    walk(cfg)
    return found
