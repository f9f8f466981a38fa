"""Check an experiment config against Determined 0.38.1's rules, offline, before anything is submitted.

Determined's Python wheel stopped carrying its experiment-config schema after 0.21 (the master
validates), so these rules are the project's own, derived from Determined 0.38.1's public schema
(``schemas/expconf/v0/*.json``: field names, types, bounds, the searcher and checkpoint-storage
unions) and from the master's semantic checks in that release (``SearcherConfig.AssertCurrent``:
ASHA and async halving need ``max_time`` + ``time_metric``; ``max_length`` is deprecated; the
``sync_halving``/``adaptive``/``adaptive_simple``/``custom`` searchers are removed). With a
reachable master its own verdict (``validateOnly``) is final; see trial/cluster.py.

Every violation is one line naming the field and what to do; deprecations come back as notices.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import jsonschema

from errors import ConfigError, one_line

DETERMINED_VERSION = "0.38.1"


def _maybe(*types: str, **rules: Any) -> dict:
    """A field that may be null (Determined fills defaults) or one of ``types``."""
    return {"type": [*types, "null"], **rules}


def _obj(properties: Mapping[str, Any], *, required: tuple[str, ...] = (), **rules: Any) -> dict:
    schema = {"type": "object", "additionalProperties": False, "properties": dict(properties)}
    if required:
        schema["required"] = list(required)
    return {**schema, **rules}


STRING, INTEGER, BOOLEAN, OBJECT = (
    _maybe("string"),
    _maybe("integer"),
    _maybe("boolean"),
    _maybe("object"),
)
COUNT = _maybe("integer", minimum=0)
LENGTH = _obj(
    {unit: {"type": "integer", "minimum": 0} for unit in ("batches", "records", "epochs")},
    minProperties=1,
    maxProperties=1,
)
SEARCHER_LENGTH = {**LENGTH, "type": ["integer", "object", "null"], "minimum": 0}
SAVE_POLICY = {k: COUNT for k in ("save_experiment_best", "save_trial_best", "save_trial_latest")}
NO_DOTDOT = {"not": {"pattern": r"(^|/)\.\.(/|$)"}}

# searcher name -> its own fields (besides name/metric/smaller_is_better/source_*), and the fields
# the master needs after defaults ("eventually required").
_SEARCHER_COMMON = {
    "metric": STRING,
    "smaller_is_better": BOOLEAN,
    "source_trial_id": INTEGER,
    "source_checkpoint_uuid": STRING,
}
SEARCHERS: dict[str, tuple[dict, tuple[str, ...]]] = {
    "single": ({"max_length": SEARCHER_LENGTH}, ("metric",)),
    "random": (
        {
            "max_trials": _maybe("integer", minimum=1),
            "max_concurrent_trials": COUNT,
            "max_length": SEARCHER_LENGTH,
        },
        ("metric", "max_trials"),
    ),
    "grid": ({"max_concurrent_trials": COUNT, "max_length": SEARCHER_LENGTH}, ("metric",)),
    "adaptive_asha": (
        {
            "max_trials": _maybe("integer", minimum=1),
            "max_concurrent_trials": COUNT,
            "time_metric": STRING,
            "max_time": INTEGER,
            "mode": {"enum": [None, "aggressive", "standard", "conservative"]},
            "divisor": _maybe("number", exclusiveMinimum=1),
            "max_rungs": _maybe("integer", minimum=1),
            "bracket_rungs": _maybe("array", items={"type": "integer"}),
            "max_length": SEARCHER_LENGTH,
            "stop_once": BOOLEAN,
        },
        ("metric", "max_trials"),
    ),
    "async_halving": (
        {
            "num_rungs": _maybe("integer", minimum=1),
            "max_trials": _maybe("integer", minimum=1),
            "max_concurrent_trials": COUNT,
            "divisor": _maybe("number", exclusiveMinimum=1),
            "time_metric": STRING,
            "max_time": INTEGER,
            "max_length": SEARCHER_LENGTH,
            "stop_once": BOOLEAN,
        },
        ("metric", "max_trials", "num_rungs"),
    ),
}
REMOVED_SEARCHERS = ("sync_halving", "adaptive", "adaptive_simple", "custom")
TIME_SEARCHERS = ("adaptive_asha", "async_halving")

CHECKPOINT_STORAGE: dict[str, dict] = {
    "shared_fs": {
        "host_path": STRING,
        "storage_path": STRING,
        "propagation": STRING,
        "container_path": STRING,
        "checkpoint_path": STRING,
        "tensorboard_path": STRING,
    },
    "directory": {"container_path": STRING},
    "s3": {
        "bucket": STRING,
        "prefix": {**STRING, **NO_DOTDOT},
        "access_key": STRING,
        "secret_key": STRING,
        "endpoint_url": STRING,
    },
    "gcs": {"bucket": STRING, "prefix": {**STRING, **NO_DOTDOT}},
    "azure": {
        "container": STRING,
        "connection_string": STRING,
        "account_url": STRING,
        "credential": STRING,
    },
}

_PER_DEVICE_TYPE = ("cpu", "cuda", "rocm", "gpu")
ENVIRONMENT = _obj(
    {
        # A keyword applies only to its own JSON type: "properties" to the per-device map, "items"
        # to the list form; that keeps each error on the field that is wrong.
        "image": {
            **_obj({k: STRING for k in _PER_DEVICE_TYPE}),
            "type": ["string", "object", "null"],
        },
        "environment_variables": {
            **_obj({k: _maybe("array", items={"type": "string"}) for k in _PER_DEVICE_TYPE}),
            "type": ["array", "object", "null"],
            "items": {"type": "string", "pattern": "^[^=]+="},
        },
        "proxy_ports": _maybe("array"),
        "ports": _maybe("object", additionalProperties={"type": "integer"}),
        "force_pull_image": BOOLEAN,
        "registry_auth": OBJECT,
        "add_capabilities": _maybe("array", items={"type": "string"}),
        "drop_capabilities": _maybe("array", items={"type": "string"}),
        "pod_spec": OBJECT,
    }
)
RESOURCES = _obj(
    {
        "slots_per_trial": COUNT,
        "max_slots": INTEGER,
        "slots": INTEGER,
        "weight": _maybe("number"),
        "priority": _maybe("integer", minimum=1, maximum=99),
        "resource_pool": STRING,
        "agent_label": STRING,
        "is_single_node": BOOLEAN,
        "native_parallel": BOOLEAN,
        "shm_size": {
            "type": ["integer", "string", "null"],
            "pattern": r"^([0-9]*[.])?[0-9]+ ?(([kmgtpKMGTP]([iI]?[bB])?)|[bB])?$",
        },
        "devices": _maybe(
            "array",
            items=_obj(
                {
                    "host_path": {"type": "string"},
                    "container_path": {"type": "string"},
                    "mode": STRING,
                },
                required=("host_path", "container_path"),
            ),
        ),
    }
)
BIND_MOUNT = _obj(
    {
        "host_path": {"type": "string", "pattern": "^/"},
        "container_path": {"type": "string", "not": {"const": "."}},
        "read_only": BOOLEAN,
        "propagation": STRING,
    },
    required=("host_path", "container_path"),
)
EXPERIMENT = _obj(
    {
        "name": STRING,
        "description": STRING,
        "project": STRING,
        "workspace": STRING,
        "labels": _maybe("array", items={"type": "string"}),
        "entrypoint": {"type": ["string", "array"], "items": {"type": "string"}, "minLength": 1},
        "environment": {**ENVIRONMENT, "type": ["object", "null"]},
        "resources": {**RESOURCES, "type": ["object", "null"]},
        "bind_mounts": _maybe("array", items=BIND_MOUNT),
        "searcher": {"type": "object", "required": ["name"]},  # checked per searcher below
        "hyperparameters": OBJECT,  # checked recursively below
        "checkpoint_storage": OBJECT,  # checked per storage type below
        "checkpoint_policy": {"enum": [None, "best", "all", "none"]},
        "max_restarts": COUNT,
        "min_validation_period": {**LENGTH, "type": ["object", "null"]},
        "min_checkpoint_period": {**LENGTH, "type": ["object", "null"]},
        "records_per_epoch": INTEGER,
        "scheduling_unit": _maybe("integer", minimum=1),
        "perform_initial_validation": BOOLEAN,
        "preemption_timeout": INTEGER,
        "debug": BOOLEAN,
        "data": OBJECT,
        **{
            key: OBJECT
            for key in (
                "optimizations",
                "profiling",
                "reproducibility",
                "tensorboard_storage",
                "retention_policy",
                "security",
                "integrations",
                "slurm",
                "pbs",
                "data_layer",
            )
        },
        "log_policies": _maybe("array"),
        "internal": {"type": "null"},
    },
    required=("entrypoint", "searcher"),
)

# What to do about a field, where the bare schema message would not say.
FIXES = {
    "searcher.max_time": "the number of time_metric units a trial trains for, e.g. max_time: 90000",
    "searcher.time_metric": "a metric the trial reports with validation: batches or epochs",
    "resources.shm_size": "a size such as 4G or 4294967296",
    "bind_mounts": "each entry needs an absolute host_path and a container_path",
    "entrypoint": "python3 -m determined.launch.torch_distributed python3 -m trial",
}
# Deprecated in 0.38 ("configure the desired training length directly in training code").
DEPRECATED = {
    "searcher.max_length": "hyperparameters.max_iters",
    "min_validation_period": "hyperparameters.val_interval",
    "min_checkpoint_period": "hyperparameters.checkpoint_interval",
    "scheduling_unit": "hyperparameters.log_interval",
    "searcher.stop_once": "nothing (drop it)",
}
# The time metrics the trial reports with every validation (trial/hook.py).
TRIAL_TIME_METRICS = ("batches", "epochs")


def validate_experiment(config: Mapping[str, Any], *, source: str) -> list[str]:
    """Raise ConfigError (one line: source, field, fix) on the first violation; return notices."""
    try:
        _check(dict(config))
    except _Violation as bad:
        fix = bad.fix or FIXES.get(bad.field, "")
        raise ConfigError(
            f"{source}: {bad.field}: {bad.message}" + (f"; {fix}" if fix else "")
        ) from None
    return deprecations(config, source=source)


def deprecations(config: Mapping[str, Any], *, source: str) -> list[str]:
    """One notice per deprecated field the experiment sets, naming the field that replaces it."""
    return [
        f"{source}: {field} is deprecated in Determined {DETERMINED_VERSION}; set {new} instead"
        for field, new in DEPRECATED.items()
        if _get(config, field) is not None
    ]


class _Violation(Exception):
    def __init__(self, field: str, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.field, self.message, self.fix = field, message, fix


def _check(config: dict) -> None:
    _schema(EXPERIMENT, config, "")
    _check_searcher(config["searcher"])
    hparams = config.get("hyperparameters") or {}
    _check_hparams(hparams, "hyperparameters", grid=config["searcher"].get("name") == "grid")
    storage = config.get("checkpoint_storage")
    if storage is not None:
        kind = storage.get("type")
        if kind not in CHECKPOINT_STORAGE:
            raise _Violation(
                "checkpoint_storage.type", f"{kind!r} is not one of {', '.join(CHECKPOINT_STORAGE)}"
            )
        props = {"type": {"const": kind}, **CHECKPOINT_STORAGE[kind], **SAVE_POLICY}
        _schema(_obj(props), storage, "checkpoint_storage")


def _check_searcher(searcher: dict) -> None:
    name = searcher.get("name")
    if name in REMOVED_SEARCHERS:
        raise _Violation(
            "searcher.name",
            f"the {name!r} searcher was removed in Determined 0.38",
            "use single, random, grid or adaptive_asha",
        )
    if name not in SEARCHERS:
        raise _Violation(
            "searcher.name", f"{name!r} is not a searcher", f"use one of {', '.join(SEARCHERS)}"
        )
    fields, needed = SEARCHERS[name]
    _schema(_obj({"name": {"const": name}, **_SEARCHER_COMMON, **fields}), searcher, "searcher")
    for key in needed:
        if searcher.get(key) is None:
            raise _Violation(f"searcher.{key}", f"the {name} searcher needs {key}")
    if name in TIME_SEARCHERS:
        missing = [k for k in ("max_time", "time_metric") if searcher.get(k) is None]
        if missing:
            raise _Violation(
                f"searcher.{missing[0]}",
                f"the {name} searcher requires max_time and time_metric in Determined 0.38 "
                "(max_length no longer runs)",
                "e.g. time_metric: batches and max_time: 90000",
            )
        if searcher["max_time"] < 1:
            raise _Violation("searcher.max_time", f"{searcher['max_time']} must be >= 1")


_HP_TYPES = {
    "int": (("minval", "maxval"), {"minval": {"type": "integer"}, "maxval": {"type": "integer"}}),
    "double": (("minval", "maxval"), {"minval": {"type": "number"}, "maxval": {"type": "number"}}),
    "log": (
        ("minval", "maxval", "base"),
        {
            "minval": {"type": "number"},
            "maxval": {"type": "number"},
            "base": {"type": "number", "exclusiveMinimum": 0},
        },
    ),
    "const": (("val",), {"val": {}}),
    "categorical": (("vals",), {"vals": {"type": "array", "minItems": 1}}),
}


def _check_hparams(hparams: Mapping[str, Any], path: str, *, grid: bool) -> None:
    for key, value in hparams.items():
        field = f"{path}.{key}"
        if not isinstance(value, Mapping):
            continue  # a plain value: Determined treats it as const
        kind = value.get("type")
        if kind is None:
            _check_hparams(value, field, grid=grid)
            continue
        if kind not in _HP_TYPES:
            raise _Violation(
                f"{field}.type",
                f"{kind!r} is not a hyperparameter type",
                f"use one of {', '.join(_HP_TYPES)}",
            )
        required, props = _HP_TYPES[kind]
        count = {"count": _maybe("integer", minimum=1)} if kind in ("int", "double", "log") else {}
        _schema(
            _obj({"type": {"const": kind}, **props, **count}, required=("type", *required)),
            value,
            field,
        )
        if "minval" in required and not value["minval"] < value["maxval"]:
            raise _Violation(field, f"minval {value['minval']} must be < maxval {value['maxval']}")
        if grid and count and value.get("count") is None:
            raise _Violation(f"{field}.count", "grid search is in use but count was not provided")


def _schema(schema: dict, value: Any, path: str) -> None:
    """Validate with jsonschema; raise the most relevant error as a _Violation naming its field."""
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(value))
    if not errors:
        return
    error = jsonschema.exceptions.best_match(errors)
    parts = [path] if path else []
    parts += [str(p) for p in error.absolute_path]
    field = ".".join(parts) or "(top level)"
    if error.validator == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in known]
        unknown = f"{field}.{extra[0]}" if parts else extra[0]
        close = difflib.get_close_matches(extra[0], known, n=1)
        raise _Violation(
            unknown,
            f"is not a Determined {DETERMINED_VERSION} experiment field",
            f"did you mean {close[0]!r}?" if close else f"known here: {', '.join(sorted(known))}",
        )
    if error.validator == "required":
        missing = next(k for k in error.validator_value if k not in error.instance)
        raise _Violation(f"{field}.{missing}" if parts else missing, "is required")
    raise _Violation(field, one_line(error.message))


def _get(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node
