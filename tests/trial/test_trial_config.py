"""The pure config builder: mmdet base config + data + schedule + overrides."""

from __future__ import annotations

import pytest

from errors import ConfigError
from trial.settings.config import (
    MODELS,
    DataPaths,
    TrainSettings,
    build_config,
    load_base_config,
    resolve_base,
)
from trial.settings.overrides import apply_overrides, flatten_hparams, parse_set_options

DATA = DataPaths("/d/a/train.json", "/d/a/val.json", "/d/train2017/", "/d/val2017/")


def settings(**kw) -> TrainSettings:
    base = dict(data=DATA, work_dir="/w", max_iters=1200, val_interval=600, checkpoint_interval=300)
    return TrainSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def retinanet():
    return load_base_config(MODELS["retinanet"])


@pytest.mark.parametrize(
    ("model", "ref"),
    [
        ("retinanet", "mmdet::retinanet/retinanet_r50_fpn_1x_coco.py"),
        ("maskrcnn", "mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py"),
        ("gfl", "mmdet::gfl/gfl_r50_fpn_1x_coco.py"),
        (
            "mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py",
            "mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py",
        ),
        ("my_config.py", "my_config.py"),
    ],
)
def test_resolve_base_maps_names_and_passes_config_refs(model, ref):
    assert resolve_base(model) == ref


def test_unknown_model_names_the_choices():
    with pytest.raises(
        ConfigError, match=r"unknown model 'nosuchmodel'; choose one of retinanet, maskrcnn, gfl"
    ):
        resolve_base("nosuchmodel")


def test_missing_mmdet_config_is_a_config_error():
    with pytest.raises(ConfigError, match=r"cannot load config 'mmdet::nope/nope\.py'"):
        load_base_config("mmdet::nope/nope.py")


def test_build_config_makes_an_iteration_schedule_from_the_1x_epochs(retinanet):
    cfg = build_config(retinanet, settings())
    assert cfg.train_cfg == dict(
        type="ResumableIterBasedTrainLoop", max_iters=1200, val_interval=600
    )
    warmup, steps = cfg.param_scheduler
    assert (warmup["type"], warmup["by_epoch"], warmup["end"]) == ("LinearLR", False, 500)
    # 12 epochs -> 1200 iterations, so the [8, 11] epoch milestones land at [800, 1100].
    assert steps["milestones"] == [800, 1100] and steps["by_epoch"] is False
    assert (steps["begin"], steps["end"]) == (0, 1200)
    assert cfg.train_dataloader.sampler.type == "InfiniteSampler"
    assert cfg.default_hooks.checkpoint is None
    assert cfg.log_processor.by_epoch is False
    assert "max_epochs" not in cfg.train_cfg


def test_short_runs_keep_a_proportional_warmup(retinanet):
    cfg = build_config(retinanet, settings(max_iters=50, val_interval=50))
    assert cfg.param_scheduler[0]["end"] == 10


def test_build_config_points_every_split_and_the_metric_at_the_data(retinanet):
    backend = {"backend": "gs_cached", "cache_root": "/c"}
    cfg = build_config(
        retinanet, settings(data=DataPaths(**{**DATA.__dict__, "backend_args": backend}))
    )
    train, val = cfg.train_dataloader.dataset, cfg.val_dataloader.dataset
    assert (train.ann_file, train.data_prefix.img) == ("/d/a/train.json", "/d/train2017/")
    assert (val.ann_file, val.data_prefix.img) == ("/d/a/val.json", "/d/val2017/")
    assert cfg.test_dataloader.dataset.ann_file == "/d/a/val.json"
    assert cfg.val_evaluator.ann_file == "/d/a/val.json"
    assert cfg.val_evaluator.type == "ZeroSafeCocoMetric"
    assert train.pipeline[0]["backend_args"] == backend  # images through the backend
    assert train.backend_args is None  # annotations are local files


def test_build_config_leaves_the_base_untouched(retinanet):
    before = retinanet.pretty_text
    build_config(
        retinanet,
        settings(
            pretrained=False, image_scale=(256, 256), overrides={"model.bbox_head.num_classes": 3}
        ),
    )
    assert retinanet.pretty_text == before


def test_no_pretrained_and_image_scale(retinanet):
    cfg = build_config(retinanet, settings(pretrained=False, image_scale=(256, 256), batch_size=4))
    assert cfg.model.backbone.init_cfg is None
    assert (cfg.model.backbone.frozen_stages, cfg.model.backbone.norm_eval) == (-1, False)
    assert [s["scale"] for s in cfg.train_dataloader.dataset.pipeline if s["type"] == "Resize"] == [
        (256, 256)
    ]
    assert cfg.train_dataloader.batch_size == 4


