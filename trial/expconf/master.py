"""What a Determined 0.38.1 master does with a submitted experiment, in its order, offline.

``parseCreateExperiment`` (master/internal/core_experiment.go) runs: the schema's sanity pass
(``ParseAnyExperimentConfigYAML``), decoding into the Go types (master/pkg/schemas/expconf:
fields the schema lets through but the types cannot hold), its own refusals (``resources.slots``,
workspace without project, a managed experiment without an entrypoint), the merge of the
workspace's and the cluster's checkpoint storage and the defaults, the completeness pass (the
``eventuallyRequired`` fields) and ``SearcherConfig.AssertCurrent`` (end-of-life searchers; ASHA's
``max_time`` + ``time_metric``). Not modelled, because they need the cluster: templates, whether
the project/workspace and resource pool exist, the pool's slots, the workspace's own checkpoint
storage, task container defaults and config policies. The master's verdict (``validateOnly``,
trial/verbs/cluster.py) is final.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from trial.expconf import environment, experiment, hyperparameters, searcher, storage
from trial.expconf.engine import DETERMINED_VERSION, Problem, RuleBook, field_name

BOOK = RuleBook(
    {
        **experiment.RULES,
        **environment.RULES,
        **storage.RULES,
        **searcher.RULES,
        **hyperparameters.RULES,
    }
)
# master/packaging/master.yaml: what a cluster stores checkpoints in unless its admin says otherwise.
MASTER_DEFAULT_STORAGE = {
    "type": "shared_fs",
    "host_path": "/tmp",
    "storage_path": "determined-checkpoint",
    "save_experiment_best": 0,
    "save_trial_best": 1,
    "save_trial_latest": 1,
}
UINT32_MAX = 2**32 - 1
EOL_SEARCHERS = ("custom", "adaptive", "adaptive_simple", "sync_halving")
TIME_SEARCHERS = ("adaptive_asha", "async_halving")
# What to do, where the rule's own words do not say.
FIXES = {
    "entrypoint": "python3 -m determined.launch.torch_distributed python3 -m trial",
    "searcher": "e.g. searcher: {name: single, metric: bbox_mAP}",
    "searcher.name": "use single, random, grid or adaptive_asha",
    "searcher.metric": "the validation metric that ranks trials, e.g. metric: bbox_mAP",
    "searcher.max_trials": "how many trials to run, e.g. max_trials: 16",
    "searcher.num_rungs": "e.g. num_rungs: 4",
    "searcher.max_time": "the number of time_metric units a trial trains for, e.g. max_time: 90000",
    "searcher.time_metric": "a metric the trial reports with validation: batches or epochs",
    "resources.shm_size": "give bytes, e.g. shm_size: 4294967296 (4 GiB)",
    "checkpoint_storage.bucket": "set the bucket (a master's default storage is shared_fs, which "
    "cannot fill it)",
    "checkpoint_storage.container_path": "the directory inside the container, e.g. /mnt/ckpt",
    "checkpoint_storage.host_path": "an absolute path on every agent, e.g. /mnt/ckpt",
    "retention_policy.log_retention_days": "days to keep logs (-1: forever), or drop the section",
    "searcher.max_length": "a length such as {batches: 1000} (deprecated: prefer "
    "hyperparameters.max_iters)",
}
# The same, for a rule's message wherever it is reported.
MESSAGE_FIXES = {
    "grid search is in use but count was not provided": "give the range a count, e.g. count: 4",
}
# Deprecated in 0.38 ("configure the desired training length directly in training code").
DEPRECATED = {
    "searcher.max_length": "hyperparameters.max_iters",
    "min_validation_period": "hyperparameters.val_interval",
    "min_checkpoint_period": "hyperparameters.checkpoint_interval",
    "scheduling_unit": "hyperparameters.log_interval",
    "searcher.stop_once": "nothing (drop it)",
    "optimizations": "the mmengine optim_wrapper in hyperparameters (e.g. optim_wrapper.type)",
}
PROJECT_RULE = f"this project's rule, stricter than Determined {DETERMINED_VERSION}"


def check_experiment(
    config: Mapping[str, Any], *, cluster_storage: Mapping[str, Any] = MASTER_DEFAULT_STORAGE
) -> list[Problem]:
    """The problems of the first pass that finds any (empty: a 0.38.1 master would take it)."""
    config = copy.deepcopy(dict(config))
    passes: list[Callable[[dict], Iterable[Problem]]] = [
        _sanity,
        _decode,
        _create,
        _eol,
        functools.partial(_completeness, cluster_storage=cluster_storage),
        _current,
        _project,
    ]
    for run in passes:
        problems = [_with_fix(p) for p in run(config)]
        if problems:
            return problems
    return []


def _sanity(config: dict) -> list[Problem]:
    """The schema pass on submit (``ParseAnyExperimentConfigYAML``)."""
    return BOOK.problems("experiment", config)


def _completeness(config: dict, *, cluster_storage: Mapping[str, Any]) -> Iterator[Problem]:
    """``schemas.IsComplete`` after the defaults and the cluster's checkpoint storage are in."""
    for problem in BOOK.problems("experiment", _defaults(config, cluster_storage), complete=True):
        if problem.message == "is required":
            problem = Problem(
                problem.field,
                "is required once the master has filled its defaults and merged in its "
                "checkpoint storage",
            )
        yield problem


