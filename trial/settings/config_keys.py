"""Which keys mmengine/mmdet accept at a place in a config: the registered type's arguments.

A config node ``dict(type='LoggerHook', interval=50)`` is built as ``LoggerHook(interval=50)``, so
every argument of ``LoggerHook.__init__`` (``log_metric_by_epoch``, ...) is a valid key there even
when the base config does not spell it out. The names come from the constructor signatures of the
class the registry holds for ``type`` (following ``**kwargs`` up the class hierarchy, as
``CocoDataset`` passes ``indices`` on to mmengine's ``BaseDataset``). Untyped places that
mmengine builds itself get the signature of what it calls: the top level (``Runner``) and the data
loaders (``torch.utils.data.DataLoader``). Anything else keeps to the keys present.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any

# Registries to search, tried first when the key names their kind (``...dataset``, ``...pipeline``).
REGISTRY_HINTS = {
    "model": "MODELS",
    "dataset": "DATASETS",
    "pipeline": "TRANSFORMS",
    "sampler": "DATA_SAMPLERS",
    "batch_sampler": "DATA_SAMPLERS",
    "optimizer": "OPTIMIZERS",
    "optim_wrapper": "OPTIM_WRAPPERS",
    "param_scheduler": "PARAM_SCHEDULERS",
    "val_evaluator": "METRICS",
    "test_evaluator": "METRICS",
    "visualizer": "VISUALIZERS",
    "vis_backends": "VISBACKENDS",
    "log_processor": "LOG_PROCESSORS",
    "train_cfg": "LOOPS",
    "val_cfg": "LOOPS",
    "test_cfg": "LOOPS",
    "default_hooks": "HOOKS",
    "custom_hooks": "HOOKS",
}
REGISTRIES = (
    "MODELS", "TASK_UTILS", "DATASETS", "TRANSFORMS", "DATA_SAMPLERS", "HOOKS", "OPTIMIZERS",
    "OPTIM_WRAPPERS", "PARAM_SCHEDULERS", "METRICS", "LOOPS", "VISUALIZERS", "VISBACKENDS",
    "LOG_PROCESSORS", "WEIGHT_INITIALIZERS", "MODEL_WRAPPERS", "OPTIM_WRAPPER_CONSTRUCTORS",
    "EVALUATOR",
)  # fmt: skip
DATALOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")


def accepted_keys(node: Any, path: str) -> frozenset[str] | None:
    """Argument names the config node at dotted ``path`` may hold beyond its present keys.

    Empty when nothing is known about the node; None when it accepts any name (``**kwargs``
    that go nowhere we can follow)."""
    if path == "":
        return _arguments("mmengine.runner:Runner")
    if path in DATALOADERS:
        return _arguments("torch.utils.data:DataLoader")
    if not isinstance(node, Mapping) or "type" not in node:
        return frozenset()
    target = registered(node["type"], hint=_hint(path))
    return frozenset() if target is None else _signature_names(target)


def registered(type_: Any, *, hint: str | None = None) -> Any:
    """The class or function a config's ``type`` names (mmdet's registries), or None."""
    if not isinstance(type_, str):
        return type_ if callable(type_) else None
    from mmdet import registry

    order = ([hint] if hint else []) + [name for name in REGISTRIES if name != hint]
    for name in order:
        try:
            found = getattr(registry, name).get(type_)
        except KeyError:  # a scope prefix this registry does not know
            found = None
        if found is not None:
            return found
    return None


def _hint(path: str) -> str | None:
    parts = [p for p in path.split(".") if not p.lstrip("-").isdigit()]
    if parts and parts[0] == "model":
        return "MODELS"
    if len(parts) >= 2 and parts[0] == "default_hooks":
        return "HOOKS"
    return REGISTRY_HINTS.get(parts[-1]) if parts else None


@functools.cache
def _arguments(dotted: str) -> frozenset[str] | None:
    import importlib

    module, _, name = dotted.partition(":")
    return _signature_names(getattr(importlib.import_module(module), name))


def _signature_names(target: Any) -> frozenset[str] | None:
    """Keyword names ``target(...)`` takes, following ``**kwargs`` through the base classes."""
    import torch

    names: set[str] = set()
    owners = inspect.getmro(target) if inspect.isclass(target) else (target,)
    for owner in owners:
        if owner in (object, torch.nn.Module):  # both refuse unknown keyword arguments
            return frozenset(names)
        function = owner.__dict__.get("__init__") if inspect.isclass(target) else owner
        if function is None:
            continue
        try:
            params = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):  # a builtin without a signature
            return None
        names |= {
            p.name
            for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
        }
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return frozenset(names)
    return None if not inspect.isclass(target) else frozenset(names)
