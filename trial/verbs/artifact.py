"""What an exported model is made of (pure: dicts in, dicts and text out; no I/O).

An export is a plain MMDetection artifact: ``config.py`` (the trained model and its test pipeline,
standalone), ``model.pth`` (weights plus the dataset's class names and palette, loadable with
``torch.load(weights_only=True)``) and ``export.json`` / ``README.md`` (provenance). This module
turns a trial's resolved training config into that standalone config and writes the provenance text.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from trial.settings.config import drop_pretrained_init

EXPORT_FORMAT = "mmdet-determined-export/1"
CONFIG_FILE = "config.py"
WEIGHTS_FILE = "model.pth"
INFO_FILE = "export.json"
README_FILE = "README.md"
# Types that exist only inside the trial, and the stock mmdet type that does the same job.
TRIAL_TYPES = {
    "ZeroSafeCocoMetric": "CocoMetric",
    "SparseDetVisualizationHook": "DetVisualizationHook",
    "NodeCachedCocoDataset": "CocoDataset",  # same entries, parsed once per node
}
# mmdet's own COCO layout, relative to where a user runs mmdet's tools/test.py: a default that names
# no directory of the training machine. `invoke eval --data DIR` replaces it.
DEFAULT_DATA_ROOT = "data/coco/"
DEFAULT_SPLIT = "val"


def standalone_config(cfg: Mapping[str, Any], *, classes: Sequence[str], palette: Any) -> dict:
    """The model + test pipeline of a trial's resolved config, as a config stock mmdet can load.

    Kept: ``model`` (without ``init_cfg=Pretrained``: the weights are in model.pth), the test
    dataset's pipeline with local file access, a COCO test loader/evaluator on mmdet's default
    layout, and a visualizer. Dropped: everything about training (optimizer, schedules, train/val
    loops and loaders, hooks, work_dir, load_from, launcher), the trial's own types and the gs://
    cached backend. The class names and palette go into the dataset's ``metainfo``.
    """
    dataset = _innermost_dataset(cfg["test_dataloader"]["dataset"])
    dataset_type = TRIAL_TYPES.get(dataset["type"], dataset["type"])
    pipeline = [_local_step(step) for step in dataset.get("pipeline", [])]
    metainfo = {"classes": list(classes), "palette": _plain_palette(palette)}
    out: dict[str, Any] = {"default_scope": cfg.get("default_scope", "mmdet")}
    if cfg.get("custom_imports"):  # a user's own modules (never this project's)
        out["custom_imports"] = copy.deepcopy(dict(cfg["custom_imports"]))
    out.update(
        model=_standalone_model(cfg["model"]),
        backend_args=None,
        dataset_type=dataset_type,
        data_root=DEFAULT_DATA_ROOT,
        metainfo=metainfo,
        test_pipeline=pipeline,
        test_dataloader=test_dataloader(dataset_type, pipeline, metainfo, DEFAULT_DATA_ROOT),
        test_evaluator=test_evaluator(cfg.get("test_evaluator") or {}, DEFAULT_DATA_ROOT),
        test_cfg={"type": "TestLoop"},
        visualizer={
            "type": "DetLocalVisualizer",
            "vis_backends": [{"type": "LocalVisBackend"}],
            "name": "visualizer",
        },
        log_level="INFO",
    )
    return out


def test_dataloader(
    dataset_type: str,
    pipeline: list,
    metainfo: Mapping[str, Any],
    data_root: str,
    *,
    split: str = DEFAULT_SPLIT,
) -> dict:
    """A COCO-layout test loader: ``<data_root>/annotations/instances_<split>2017.json``."""
    return {
        "batch_size": 1,
        "num_workers": 2,
        "persistent_workers": False,
        "drop_last": False,
        "sampler": {"type": "DefaultSampler", "shuffle": False},
        "dataset": {
            "type": dataset_type,
            "data_root": data_root,
            "ann_file": f"annotations/instances_{split}2017.json",
            "data_prefix": {"img": f"{split}2017/"},
            "metainfo": copy.deepcopy(dict(metainfo)),
            "test_mode": True,
            "pipeline": copy.deepcopy(pipeline),
            "backend_args": None,
        },
    }


def test_evaluator(
    trial_evaluator: Mapping[str, Any], data_root: str, *, split: str = "val"
) -> dict:
    """The trial's evaluator with stock types and a COCO-layout annotation file."""
    evaluator = {
        k: copy.deepcopy(v)
        for k, v in trial_evaluator.items()
        if k not in ("ann_file", "backend_args", "outfile_prefix", "collect_dir")
    }
    kind = evaluator.get("type", "CocoMetric")
    evaluator["type"] = TRIAL_TYPES.get(kind, kind)
    evaluator.setdefault("metric", "bbox")
    evaluator["ann_file"] = f"{data_root}annotations/instances_{split}2017.json"
    evaluator["backend_args"] = None
    return evaluator


