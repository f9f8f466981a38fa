"""Extra local settings for the built-in shapes set (``invoke train retinanet`` without ``--data``).

The local CPU profile (trial/verbs/local.py) fits any data on a CPU; on the shapes set RetinaNet R50
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


def step_cpu_seconds(data: str | None = None, *, batch: int = 8, size: int = 128) -> float:
    """CPU-seconds of one forward+backward of ``invoke train retinanet [--data data]``'s model on
    a synthetic batch (one thread, median of 3 after a warm-up): what an iteration's model costs,
    independent of how busy the machine is. For docs/benchmarks.md ("default run")."""
    import statistics
    import time

    import torch
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules
    from mmengine.structures import InstanceData

    from trial.verbs.local import LocalTrain, local_config

    register_all_modules()
    torch.set_num_threads(1)
    cfg = local_config(LocalTrain(model="retinanet", data=data, work_dir="/tmp/step-cost"))
    model = MODELS.build(cfg.model).train()
    images = torch.randn(batch, 3, size, size)
    shape = dict(img_shape=(size, size), pad_shape=(size, size), batch_input_shape=(size, size))
    samples = []
    for _ in range(batch):
        sample = DetDataSample(metainfo=dict(shape, scale_factor=(1.0, 1.0)))
        boxes = torch.tensor([[10.0, 10.0, 50.0, 50.0], [60.0, 60.0, 110.0, 100.0]])
        sample.gt_instances = InstanceData(bboxes=boxes, labels=torch.tensor([36, 62]))
        samples.append(sample)
    times = []
    for _ in range(4):
        start = time.process_time()
        loss, _ = model.parse_losses(model.loss(images, samples))
        loss.backward()
        times.append(time.process_time() - start)
    return statistics.median(times[1:])
