"""Where the trial's COCO data comes from: a local COCO-layout directory, the experiment's staged
``data:`` section, or the built-in shapes set."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common import cache_root
from errors import ConfigError
from staging.coco import check_coco_file, check_images, require_annotations
from trial.runtime.shapes import VERSION, make_shapes_coco
from trial.settings.config import DataPaths

SPLITS = ("train", "val")
ANN_CACHE = "anncache"  # below cache_root(): parsed annotations of local COCO folders
NEEDS_ANNOTATIONS = {"train": "nothing to train on", "val": "no mAP without ground truth"}


def resolve_data(
    data: str | None, experiment: Mapping[str, Any], *, check_json: bool = True
) -> DataPaths:
    """``--data``: a COCO directory, ``experiment`` (the staged ``data:`` section) or None (shapes).

    ``check_json=False`` checks only the layout: for a caller whose JSON was already validated
    (``invoke train``'s preflight, or staging), so a big COCO file is not parsed once more."""
    if data == "experiment":
        return staged_data_paths(experiment.get("data") or {})
    return coco_dir_paths(data, check_json=check_json) if data else default_data()


def default_data() -> DataPaths:
    """The built-in shapes set, generated once (deterministically) into the cache."""
    return coco_dir_paths(make_shapes_coco(cache_root() / "data" / VERSION), check_json=False)


def coco_dir_paths(root: str | Path, *, check_json: bool = True) -> DataPaths:
    """A COCO 2017 layout directory -> DataPaths; one clear error when it is not COCO-shaped."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(f"--data {root} is not a directory; pass a COCO-layout directory")
    for split in SPLITS:
        ann = root / "annotations" / f"instances_{split}2017.json"
        if not ann.is_file():
            raise ConfigError(
                f"--data {root} is not COCO-shaped: missing {ann.relative_to(root)}; expected "
                "annotations/instances_{train,val}2017.json and {train,val}2017/ (stage it with invoke stage-coco)"
            )
        if not (root / f"{split}2017").is_dir():
            raise ConfigError(
                f"--data {root} is not COCO-shaped: missing image folder {split}2017/"
            )
        if check_json:
            doc = check_coco_file(ann, label=str(ann))
            require_annotations(doc, label=str(ann), why=NEEDS_ANNOTATIONS[split])
            check_images(doc, root / f"{split}2017", label=str(ann))
    return DataPaths(
        train_ann=str(root / "annotations" / "instances_train2017.json"),
        val_ann=str(root / "annotations" / "instances_val2017.json"),
        train_images=str(root / "train2017") + "/",
        val_images=str(root / "val2017") + "/",
        ann_cache=str(cache_root() / ANN_CACHE),
    )


def staged_data_paths(data_section: Mapping[str, Any]) -> DataPaths:
    """DataPaths for what the startup hook staged from the experiment's ``data:`` section."""
    from staging import DataSpec

    spec = DataSpec.from_dict(data_section)
    backend_args = spec.backend_args()
    if backend_args:
        from staging.backend import register

        register()
    return DataPaths(
        train_ann=str(spec.ann_file("train")),
        val_ann=str(spec.ann_file("val")),
        train_images=spec.image_prefix("train"),
        val_images=spec.image_prefix("val"),
        backend_args=backend_args,
        ann_cache=str(spec.cache),  # the node cache staging wrote into
    )