def test_overrides_apply_dotted_keys_and_list_indices(retinanet):
    cfg = build_config(
        retinanet,
        settings(
            overrides={
                "optim_wrapper.optimizer.lr": 0.005,
                "train_dataloader.dataset.pipeline.2.scale": (64, 64),
            }
        ),
    )
    assert cfg.optim_wrapper.optimizer.lr == 0.005
    assert cfg.train_dataloader.dataset.pipeline[2]["scale"] == (64, 64)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("optim_wrapper.optimizer.lrr", "did you mean 'optim_wrapper.optimizer.lr'"),
        ("optim_wraper.optimizer.lr", "unknown config key 'optim_wraper.optimizer.lr'"),
        ("train_dataloader.dataset.pipeline.9.scale", "'9' is not an index of a 5-item list"),
    ],
)
def test_bad_override_keys_are_refused_with_a_hint(retinanet, key, message):
    cfg = build_config(retinanet, settings())
    with pytest.raises(ConfigError, match=message):
        apply_overrides(cfg, {key: 1})


def test_parse_set_options_reads_yaml_scalars():
    assert parse_set_options(["a.b=0.01", "c=[1, 2]", "d=true", "e=text"]) == {
        "a.b": 0.01,
        "c": [1, 2],
        "d": True,
        "e": "text",
    }
    with pytest.raises(ConfigError, match="is not key=value"):
        parse_set_options(["lr0.01"])


def test_component_specs_replace_whole():
    hp = {"optim_wrapper": {"optimizer": {"type": "AdamW", "lr": 1e-4}}}
    assert flatten_hparams(hp, reserved=frozenset()) == {
        "optim_wrapper.optimizer": {"type": "AdamW", "lr": 1e-4}
    }


def test_flatten_hparams_handles_nested_and_dotted_names():
    hp = {
        "model": "gfl",
        "optim_wrapper.optimizer.lr": 0.02,
        "model_cfg": {"bbox_head": {"num_classes": 3}},
    }
    assert flatten_hparams(hp, reserved=frozenset({"model"})) == {
        "optim_wrapper.optimizer.lr": 0.02,
        "model_cfg.bbox_head.num_classes": 3,
    }


def lr_per_iteration(param_scheduler, max_iters: int, *, lr: float = 1e-3) -> list[float]:
    """The lr of each training iteration under ``param_scheduler``, as mmengine's Runner steps
    iteration-based schedulers (after every iteration)."""
    import torch
    from mmengine.optim import OptimWrapper
    from mmengine.registry import PARAM_SCHEDULERS

    optimizer = OptimWrapper(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr))
    scheds = [
        PARAM_SCHEDULERS.build(dict(s), default_args={"optimizer": optimizer})
        for s in param_scheduler
    ]
    seen = []
    for _ in range(max_iters):
        seen.append(optimizer.param_groups[0]["lr"])
        for sched in scheds:
            sched.step()
    return seen


EPOCH_WARMUP = [
    dict(type="LinearLR", start_factor=0.001, by_epoch=True, begin=0, end=1),
    dict(type="MultiStepLR", begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]


@pytest.mark.parametrize("max_iters", [1, 2, 3, 4, 6, 9, 10, 20, 400])
@pytest.mark.parametrize("warmup", ["iterations", "epochs"])
def test_a_short_run_trains_at_the_configured_lr_after_a_warmup_inside_it(
    retinanet, max_iters, warmup
):
    """A warmup (500 iterations, or 1 of 12 epochs) squeezed into a short run was cut to end=1:
    LinearLR then never left its first factor, and the whole run trained at 0.001x the lr
    (issue 29, W9). The warmup must fit inside the run and reach the configured lr."""
    base = retinanet.copy()
    if warmup == "epochs":
        base["param_scheduler"] = EPOCH_WARMUP
    cfg = build_config(base, settings(max_iters=max_iters, val_interval=max_iters))
    lrs = lr_per_iteration(cfg.param_scheduler, max_iters)
    assert max(lrs) == pytest.approx(1e-3), lrs  # the configured lr is reached ...
    first_full = lrs.index(max(lrs))
    assert first_full <= max(1, max_iters // 2), lrs  # ... within the first half of the run
