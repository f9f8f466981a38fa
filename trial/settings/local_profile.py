"""The local profile: what ``invoke train`` (without ``--cluster``) lays over the experiment.

A local run trains on this machine's CPU, so the experiment's hyperparameters get a CPU-sized
profile (``LOCAL_HPARAMS``): small images and batches, no ImageNet download (unreachable here),
frequent logging, and AdamW, which learns from scratch in a few hundred iterations where the 1x
recipe's SGD (tuned for ImageNet weights) stays at 0 mAP (measured on the shapes set); 200
iterations unless told otherwise. ``--set`` and ``--hparam`` win over it.

The built-in shapes set (``invoke train retinanet`` without ``--data``) gets more
(``SHAPES_HPARAMS``): on it RetinaNet R50 with the plain profile reached bbox mAP 0.03 in 200
iterations — it had not yet learned. The set is simple (three flat shapes, 26-56 px at 128 px, 48
training images), so a small, fast detector learns it well in a few minutes: ResNet-18 (a quarter
of R50's backbone cost), three FPN levels (strides 8-32: the 64/128 levels only hold anchors of
256-512 px, bigger than any image here), batch 8, a higher AdamW learning rate after a short
warmup, and more iterations. Measured in docs/benchmarks.md ("default run"). Only the default data
gets it: ``--data``, ``--config``, ``--experiment`` and ``--cluster`` train what they say.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from errors import ConfigError
from trial.settings.hparams import experiment_for_run, local_hparams
from trial.settings.overrides import layer

# The CPU profile of every local run, applied on top of the experiment's hyperparameters.
LOCAL_HPARAMS = {
    "global_batch_size": 4,
    "pretrained": False,
    "image_scale": [128, 128],
    "num_workers": 2,
    "log_interval": 10,
    "optim_wrapper.optimizer": {"type": "AdamW", "lr": 0.0005, "weight_decay": 0.0001},
}
DEFAULT_MAX_ITERS = 200  # the local length; --hparam max_iters and then --max-iters win over it
SHAPES_MAX_ITERS = 400
SHAPES_HPARAMS: dict[str, dict[str, Any]] = {
    "retinanet": {
        "global_batch_size": 8,
        "model.backbone.depth": 18,
        "model.neck.in_channels": [64, 128, 256, 512],
        "model.neck.out_channels": 128,
        "model.neck.num_outs": 3,
        "model.bbox_head.in_channels": 128,
        "model.bbox_head.feat_channels": 128,
        "model.bbox_head.stacked_convs": 2,
        "model.bbox_head.anchor_generator.strides": [8, 16, 32],
        "model.bbox_head.anchor_generator.ratios": [1.0],  # the shapes are about square
        "model.bbox_head.anchor_generator.scales_per_octave": 2,
        "optim_wrapper": {  # replaces the profile's whole optimizer wrapper: + gradient clipping
            "type": "OptimWrapper",
            "optimizer": {"type": "AdamW", "lr": 0.001, "weight_decay": 0.0001},
            "clip_grad": {"max_norm": 35, "norm_type": 2},
        },
        "log_interval": 20,
    },
}


def shapes_hparams(model: str) -> Mapping[str, Any]:
    """The shapes-set settings of a bundled model (empty for any other model or config)."""
    return SHAPES_HPARAMS.get(model, {})


def local_experiment(
    model: str,
    *,
    experiment: str | None = None,
    config: str | None = None,
    data: str | None = None,
) -> tuple[dict, dict]:
    """The experiment a local run trains, with the local profile over its hyperparameters, and
    those hyperparameters as the experiment gives them (to be checked as a cluster would: the
    profile replaces some of them). The model is chosen as for ``--cluster``
    (hparams.experiment_for_run)."""
    ref = None
    if config:
        config_file = Path(config).expanduser().resolve()
        if not config_file.is_file():
            raise ConfigError(
                f"--config {config_file} does not exist; pass an mmdet 3.x config .py file"
            )
        ref = str(config_file)
    doc, chosen = experiment_for_run(model, experiment=experiment, config=ref)
    own = {**local_hparams(doc.get("hyperparameters") or {}), "model": chosen}
    shapes = {} if data or config or experiment else shapes_hparams(chosen)
    # The profile replaces what it names (and what lies below it); explicit --set/--hparam are
    # applied over it later, so they always win.
    profile = {
        **layer(LOCAL_HPARAMS, shapes),
        "max_iters": SHAPES_MAX_ITERS if shapes else DEFAULT_MAX_ITERS,
    }
    doc["hyperparameters"] = layer(own, profile)
    return doc, own