def _with_fix(problem: Problem) -> Problem:
    if problem.fix:
        return problem
    fix = FIXES.get(problem.field) or MESSAGE_FIXES.get(problem.message, "")
    return Problem(problem.field, problem.message, fix)


# What a 0.38.1 master writes into every trial's config (DET_EXPERIMENT_CONFIG) for these fields
# when the experiment leaves them out, as seen in a real trial: a trial reading its own config
# must not take them for the user's (the first real run warned of all three on every start).
MASTER_FILLS = {
    "min_validation_period": {"batches": 0},
    "min_checkpoint_period": {"batches": 0},
    "scheduling_unit": 100,
    "searcher.stop_once": False,
    "optimizations": {
        "aggregation_frequency": 1,
        "average_aggregated_gradients": True,
        "average_training_metrics": True,
        "gradient_compression": False,
        "grad_updates_size_file": None,
        "mixed_precision": "O0",
        "tensor_fusion_threshold": 64,
        "tensor_fusion_cycle_time": 1,
        "auto_tune_tensor_fusion": False,
    },
}


def deprecations(config: Mapping[str, Any], *, source: str) -> list[str]:
    """One notice per deprecated field the experiment sets, naming what replaces it (a value equal
    to what the master fills in by itself is not the user's setting)."""
    return [
        f"{source}: {field} is deprecated in Determined {DETERMINED_VERSION}; set {new} instead"
        for field, new in DEPRECATED.items()
        if _get(config, field) is not None and _get(config, field) != MASTER_FILLS.get(field)
    ]


def _decode(config: dict) -> Iterator[Problem]:
    """Values the schema lets through but the master's Go types refuse when it decodes them."""
    resources = config.get("resources") or {}
    if isinstance(resources.get("shm_size"), str):
        yield Problem(
            "resources.shm_size",
            f"{resources['shm_size']!r} passes Determined's schema, but a {DETERMINED_VERSION} "
            "master decodes an experiment's shm_size as an integer and refuses a string",
        )
    for i, device in enumerate(resources.get("devices") or []):
        if isinstance(device, str) and not 2 <= len(device.split(":")) <= 3:
            yield Problem(
                f"resources.devices[{i}]",
                f"invalid device string {device!r}",
                "use host_path:container_path[:mode]",
            )
    seed = (config.get("reproducibility") or {}).get("experiment_seed")
    if isinstance(seed, int) and seed > UINT32_MAX:
        yield Problem(
            "reproducibility.experiment_seed",
            f"{seed} does not fit in 32 bits",
            f"use 0..{UINT32_MAX}",
        )
    for i, port in enumerate((config.get("environment") or {}).get("proxy_ports") or []):
        if isinstance(port.get("proxy_port"), float) and not port["proxy_port"].is_integer():
            yield Problem(f"environment.proxy_ports[{i}].proxy_port", "must be a whole number")
    names = [p.get("name") for p in config.get("log_policies") or [] if p.get("name") is not None]
    for name in sorted({n for n in names if names.count(n) > 1}):
        yield Problem("log_policies", f"two policies are named {name!r}", "give each a unique name")
    yield from _untagged(config, "checkpoint_storage", "type", tuple(storage.SAVE_POLICY))
    yield from _untagged(config, "searcher", "name", tuple(searcher.COMMON))


