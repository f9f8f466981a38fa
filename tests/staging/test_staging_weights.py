"""Pretrained checkpoints through the node cache (staging/weights.py): from a disk or gs:// mirror
(the GCS emulator over HTTP, downloads counted at its proxy), once per node, with one-line errors
for a missing mirror object and for a URL that cannot be reached offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from staging_helpers import REPO, incomplete_files

from common import free_port
from errors import ConfigError, StagingError
from staging.testing.gcs_emulator import upload_bytes
from staging.weights import checkpoint_refs, resolve_url, rewrite_checkpoints, stage_weights

R18 = "torchvision://resnet18"
R18_FILE = "resnet18-f37072fd.pth"  # the name in mmengine's torchvision table (the URL's file)
MIRROR = "gs://weights/mirror"


@pytest.fixture(scope="module")
def r18_bytes(tmp_path_factory) -> bytes:
    """A real ResNet-18 state dict, as mmdet builds the backbone (torch.save format)."""
    import torch
    from mmdet.models.backbones import ResNet

    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("r18") / R18_FILE
    torch.save(ResNet(depth=18).state_dict(), path)
    return path.read_bytes()


@pytest.fixture
def disk_mirror(tmp_path, r18_bytes) -> Path:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / R18_FILE).write_bytes(r18_bytes)
    return mirror


def test_refs_come_from_init_cfg_and_load_from_and_resolve_to_urls():
    cfg = {
        "model": {
            "backbone": {"init_cfg": {"type": "Pretrained", "checkpoint": R18}},
            "neck": {"init_cfg": [{"type": "Xavier"}, {"type": "Pretrained", "checkpoint": R18}]},
        },
        "load_from": "/local/detector.pth",
    }
    assert checkpoint_refs(cfg) == [R18, "/local/detector.pth"]
    assert checkpoint_refs({**cfg, "resume": True}) == [R18]  # a resume loads its own checkpoint
    assert resolve_url(R18) == f"https://download.pytorch.org/models/{R18_FILE}"
    assert resolve_url("open-mmlab://resnext101_32x4d").startswith("https://")
    assert resolve_url("/local/detector.pth") is None  # already on disk: nothing to stage
    with pytest.raises(ConfigError, match="'torchvision://nonet' is not in mmengine's"):
        resolve_url("torchvision://nonet")
    with pytest.raises(ConfigError, match="cannot stage this scheme"):
        resolve_url("hdfs://bucket/x.pth")
    n = rewrite_checkpoints(cfg, {R18: Path("/cache/r18.pth")})
    assert n == 2 and cfg["model"]["neck"]["init_cfg"][1]["checkpoint"] == "/cache/r18.pth"


def test_disk_mirror_staged_once_read_only_and_pinned(tmp_path, disk_mirror, r18_bytes):
    cache = tmp_path / "cache"
    first = stage_weights(cache, [R18], mirror=str(disk_mirror))
    assert (first.downloads, first.cache_hits) == (1, 0)
    path = first.paths[R18]
    assert path.read_bytes() == r18_bytes and cache in path.parents
    assert not os.access(path, os.W_OK) or os.geteuid() == 0
    assert path.stat().st_mode & 0o777 == 0o444
    again = stage_weights(cache, [R18], mirror=str(disk_mirror))
    assert (again.downloads, again.cache_hits, again.paths) == (0, 1, first.paths)
    (disk_mirror / R18_FILE).unlink()  # the trial's ranks trust the pin: no source call at all
    pinned = stage_weights(cache, [R18], mirror=str(disk_mirror), use_pins=True)
    assert (pinned.downloads, pinned.paths) == (0, first.paths)
    assert incomplete_files(cache) == []


@pytest.mark.gcs
def test_gcs_mirror_n_processes_download_once(proxy, tmp_path, r18_bytes):
    upload_bytes(f"{MIRROR}/{R18_FILE}", r18_bytes)
    cache = tmp_path / "cache"
    code = (
        "import sys; from staging.weights import stage_weights; "
        f"r = stage_weights(sys.argv[1], [{R18!r}], mirror={MIRROR!r}); print(r.downloads)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(cache)], cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]  # fmt: skip
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum(int(out) for out, _ in outs) == 1
    assert len(proxy.media_requests(R18_FILE)) == 1
    second = stage_weights(cache, [R18], mirror=MIRROR)  # the next trial on the node
    assert second.downloads == 0 and second.paths[R18].read_bytes() == r18_bytes
    assert len(proxy.media_requests(R18_FILE)) == 1


@pytest.mark.gcs
def test_missing_mirror_object_is_one_line(emulator, tmp_path):
    upload_bytes(f"{MIRROR}/other.pth", b"x")
    with pytest.raises(StagingError) as err:
        stage_weights(tmp_path / "cache", ["torchvision://resnet34"], mirror=MIRROR)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"missing object {MIRROR}/resnet34-b627a593.pth" in msg
    assert "torchvision://resnet34" in msg and "data.weights_mirror" in msg
    assert not (tmp_path / "cache" / "objects").exists() or incomplete_files(tmp_path) == []


def test_bad_disk_mirror_and_offline_url_say_how_to_fix(tmp_path):
    with pytest.raises(StagingError, match=r"data.weights_mirror .*/nope is not a directory"):
        stage_weights(tmp_path / "cache", [R18], mirror=str(tmp_path / "nope"))
    url = f"http://127.0.0.1:{free_port()}/models/{R18_FILE}"  # nothing listens: offline
    with pytest.raises(StagingError) as err:
        stage_weights(tmp_path / "cache", [url])
    msg = str(err.value)
    assert "\n" not in msg and f"cannot reach {url}" in msg
    assert (
        "set data.weights_mirror to gs://bucket/weights, s3://bucket/weights or a directory" in msg
    )
    assert not (tmp_path / "cache" / "objects").exists()


def test_staging_cli_stages_the_experiments_weights(tmp_path, coco_sample, disk_mirror):
    """What the startup hook runs: `python -m trial.settings.pretrained` names the checkpoints the
    experiment's model loads (hyperparameters read like the trial), and `python -m staging
    --experiment-config --checkpoints` stages the COCO data and those checkpoints."""
    exp = {
        "name": "r18",
        "hyperparameters": {
            "model": "retinanet",
            "model.backbone.init_cfg.checkpoint": R18,
        },
        "data": {
            "source": str(coco_sample),
            "cache": str(tmp_path / "cache"),
            "dest": str(tmp_path / "coco"),
            "weights_mirror": str(disk_mirror),
        },
    }
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(exp))
    refs = tmp_path / "checkpoints.json"
    names = [sys.executable, "-m", "trial.settings.pretrained", "--experiment-config", str(path),
             "--out", str(refs)]  # fmt: skip
    cmd = [sys.executable, "-m", "staging", "--quiet", "--experiment-config", str(path),
           "--checkpoints", str(refs)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("DET_HPARAMS", None)
    without = subprocess.run(cmd[:-2], cwd=REPO, env=env, capture_output=True, text=True)
    assert without.returncode == 1 and "python -m trial.settings.pretrained" in without.stderr
    assert not (tmp_path / "coco").exists()  # refused before anything was staged
    for step in (names, cmd):
        done = subprocess.run(step, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    assert "weights: 1 checkpoint(s), 1 downloaded, 0 cache hits" in done.stdout
    pins = list((tmp_path / "cache" / "manifests").glob("weights-*.json"))
    assert [json.loads(p.read_text())["ref"] for p in pins] == [R18]
    # Determined's own hyperparameters (DET_HPARAMS) win: pretrained off -> nothing to stage
    env["DET_HPARAMS"] = json.dumps({"model": "retinanet", "pretrained": False})
    for step in (names, cmd):
        done = subprocess.run(step, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    assert "weights: 0 checkpoint(s), 0 downloaded, 0 cache hits" in done.stdout


@pytest.mark.gcs
def test_startup_hook_stages_weights_from_trial_info(proxy, tmp_path, coco_sample, r18_bytes):
    """hooks/startup-hook.sh on a cluster node: the experiment config and the trial's
    hyperparameters come from Determined's trial.json; the second trial downloads nothing."""
    upload_bytes(f"{MIRROR}/{R18_FILE}", r18_bytes)
    config = {
        "name": "r18",
        "hyperparameters": {"model": "gfl"},  # the trial's hparams (below) are what count
        "data": {"source": str(coco_sample), "cache": str(tmp_path / "cache"),
                 "dest": str(tmp_path / "coco"), "weights_mirror": MIRROR},
    }  # fmt: skip
    hparams = {"model": "retinanet", "model.backbone.init_cfg.checkpoint": R18}
    info = tmp_path / "trial.json"  # the shape of /run/determined/info/trial.json
    info.write_text(json.dumps({"trial_id": 3, "hparams": hparams, "config": config}))
    drop = ("PYTHONPATH", "DET_EXPERIMENT_CONFIG", "DET_HPARAMS", "MMDET_DET_EXPERIMENT_CONFIG")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(MMDET_PYTHON=sys.executable, MMDET_DET_TRIAL_INFO=str(info))
    hook = [str(REPO / "hooks" / "startup-hook.sh")]
    for downloads in (1, 0):
        done = subprocess.run(["bash", *hook], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"weights: 1 checkpoint(s), {downloads} downloaded" in done.stdout
    assert len(proxy.media_requests(R18_FILE)) == 1


def test_stage_coco_task_weights_options(tmp_path, coco_sample, disk_mirror, capsys, monkeypatch):
    """`invoke stage-coco --weights-mirror DIR --experiment-config X`; without an experiment
    there is no model to name checkpoints: one line, exit 1, no COCO summary lost."""
    from invoke import Exit, MockContext

    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.delenv("DET_HPARAMS", raising=False)
    import tasks

    where = {"source": str(coco_sample), "cache": str(tmp_path / "c"), "dest": str(tmp_path / "d")}
    with pytest.raises(Exit) as exc:
        tasks.stage_coco(MockContext(), splits="val", stage_weights=True, **where)
    assert exc.value.code == 1 and "\n" not in exc.value.message
    assert "pass --experiment-config" in exc.value.message
    assert not (tmp_path / "d").exists()  # checked before anything is staged
    exp = tmp_path / "exp.yaml"
    hparams = {"model": "retinanet", "model.backbone.init_cfg.checkpoint": R18}
    exp.write_text(yaml.safe_dump({"hyperparameters": hparams}))
    capsys.readouterr()
    tasks.stage_coco(MockContext(), splits="val", experiment_config=str(exp),
                     weights_mirror=str(disk_mirror), **where)  # fmt: skip
    out = capsys.readouterr().out
    assert "weights: 1 checkpoint(s), 1 downloaded, 0 cache hits" in out


def test_checkpoint_from_its_https_url_is_fetched_once(tmp_path, disk_mirror, r18_bytes):
    """No mirror: the checkpoint comes from its URL (a real HTTP server on loopback standing in
    for the model zoo); the second staging on the node sends a HEAD, never a GET."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    gets: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):
            gets.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=disk_mirror)
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{R18_FILE}"
        first = stage_weights(tmp_path / "cache", [url])
        again = stage_weights(tmp_path / "cache", [url])
    finally:
        server.shutdown()
        server.server_close()
    assert (first.downloads, again.downloads, again.cache_hits) == (1, 0, 1)
    assert again.paths[url].read_bytes() == r18_bytes and gets == [f"/{R18_FILE}"]
