"""`invoke export` / `invoke eval` / `invoke predict` on real runs, and the pictures a run leaves.

A RetinaNet and a Mask R-CNN train 4 iterations on the COCO sample (real when ../shared/coco-tiny
exists); their exports are loaded by stock mmdet in a Python where this project cannot be imported,
and must predict what the trial itself predicts, evaluate to the run's own last validation, and
draw/write predictions a COCO tool reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from export_helpers import (
    DRAW,
    FAST,
    KEEP_ALL,
    error_lines,
    invoke,
    stock_predict,
    trial_predict,
)

from trial.verbs.evaluate import evaluate_model
from trial.verbs.export import export_model
from trial.verbs.local import LocalTrain, train_local

pytestmark = [pytest.mark.slow, pytest.mark.training]


def map_metrics(validation: dict) -> dict:
    """A run's validation metrics without Determined's time metrics (batches, epochs) and the
    mean training loss the trial reports with them: what an evaluation of the model computes."""
    return {k: v for k, v in validation.items() if k not in ("batches", "epochs", "train_loss")}


def train(model: str, work: Path, data: Path) -> dict:
    return train_local(
        LocalTrain(
            model=model, data=str(data), max_iters=4, work_dir=str(work), hparams=FAST,
            sets=KEEP_ALL[model] + DRAW,
        )
    )  # fmt: skip


@pytest.fixture(scope="module")
def retinanet(tmp_path_factory, coco_sample):
    """A trained RetinaNet work dir and its export made through `invoke export`."""
    root = tmp_path_factory.mktemp("retinanet")
    result = train("retinanet", root / "work", coco_sample)
    proc = invoke("export", str(root / "work"), "--out", str(root / "export"), cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"exported retinanet (iteration 4, checkpoint {result['checkpoint']})" in proc.stdout
    return root / "work", root / "export", result


def test_export_holds_a_standalone_config_and_weights_with_class_names(retinanet, coco_sample):
    work, export, result = retinanet
    assert sorted(p.name for p in export.iterdir()) == [
        "README.md",
        "config.py",
        "export.json",
        "model.pth",
    ]
    config = (export / "config.py").read_text()
    for absent in ("ZeroSafeCocoMetric", "gs://", "optim_wrapper", "param_scheduler",
                   "train_dataloader", "work_dir", str(work), str(coco_sample), "Pretrained"):  # fmt: skip
        assert absent not in config, absent
    import torch

    weights = torch.load(export / "model.pth", weights_only=True)  # no pickled objects
    assert set(weights) == {"meta", "state_dict"}
    assert len(weights["meta"]["dataset_meta"]["classes"]) == 80
    assert weights["meta"]["dataset_meta"]["classes"][0] == "person"
    info = json.loads((export / "export.json").read_text())
    assert info["model"] == "retinanet" and info["iterations"] == 4
    assert info["source"]["checkpoint"] == result["checkpoint"]
    assert info["validation"] == result["validation"]
    assert info["categories"][0] == {"id": 1, "name": "person"}
    assert info["categories"][-1] == {"id": 90, "name": "toothbrush"}


def test_stock_mmdet_without_this_project_predicts_what_the_trial_predicts(
    retinanet, coco_sample, tmp_path
):
    work, export, result = retinanet
    image = sorted((coco_sample / "val2017").iterdir())[0]
    stock = stock_predict(export, image, tmp_path / "stock.npz")
    own = trial_predict(work, result["checkpoint"], image)
    assert len(own["scores"]) > 0
    np.testing.assert_array_equal(stock["labels"], own["labels"])
    np.testing.assert_allclose(stock["bboxes"], own["bboxes"], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(stock["scores"], own["scores"], rtol=1e-5, atol=1e-6)
    assert stock["meta"]["classes"][0] == "person"


def test_eval_of_the_export_reproduces_the_runs_last_validation(retinanet, coco_sample, tmp_path):
    _, export, result = retinanet
    proc = invoke(
        "eval", str(export), "--data", str(coco_sample), "--out", str(tmp_path / "m.json"),
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all" in proc.stdout  # COCO table
    written = json.loads((tmp_path / "m.json").read_text())
    annotations = json.loads((coco_sample / "annotations" / "instances_val2017.json").read_text())
    assert written["split"] == "val" and written["images"] == len(annotations["images"])
    assert written["metrics"] == map_metrics(result["validation"])


def test_eval_of_a_work_dir_equals_eval_of_its_export(retinanet, coco_sample, tmp_path):
    work, _, result = retinanet
    metrics = evaluate_model(str(work), str(coco_sample), out=str(tmp_path / "m.json"))["metrics"]
    assert metrics == map_metrics(result["validation"])


def test_predict_writes_a_png_per_image_and_coco_results(retinanet, coco_sample, tmp_path):
    from PIL import Image
    from pycocotools.coco import COCO

    work, export, result = retinanet
    images = sorted((coco_sample / "val2017").iterdir())[:2]
    scores = trial_predict(work, result["checkpoint"], images[0])["scores"]
    threshold = float(np.sort(scores)[-5])  # at least 5 detections on the first image
    out = tmp_path / "pred"
    proc = invoke(
        "predict", str(export), ",".join(map(str, images)), "--out", str(out),
        "--score-thr", str(threshold), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(f"{p.stem}.png" for p in images)
    for image in images:
        with Image.open(out / f"{image.stem}.png") as drawn, Image.open(image) as original:
            assert drawn.format == "PNG" and drawn.size == original.size
    coco = COCO(str(out / "images.json"))
    detections = coco.loadRes(str(out / "results.json"))
    assert len(detections.getAnnIds(imgIds=[1])) >= 5
    assert all(a["score"] >= threshold - 1e-5 for a in detections.anns.values())
    assert {a["category_id"] for a in detections.anns.values()} <= set(coco.getCatIds())


def test_predict_stops_on_an_undecodable_image_with_nothing_in_out(
    retinanet, coco_sample, tmp_path
):
    _, export, _ = retinanet
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    good = sorted((coco_sample / "val2017").iterdir())[0]
    (inputs / "a.jpg").write_bytes(good.read_bytes())
    (inputs / "b.jpg").write_bytes(b"this is not a JPEG")
    proc = invoke("predict", str(export), str(inputs), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1 and "b.jpg cannot be decoded" in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))  # no temp directory left behind


def test_a_run_writes_tensorboard_events_and_a_curves_png(retinanet):
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    work, _, _ = retinanet
    events = EventAccumulator(str(work / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"loss", "loss_cls", "loss_bbox", "lr", "coco/bbox_mAP"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("loss")] == [2, 4]
    assert "val_img" in tags["images"]  # a validation image with its predictions drawn
    with Image.open(work / "curves.png") as png:
        assert png.format == "PNG" and png.size[0] >= 1000  # losses | lr | validation mAP
    assert (work / "result.json").is_file()


def test_mask_rcnn_export_round_trips(tmp_path, coco_sample):
    result = train("maskrcnn", tmp_path / "work", coco_sample)
    info = export_model(str(tmp_path / "work"), tmp_path / "export")
    assert info["model"] == "maskrcnn"
    image = sorted((coco_sample / "val2017").iterdir())[0]
    stock = stock_predict(tmp_path / "export", image, tmp_path / "stock.npz")
    own = trial_predict(tmp_path / "work", result["checkpoint"], image)
    assert len(own["scores"]) > 0 and "masks" in stock
    np.testing.assert_array_equal(stock["labels"], own["labels"])
    np.testing.assert_allclose(stock["bboxes"], own["bboxes"], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(stock["scores"], own["scores"], rtol=1e-5, atol=1e-6)
    assert stock["masks"].shape == own["masks"].shape
    assert np.mean(stock["masks"] != own["masks"]) < 1e-4
    metrics = evaluate_model(
        str(tmp_path / "export"), str(coco_sample), out=str(tmp_path / "m.json")
    )["metrics"]
    assert metrics == map_metrics(result["validation"])
    assert {"bbox_mAP", "segm_mAP"} <= set(metrics)


def test_a_checkpoint_dir_or_its_pth_file_exports_like_the_work_dir(retinanet, tmp_path):
    work, export, result = retinanet
    stored = work / "checkpoints" / result["checkpoint"]
    expected = json.loads((export / "export.json").read_text())
    for name, source in [("dir", stored), ("file", stored / "checkpoint.pth")]:
        info = export_model(str(source), tmp_path / name)
        for key in ("model", "iterations", "validation", "categories"):
            assert info[key] == expected[key], (name, key)
        assert info["source"]["checkpoint"] == result["checkpoint"]
        assert (tmp_path / name / "config.py").read_text() == (export / "config.py").read_text()
