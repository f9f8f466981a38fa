"""Helpers for the input tests: variants of the COCO sample with one thing wrong, in a temp dir.

The annotation files are rewritten there; images are symlinked to the sample (a truncated one is
written as a new file), so the sample itself is never changed or copied into the repository.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def coco_variant(
    sample: Path,
    root: Path,
    *,
    empty_train: bool = False,
    empty_val: bool = False,
    drop_val_image: bool = False,
    truncate_train_image: bool = False,
) -> tuple[Path, str | None]:
    """A COCO layout at ``root`` made from ``sample`` with the named fault; returns (root, the
    image file the fault concerns or None)."""
    named = None
    for split in ("train", "val"):
        doc = json.loads((sample / "annotations" / f"instances_{split}2017.json").read_text())
        if (split == "train" and empty_train) or (split == "val" and empty_val):
            doc["annotations"] = []
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(doc))
        folder = root / f"{split}2017"
        folder.mkdir()
        names = sorted(img["file_name"] for img in doc["images"])
        for i, name in enumerate(names):
            source = sample / f"{split}2017" / name
            if split == "val" and drop_val_image and i == len(names) // 2:
                named = name
                continue
            if split == "train" and truncate_train_image and i == 1:
                named = name
                data = source.read_bytes()
                (folder / name).write_bytes(data[: len(data) * 2 // 3])  # a cut-off download
                continue
            (folder / name).symlink_to(source)
    return root, named
