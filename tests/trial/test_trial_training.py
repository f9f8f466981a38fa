"""Real training: mmdet models on the COCO sample (real when ../shared/coco-tiny exists) and on the
shapes set.

These run the whole local path (`train_local`: preflight, `python -m trial --local` in a child
process, Determined's local core context, mmdet's Runner) and read what the trial reported.
"""

from __future__ import annotations

import math

import pytest

from trial.runtime.metrics_log import read_metrics_log
from trial.verbs.local import LocalTrain, train_local

pytestmark = [pytest.mark.slow, pytest.mark.training]

# Small but real: 160 px images, batch 2, 4 iterations, validation on the whole val split.
FAST = ["image_scale=[160, 160]", "global_batch_size=2", "log_interval=2", "num_workers=0"]
BBOX_KEYS = {"bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l"}
LOSS_KEYS = {
    "retinanet": {"loss", "loss_cls", "loss_bbox", "lr"},
    "gfl": {"loss", "loss_cls", "loss_bbox", "loss_dfl", "lr"},
    "maskrcnn": {
        "loss",
        "loss_rpn_cls",
        "loss_rpn_bbox",
        "loss_cls",
        "loss_bbox",
        "loss_mask",
        "lr",
    },
}


def run(model, tmp_path, data, **kw):
    work = tmp_path / model
    result = train_local(
        LocalTrain(
            model=model,
            data=str(data),
            max_iters=kw.pop("max_iters", 4),
            work_dir=str(work),
            hparams=FAST,
            **kw,
        )
    )
    return result, read_metrics_log(work / "metrics.jsonl"), work


def check_reports(model, records, steps):
    train = [r for r in records if r["group"] == "training"]
    val = [r for r in records if r["group"] == "validation"]
    assert [r["steps_completed"] for r in train] == list(range(2, steps + 1, 2))
    for record in train:
        assert LOSS_KEYS[model] <= set(record["metrics"])
        assert all(math.isfinite(v) for v in record["metrics"].values())
    assert [r["steps_completed"] for r in val] == [steps]
    metrics = val[0]["metrics"]
    expected = BBOX_KEYS | ({"segm_mAP", "segm_mAP_50"} if model == "maskrcnn" else set())
    assert expected <= set(metrics)
    # COCO reports -1 for an area range with no ground truth (the shapes set has no large objects)
    assert all(metrics[k] == -1.0 or 0.0 <= metrics[k] <= 1.0 for k in expected)
    # Determined 0.38: ASHA's time_metric (batches or epochs) is reported with every validation.
    for record in [*train, *val]:
        assert record["metrics"]["batches"] == record["steps_completed"]
    assert 0 < metrics["epochs"] == pytest.approx(steps * 2 / records_per_epoch(records), rel=1e-5)
    return metrics


def records_per_epoch(records) -> float:
    """Train images per epoch, as the epochs metric implies (checked for consistency over steps)."""
    train = [r for r in records if r["group"] == "training"]
    sizes = {round(r["steps_completed"] * 2 / r["metrics"]["epochs"], 3) for r in train}
    assert len(sizes) == 1, sizes
    size = sizes.pop()
    assert size >= 1 and size == int(size), size  # a whole number of training images
    return size


@pytest.mark.parametrize("model", ["retinanet", "maskrcnn", "gfl"])
def test_trains_and_evaluates_on_the_coco_sample(model, tmp_path, coco_sample):
    result, records, work = run(model, tmp_path, coco_sample)
    metrics = check_reports(model, records, 4)
    assert result["steps"] == 4 and not result["preempted"]
    assert result["validation"] == metrics
    assert (work / "checkpoints" / result["checkpoint"] / "checkpoint.pth").is_file()


@pytest.mark.parametrize("model", ["retinanet", "maskrcnn", "gfl"])
def test_trains_and_evaluates_on_the_shapes_set(model, tmp_path, shapes_root):
    _, records, _ = run(model, tmp_path, shapes_root)
    check_reports(model, records, 4)