def _untagged(config: dict, section: str, tag: str, common: tuple[str, ...]) -> Iterator[Problem]:
    """Without its ``tag``, a union section may hold only the fields all its forms share."""
    value = config.get(section)
    if isinstance(value, dict) and tag not in value:
        for key in value:
            if key not in common:
                yield Problem(
                    f"{section}.{key}",
                    f"is not a field of {section} without a {tag}",
                    f"set {section}.{tag} or drop it",
                )


def _create(config: dict) -> Iterator[Problem]:
    """The master's own refusals before it merges anything in."""
    if (config.get("resources") or {}).get("slots") is not None:
        yield Problem(
            "resources.slots",
            "is not allowed in an experiment (commands use it)",
            "use resources.slots_per_trial",
        )
    if bool(config.get("workspace")) != bool(config.get("project")):
        missing = "project" if config.get("workspace") else "workspace"
        yield Problem(
            missing,
            "workspace and project must both be set if one is",
            f"set {missing} or drop the other",
        )
    if config.get("entrypoint") is None:
        yield Problem("entrypoint", "managed experiments require an entrypoint")


def _defaults(config: dict, cluster_storage: Mapping[str, Any]) -> dict:
    """The fields the completeness pass needs, filled as the master fills them."""
    out = copy.deepcopy(config)
    out["checkpoint_storage"] = _merge_storage(out.get("checkpoint_storage"), cluster_storage)
    for key in ("name", "hyperparameters", "reproducibility", "environment"):
        out[key] = out.get(key) or ({} if key != "name" else "<random name>")
    out["reproducibility"].setdefault("experiment_seed", 0)
    if out["reproducibility"]["experiment_seed"] is None:
        out["reproducibility"]["experiment_seed"] = 0  # the master picks one
    image = out["environment"].get("image")
    image = image if isinstance(image, dict) else dict.fromkeys(("cpu", "cuda", "rocm"), image)
    out["environment"]["image"] = {
        k: image.get(k) or "<default image>" for k in ("cpu", "cuda", "rocm")
    }
    return out


def _merge_storage(user: Any, cluster: Mapping[str, Any]) -> dict:
    """Determined's union merge: the user's fields win; the cluster's type fields only fill in
    when the types agree (or the user gave none); the save policy always fills in."""
    out = dict(user or {})
    same = out.get("type") in (None, cluster.get("type"))
    for key, value in cluster.items():
        if out.get(key) is None and (same or key in storage.SAVE_POLICY):
            out[key] = value
    return out


def _eol(config: dict) -> Iterator[Problem]:
    name = (config.get("searcher") or {}).get("name")
    if name in EOL_SEARCHERS:
        yield Problem(
            "searcher.name",
            f"the {name!r} searcher has been removed and is not valid for new experiments",
        )


def _current(config: dict) -> Iterator[Problem]:
    """``SearcherConfig.AssertCurrent``: ASHA's budget is max_time in time_metric units."""
    searcher_ = config.get("searcher") or {}
    if searcher_.get("name") in TIME_SEARCHERS:
        for key in ("max_time", "time_metric"):
            if searcher_.get(key) is None:
                yield Problem(
                    f"searcher.{key}",
                    f"the {searcher_['name']} searcher requires "
                    "max_time and time_metric in Determined 0.38 (max_length no longer runs)",
                    "e.g. time_metric: batches and max_time: 90000",
                )
                return


def _project(config: dict) -> Iterator[Problem]:
    """Where the project is stricter than the master: things that would only fail later."""
    max_time = (config.get("searcher") or {}).get("max_time")
    if isinstance(max_time, int) and max_time < 1:
        yield Problem(
            "searcher.max_time",
            f"{max_time} trains nothing ({PROJECT_RULE})",
            "e.g. max_time: 90000",
        )
    if config.get("entrypoint") in ("", []):
        yield Problem(
            "entrypoint",
            f"is empty ({PROJECT_RULE}: the container would run nothing)",
            FIXES["entrypoint"],
        )
    yield from _empty_categoricals(config.get("hyperparameters") or {}, "hyperparameters")


def _empty_categoricals(node: Any, at: str) -> Iterator[Problem]:
    if isinstance(node, Mapping):
        if node.get("type") == "categorical" and node.get("vals") == []:
            yield Problem(
                f"{at}.vals",
                f"is empty ({PROJECT_RULE}: a trial would have no value "
                "to draw; Determined's schema lets it through)",
                "list at least one value",
            )
        elif "type" not in node:
            for key, value in node.items():
                yield from _empty_categoricals(value, field_name(at, [key]))


def _get(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node
