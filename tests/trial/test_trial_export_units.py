"""Fast checks of export/eval/predict: the standalone config, pictures, and bad input at the CLI.

The master-download path is tested only for its error: no Determined master exists here, so a UUID
SOURCE against a closed port must fail with one line (the real download needs a cluster).
"""

from __future__ import annotations

import os
import struct
from types import SimpleNamespace

import pytest
from export_helpers import bundled_types, error_lines, invoke

from errors import ConfigError
from trial.settings.config import MODELS, DataPaths, TrainSettings, build_config, load_base_config
from trial.settings.tensorboard import apply_tensorboard, set_tensorboard_dir
from trial.ui.curves import plot_curves
from trial.verbs import artifact
from trial.verbs.outdir import atomic_dir

GS_DATA = DataPaths(
    "/machine/coco/annotations/instances_train2017.json",
    "/machine/coco/annotations/instances_val2017.json",
    "gs://bucket/coco/train2017/",
    "gs://bucket/coco/val2017/",
    backend_args={"backend": "gs-cached", "cache": "/machine/cache"},
)


def trial_config(model: str):
    settings = TrainSettings(
        data=GS_DATA, work_dir="/machine/work", max_iters=100, val_interval=50,
        checkpoint_interval=50, pretrained=True, image_scale=(160, 160),
    )  # fmt: skip
    return build_config(load_base_config(MODELS[model]), settings)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_standalone_config_has_no_trial_types_machine_paths_or_training_parts(model):
    from mmengine.config import Config

    cfg = trial_config(model)
    out = artifact.standalone_config(cfg.to_dict(), classes=["a", "b"], palette=[(1, 2, 3)] * 2)
    text = Config(out).pretty_text
    for absent in ("ZeroSafeCocoMetric", "gs://", "gs-cached", "/machine", "Pretrained",
                   "optim_wrapper", "param_scheduler", "train_dataloader", "IterBasedTrainLoop",
                   "InfiniteSampler", "work_dir", "load_from", "launcher", "DetCoreHook",
                   "DetVisualizationHook", "TensorboardVisBackend"):  # fmt: skip
        assert absent not in text, absent
    assert not {"train_cfg", "val_cfg", "default_hooks", "randomness", "env_cfg"} & set(out)
    assert bundled_types(out) == []
    assert out["test_evaluator"]["type"] == "CocoMetric"
    assert out["test_dataloader"]["dataset"]["metainfo"]["classes"] == ["a", "b"]
    assert out["test_pipeline"] == out["test_dataloader"]["dataset"]["pipeline"]
    resize = next(s for s in out["test_pipeline"] if s["type"] == "Resize")
    assert tuple(resize["scale"]) == (160, 160)  # the resolved pipeline, as trained
    assert Config.fromstring(text, ".py").model.type == cfg.model.type


def test_categories_come_from_annotations_then_coco_then_label_order():
    coco = artifact.categories_for(["person", "toothbrush"], None)
    assert coco == [{"id": 1, "name": "person"}, {"id": 90, "name": "toothbrush"}]
    own = artifact.categories_for(["cat"], [{"id": 7, "name": "cat"}])
    assert own == [{"id": 7, "name": "cat"}]
    assert artifact.categories_for(["x", "y"], None) == [
        {"id": 1, "name": "x"},
        {"id": 2, "name": "y"},
    ]


def test_atomic_dir_leaves_nothing_on_error_and_refuses_a_non_empty_out(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "out") as tmp:
        (tmp / "half.txt").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "done.txt").write_text("x")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["done.txt"]
    with (
        pytest.raises(ConfigError, match="already exists and is not empty"),
        atomic_dir(tmp_path / "out"),
    ):
        pass


def test_tensorboard_goes_to_determineds_path_or_the_work_dir(tmp_path):
    cfg = trial_config("retinanet")
    assert cfg.visualizer.vis_backends == [{"type": "TensorboardVisBackend"}]
    assert cfg.default_hooks.visualization.draw is True
    assert cfg.default_hooks.visualization.backend_args == GS_DATA.backend_args
    cluster = SimpleNamespace(train=SimpleNamespace(get_tensorboard_path=lambda: tmp_path / "tb"))
    assert set_tensorboard_dir(cfg, cluster, tmp_path / "w") == tmp_path / "tb"
    assert cfg.visualizer.vis_backends[0]["save_dir"] == str(tmp_path / "tb")
    local = SimpleNamespace(train=SimpleNamespace(get_tensorboard_path=lambda: None))
    assert set_tensorboard_dir(cfg, local, tmp_path / "w") == tmp_path / "w" / "tensorboard"


def test_apply_tensorboard_keeps_the_configs_visualizer_type():
    cfg = {"visualizer": {"type": "MyVisualizer", "vis_backends": [{"type": "LocalVisBackend"}]}}
    apply_tensorboard(cfg)
    assert cfg["visualizer"]["type"] == "MyVisualizer"
    assert cfg["visualizer"]["vis_backends"] == [{"type": "TensorboardVisBackend"}]


