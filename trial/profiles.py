"""Extra local settings for the built-in shapes set (``invoke train retinanet`` without ``--data``).

The local CPU profile (trial/local.py) fits any data on a CPU; on the shapes set RetinaNet R50
with it reached bbox mAP 0.03 in 200 iterations — it had not yet learned. The shapes set is
simple (three flat shapes, 26-56 px at 128 px, 48 training images), so a small, fast detector
learns it well in a few minutes: ResNet-18 (a quarter of R50's backbone cost), three FPN levels
(strides 8-32: the 64/128 levels only hold anchors of 256-512 px, bigger than any image here),
batch 8, a higher AdamW learning rate after a short warmup, and more iterations. Measured in
docs/benchmarks.md ("default run"). Only the default data gets it: ``--data``, ``--cluster`` and
the experiments train what they say, and ``--set``/``--hparam`` still win over it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
