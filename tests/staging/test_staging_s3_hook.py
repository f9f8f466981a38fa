"""s3:// end to end on the other entrypoints: the startup hook (data.source and
data.weights_mirror on s3://, the checkpoint list handed over by the trial) and
`invoke stage-coco --source s3://...`, against moto's server over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from staging_helpers import REPO, S3_SOURCE

from errors import StagingError
from staging.testing import s3_emulator
from staging.weights import stage_weights

pytestmark = pytest.mark.s3

R18 = "torchvision://resnet18"
R18_FILE = "resnet18-f37072fd.pth"  # the file name in mmengine's torchvision table
MIRROR = "s3://weights/mirror"


def _hook(tmp_path, **env: str) -> subprocess.CompletedProcess:
    drop = ("PYTHONPATH", "DET_EXPERIMENT_CONFIG", "DET_HPARAMS", "MMDET_DET_EXPERIMENT_CONFIG")
    clean = {k: v for k, v in os.environ.items() if k not in drop}
    clean.update(MMDET_PYTHON=sys.executable, MMDET_DET_TRIAL_INFO=str(tmp_path / "none.json"))
    return subprocess.run(["bash", str(REPO / "hooks" / "startup-hook.sh")], cwd=tmp_path,
                          env={**clean, **env}, capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.mark.slow  # ~20 s (up to 50 s on a loaded VM): two hook runs, each loads the mmdet config
def test_hook_stages_s3_source_and_weights_mirror(s3_proxy, tmp_path):
    """The hook on a node: COCO from s3:// (images left for the read-through backend) and the
    trial's checkpoint from an s3:// mirror; the second trial on the node downloads nothing."""
    weights = b"a stand-in checkpoint: staging moves bytes, it does not load them"
    s3_emulator.put_bytes(f"{MIRROR}/{R18_FILE}", weights)
    experiment = {
        "name": "s3", "entrypoint": "python3 -m trial",
        "hyperparameters": {"model": "retinanet", "model.backbone.init_cfg.checkpoint": R18},
        "data": {"source": S3_SOURCE, "cache": str(tmp_path / "cache"),
                 "dest": str(tmp_path / "coco"), "subset": 4, "weights_mirror": MIRROR},
    }  # fmt: skip
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment))
    for downloads, weights_downloads in ((2, 1), (0, 0)):
        done = _hook(tmp_path, MMDET_DET_EXPERIMENT_CONFIG=str(path))
        assert done.returncode == 0, done.stderr
        assert f"{downloads} downloaded" in done.stdout
        assert f"weights: 1 checkpoint(s), {weights_downloads} downloaded" in done.stdout
    assert len(s3_proxy.object_gets(R18_FILE)) == 1
    assert len(s3_proxy.object_gets("instances_")) == 2  # annotations; images stay remote
    pin = next((tmp_path / "cache" / "manifests").glob("weights-*.json"))
    assert (tmp_path / "cache" / json.loads(pin.read_text())["path"]).read_bytes() == weights
    index = next((tmp_path / "cache" / "manifests").glob("*-images.json"))
    assert all(url.startswith(f"{S3_SOURCE}/") for url in json.loads(index.read_text())["objects"])


def test_s3_mirror_missing_object_is_one_line(s3, tmp_path):
    s3_emulator.put_bytes(f"{MIRROR}/other.pth", b"x")
    with pytest.raises(StagingError) as err:
        stage_weights(tmp_path / "cache", ["torchvision://resnet34"], mirror=MIRROR)
    msg = str(err.value)
    assert "\n" not in msg and f"missing object {MIRROR}/resnet34-b627a593.pth" in msg
    assert "data.weights_mirror" in msg


def test_stage_coco_task_from_s3(s3, tmp_path, coco_sample, capsys, monkeypatch):
    """`invoke stage-coco --source s3://... --with-images` (invoke's MockContext)."""
    from invoke import MockContext

    monkeypatch.syspath_prepend(str(REPO))
    import tasks

    tasks.stage_coco(MockContext(), source=S3_SOURCE, cache=str(tmp_path / "c"),
                     dest=str(tmp_path / "d"), splits="val", with_images=True)  # fmt: skip
    n = len(list((coco_sample / "val2017").iterdir()))
    assert f"{n + 1} downloaded, 0 cache hits" in capsys.readouterr().out
    for image in (coco_sample / "val2017").iterdir():
        assert (tmp_path / "d" / "val2017" / image.name).read_bytes() == image.read_bytes()