def test_curves_png_has_a_panel_per_kind_of_metric(tmp_path):
    records = [
        {"group": "training", "steps_completed": s, "metrics": {"loss": 2 / s, "lr": 0.1, "x": 1}}
        for s in (1, 2, 3)
    ] + [{"group": "validation", "steps_completed": 3, "metrics": {"bbox_mAP": 0.2}}]
    path = plot_curves(records, tmp_path / "curves.png")
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert (width, height) == (1500, 400)  # losses | learning rate | validation mAP
    assert plot_curves([], tmp_path / "none.png") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "nothing-here", "does not exist and is not a checkpoint UUID"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "is not a checkpoint"),
        (
            lambda d: (d / "w" / "checkpoints").mkdir(parents=True) or d / "w",
            "has no checkpoint yet",
        ),
        (
            lambda d: (d / "x.pth").write_bytes(b"not a pickle") and d / "x.pth",
            "x.pth is not a readable checkpoint",
        ),
        (
            lambda d: "0c1c8e49-3b5a-4f5e-9d0e-0123456789ab",
            "no Determined master reachable at http://127.0.0.1:9",
        ),
    ],
    ids=["missing", "empty-dir", "no-checkpoint", "not-a-pickle", "uuid-no-master"],
)
def test_export_of_a_bad_source_is_one_line_and_writes_nothing(tmp_path, make, message):
    source = make(tmp_path)
    env = {**os.environ, "DET_MASTER": "http://127.0.0.1:9"}  # nothing listens on port 9
    proc = invoke("export", str(source), "--out", str(tmp_path / "out"), cwd=tmp_path, env=env)
    assert proc.returncode == 1, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_eval_on_data_that_is_not_coco_is_one_line(tmp_path):
    (tmp_path / "notcoco" / "annotations").mkdir(parents=True)
    (tmp_path / "notcoco" / "val2017").mkdir()
    (tmp_path / "notcoco" / "annotations" / "instances_val2017.json").write_text('{"images": 3}')
    for data, message in [
        (tmp_path / "nope", "is not a COCO-layout directory for --split val: missing annotations"),
        (tmp_path / "notcoco", "instances_val2017.json"),
    ]:
        proc = invoke("eval", str(tmp_path), "--data", str(data), cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr
        lines = error_lines(proc)
        assert len(lines) == 1 and message in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "eval_val.json").exists()


def test_predict_refuses_a_non_empty_out_and_missing_images(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    proc = invoke("predict", str(tmp_path), "a.jpg", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 1 and "already exists and is not empty" in error_lines(proc)[0]
    proc = invoke("predict", str(tmp_path), "a.jpg", "--out", str(tmp_path / "o2"), cwd=tmp_path)
    assert proc.returncode == 1 and "image a.jpg does not exist" in error_lines(proc)[0]
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_help_lists_the_three_verbs(tmp_path):
    listing = invoke("--list", cwd=tmp_path).stdout
    for verb in ("export", "eval", "predict"):
        assert verb in listing
    helptext = invoke("--help", "predict", cwd=tmp_path).stdout
    for option in ("--out", "--score-thr", "--master"):
        assert option in helptext


def test_predictions_become_coco_results_with_category_ids_and_rle_masks():
    import torch
    from mmengine.structures import InstanceData

    from trial.verbs.predict import coco_results

    masks = torch.zeros(2, 4, 6, dtype=torch.bool)
    masks[0, 1:3, 2:5] = True
    instances = InstanceData(
        bboxes=torch.tensor([[2.0, 1.0, 5.0, 3.0], [0.0, 0.0, 1.5, 1.25]]),
        scores=torch.tensor([0.9, 0.4]),
        labels=torch.tensor([1, 0]),
        masks=masks,
    )
    categories = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
    results = coco_results(instances, image_id=7, categories=categories)
    assert [(r["image_id"], r["category_id"], r["bbox"]) for r in results] == [
        (7, 3, [2.0, 1.0, 3.0, 2.0]),
        (7, 1, [0.0, 0.0, 1.5, 1.25]),
    ]
    assert results[0]["score"] == pytest.approx(0.9)
    assert results[0]["segmentation"]["size"] == [4, 6]
    from pycocotools import mask as mask_utils

    rle = dict(results[0]["segmentation"], counts=results[0]["segmentation"]["counts"].encode())
    assert mask_utils.area(rle) == 6


def test_images_are_files_or_directories_and_png_names_stay_unique(tmp_path):
    from trial.verbs.predict import image_paths, output_names

    (tmp_path / "d").mkdir()
    for name in ("b.JPG", "a.png", "notes.txt"):
        (tmp_path / "d" / name).write_bytes(b"x")
    (tmp_path / "a.jpg").write_bytes(b"x")
    paths = image_paths([str(tmp_path / "d"), str(tmp_path / "a.jpg")])
    assert [p.name for p in paths] == ["a.png", "b.JPG", "a.jpg"]
    assert output_names(paths) == ["a.png", "b.png", "a-2.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no"):
        image_paths([str(tmp_path / "empty")])
