"""What one training iteration's model costs, independent of how busy the machine is: the
CPU-seconds of one forward+backward of ``invoke train retinanet [--data DATA]``'s model on a
synthetic batch (one thread, median of 3 after a warm-up). For docs/benchmarks.md ("default run"):

    python -c "from bench.step_cost import step_cpu_seconds as s; print(s(), s('../shared/coco-tiny'))"
"""

from __future__ import annotations

import time

from bench.harness import median_of


def step_cpu_seconds(data: str | None = None, *, batch: int = 8, size: int = 128) -> float:
    """CPU-seconds of one forward+backward of the local run's model (see the module docstring)."""
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

    def step(_: int) -> float:
        start = time.process_time()
        loss, _ = model.parse_losses(model.loss(images, samples))
        loss.backward()
        return time.process_time() - start

    step(0)  # warm-up
    return median_of(step, 3)
