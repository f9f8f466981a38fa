"""The built-in set's profile (trial/settings/local_profile.py) changes the default run only: README command A."""

from __future__ import annotations

import pytest

from trial.settings.local_profile import DEFAULT_MAX_ITERS, LOCAL_HPARAMS, SHAPES_MAX_ITERS
from trial.verbs.local import LocalTrain, local_config


def test_the_default_retinanet_run_gets_the_small_fast_detector(tmp_path):
    cfg = local_config(LocalTrain(model="retinanet", work_dir=str(tmp_path)))
    assert cfg.model.backbone.depth == 18
    assert cfg.model.neck.in_channels == [64, 128, 256, 512]
    assert cfg.model.neck.num_outs == len(cfg.model.bbox_head.anchor_generator.strides) == 3
    assert cfg.model.neck.out_channels == cfg.model.bbox_head.in_channels
    assert cfg.optim_wrapper.optimizer.lr == 0.001
    assert cfg.optim_wrapper.clip_grad.max_norm == 35
    assert cfg.train_cfg.max_iters == SHAPES_MAX_ITERS
    assert cfg.train_dataloader.batch_size == 8


@pytest.mark.parametrize(
    "request_kwargs",
    [{"data": "COCO"}, {"model": "gfl"}, {"max_iters": 7, "data": "COCO"}],
    ids=["--data", "another model", "--data --max-iters"],
)
def test_data_and_other_models_train_what_they_say(tmp_path, coco_sample, request_kwargs):
    kwargs = {"model": "retinanet", "work_dir": str(tmp_path), **request_kwargs}
    if kwargs.get("data") == "COCO":
        kwargs["data"] = str(coco_sample)
    cfg = local_config(LocalTrain(**kwargs))
    assert cfg.model.backbone.depth == 50
    assert cfg.optim_wrapper.optimizer.lr == LOCAL_HPARAMS["optim_wrapper.optimizer"]["lr"]
    assert "clip_grad" not in cfg.optim_wrapper
    assert cfg.train_cfg.max_iters == kwargs.get("max_iters", DEFAULT_MAX_ITERS)


def test_explicit_options_still_win_over_the_shapes_profile(tmp_path):
    cfg = local_config(
        LocalTrain(
            model="retinanet",
            work_dir=str(tmp_path),
            max_iters=12,
            sets=["optim_wrapper.optimizer.lr=0.0002"],
            hparams=["global_batch_size=2"],
        )
    )
    assert cfg.optim_wrapper.optimizer.lr == 0.0002
    assert cfg.optim_wrapper.optimizer.type == "AdamW"
    assert cfg.train_cfg.max_iters == 12
    assert cfg.train_dataloader.batch_size == 2
