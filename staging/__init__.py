"""Stage COCO from a local path or gs:// into a node-local cache and a COCO-layout view.

    from staging import DataSpec, StageResult, stage_coco
    spec = DataSpec.from_dict(cfg["data"])
    result = stage_coco(spec, progress=True)

Imports are lazy: ``import staging`` costs nothing until a name is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from staging.spec import DataSpec
    from staging.stage import StageResult, stage_coco

__all__ = ["DataSpec", "StageResult", "stage_coco"]

_HOMES = {"DataSpec": "staging.spec", "StageResult": "staging.stage", "stage_coco": "staging.stage"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'staging' has no attribute {name!r}")
