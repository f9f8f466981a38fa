"""A trial whose config loads ImageNet-style weights (``init_cfg=Pretrained``) trains with the
network switched off, reading the checkpoint staged from the experiment's ``data.weights_mirror``
into the node cache; the next trial on the node downloads nothing (its mirror is gone by then).

Real mmdet training in-process (RetinaNet with a ResNet-18 backbone, small images, 2 iterations);
the checkpoint is a real ResNet-18 state dict the test writes; Determined's core context is the
local one (no master can exist here)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from mmengine.hooks import Hook

from trial.runtime.data import coco_dir_paths
from trial.runtime.train import RunRequest, train

pytestmark = [pytest.mark.slow, pytest.mark.training]

R18 = "torchvision://resnet18"
R18_FILE = "resnet18-f37072fd.pth"  # the file name of mmengine's URL for torchvision://resnet18
HPARAMS = {
    "model": "retinanet",
    "global_batch_size": 2,
    "image_scale": [96, 96],
    "num_workers": 0,
    "log_interval": 1,
    "val_interval": 2,
    "checkpoint_interval": 2,
    "model.backbone.depth": 18,
    "model.backbone.init_cfg.checkpoint": R18,
    "model.neck.in_channels": [64, 128, 256, 512],
}


class StemProbe(Hook):
    """Keeps the backbone's first conv after training (frozen_stages=1: it must stay as loaded)."""

    def __init__(self) -> None:
        self.conv1: torch.Tensor | None = None

    def after_train(self, runner) -> None:
        self.conv1 = runner.model.backbone.conv1.weight.detach().clone()


@pytest.fixture
def no_network(monkeypatch):
    """Any TCP/UDP connection fails, as on an air-gapped node (Unix sockets still work)."""
    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family != socket.AF_UNIX:
            raise OSError(f"network disabled in this test: connect to {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect)


def _trial(tmp_path: Path, name: str, experiment: dict, coco_sample: Path) -> StemProbe:
    import determined as det

    probe = StemProbe()
    request = RunRequest(
        experiment=experiment,
        hparams=HPARAMS,
        data=coco_dir_paths(coco_sample, check_json=False),
        work_dir=tmp_path / name / "run",
        max_iters=2,
        hooks=(probe,),
    )
    storage = tmp_path / name / "checkpoints"
    storage.mkdir(parents=True)
    with det.core.init(checkpoint_storage=str(storage)) as core_context:
        result = train(core_context, request)
    assert result.steps == 2
    return probe


def test_pretrained_weights_come_from_the_node_cache_offline(tmp_path, coco_sample, no_network):
    from mmdet.models.backbones import ResNet

    torch.manual_seed(11)
    weights = ResNet(depth=18).state_dict()
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    torch.save(weights, mirror / R18_FILE)
    cache = tmp_path / "node-cache"
    experiment = {
        "name": "r18-pretrained",
        "searcher": {"name": "single", "metric": "bbox_mAP", "smaller_is_better": False},
        "hyperparameters": HPARAMS,
        "data": {"source": str(coco_sample), "cache": str(cache), "dest": str(tmp_path / "coco"),
                 "weights_mirror": str(mirror)},
    }  # fmt: skip

    first = _trial(tmp_path, "trial1", experiment, coco_sample)
    assert first.conv1 is not None and torch.equal(first.conv1, weights["conv1.weight"])
    cached = [p for p in (cache / "objects").rglob(f"*-{R18_FILE}")]
    assert len(cached) == 1 and cached[0].read_bytes() == (mirror / R18_FILE).read_bytes()

    (mirror / R18_FILE).unlink()  # the second trial on the node must not need the mirror at all
    before = {p: p.stat().st_mtime_ns for p in (cache / "objects").rglob("*")}
    second = _trial(tmp_path, "trial2", experiment, coco_sample)
    assert torch.equal(second.conv1, weights["conv1.weight"])
    assert {p: p.stat().st_mtime_ns for p in (cache / "objects").rglob("*")} == before