def categories_for(classes: Sequence[str], annotation_categories: Sequence[Mapping] | None) -> list:
    """COCO ``categories`` (id + name) for the model's labels, label i -> ``classes[i]``.

    The ids come from the training annotations when they were readable, else from COCO 2017 when the
    classes are COCO's 80, else 1..N. Predictions are written with these ids.
    """
    from trial.runtime.shapes import coco_categories

    for source in (annotation_categories or [], coco_categories()):
        by_name = {c["name"]: c["id"] for c in source}
        if all(name in by_name for name in classes):
            return [{"id": int(by_name[name]), "name": name} for name in classes]
    return [{"id": i + 1, "name": name} for i, name in enumerate(classes)]


def readme_text(info: Mapping[str, Any]) -> str:
    """The export's README.md: what it is, where it came from, how to load it with stock mmdet."""
    metrics = info.get("validation") or {}
    lines = [
        f"# {info['model']} — exported MMDetection model",
        "",
        f"- trained for {info['iterations']} iterations; source: {info['source']['checkpoint']}",
        f"- {len(info['categories'])} classes; mmdet {info['versions'].get('mmdet', '?')}",
    ]
    if metrics:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k.endswith("mAP"))
        lines.append(f"- last validation: {shown or metrics}")
    lines += [
        "",
        "Load it with stock MMDetection 3.x (this project is not needed):",
        "",
        "```python",
        "from mmdet.apis import init_detector, inference_detector",
        f"model = init_detector('{CONFIG_FILE}', '{WEIGHTS_FILE}', device='cpu')",
        "result = inference_detector(model, 'image.jpg')  # result.pred_instances: bboxes, scores, labels",
        "```",
        "",
        f"`{WEIGHTS_FILE}` holds only the weights and `meta.dataset_meta` (class names, palette): it",
        "loads with `torch.load(..., weights_only=True)`. `config.py` evaluates on mmdet's default",
        f"layout (`{DEFAULT_DATA_ROOT}`); `invoke eval` and `invoke predict` take this directory as MODEL.",
        "",
    ]
    return "\n".join(lines)


def _standalone_model(model: Mapping[str, Any]) -> dict:
    model = copy.deepcopy(dict(model))
    drop_pretrained_init(model)  # the weights are in model.pth
    return model


def _local_step(step: Mapping[str, Any]) -> dict:
    """A pipeline step that reads from local files (no gs:// backend, no file client)."""
    step = copy.deepcopy(dict(step))
    if "backend_args" in step:
        step["backend_args"] = None
    step.pop("file_client_args", None)
    return step


def _plain_palette(palette: Any) -> Any:
    """Plain ints in plain tuples (weights_only loading refuses numpy scalars)."""
    if isinstance(palette, (list, tuple)):
        return [tuple(int(c) for c in color) for color in palette]
    return palette


def _innermost_dataset(dataset: Mapping[str, Any]) -> Mapping[str, Any]:
    while "dataset" in dataset:  # RepeatDataset / ClassBalancedDataset wrappers
        dataset = dataset["dataset"]
    return dataset
