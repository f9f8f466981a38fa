"""Rule sets for ``searcher`` (one per searcher kind) and for lengths.

Mirrors Determined 0.38.1's searcher.json (a union keyed by ``name``), searcher-single/-random/
-grid/-adaptive-asha/-async-halving.json, the end-of-life kinds the schema still parses
(custom, adaptive, adaptive_simple, sync_halving: the master refuses them later, in
``SearcherConfig.AssertCurrent``), searcher-length.json, length.json and check-positive-length.json.
"""

from __future__ import annotations

from trial.expconf.engine import nullable, obj, optional, union

STRING, BOOLEAN = nullable("string"), nullable("boolean")
AT_LEAST_ONE = nullable("integer", minimum=1)
CONCURRENCY = nullable("integer", minimum=0)
DIVISOR = nullable("number", exclusiveMinimum=1)
MODE = {"enum": [None, "aggressive", "standard", "conservative"]}
COMMON = {
    "metric": STRING,
    "smaller_is_better": BOOLEAN,
    "source_trial_id": nullable("integer"),
    "source_checkpoint_uuid": STRING,
}
# searcher name -> its rule set; the current kinds first.
KINDS = {
    "single": "searcher-single",
    "random": "searcher-random",
    "grid": "searcher-grid",
    "adaptive_asha": "searcher-adaptive-asha",
    "async_halving": "searcher-async-halving",
    "custom": "searcher-custom",
    "adaptive": "searcher-adaptive",
    "adaptive_simple": "searcher-adaptive-simple",
    "sync_halving": "searcher-sync-halving",
}
CURRENT = ("single", "random", "grid", "adaptive_asha", "async_halving")
# max_length of single/random/grid/adaptive_asha: a plain count >= 0 or a length >= 1.
SEARCHER_LENGTH = optional("searcher-length", "object", "integer")
# max_length of async_halving and of the end-of-life kinds: only a length object >= 1.
POSITIVE_LENGTH = optional("check-positive-length", "object")


def _kind(name: str, fields: dict, *, later: tuple[str, ...], closed: bool = True) -> dict:
    schema = obj(
        f"the {name} searcher",
        {"name": {"const": name}, **fields, **COMMON},
        required=("name",),
        later=(*later, "metric"),
    )
    if not closed:
        schema["additionalProperties"] = True
    return schema


def _length(unit: str) -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [unit],
        "properties": {unit: {"type": "integer", "minimum": 0}},
    }


RULES = {
    "searcher": {
        **obj(
            "any searcher",
            {
                **dict.fromkeys(
                    [
                        "bracket_rungs",
                        "divisor",
                        "max_concurrent_trials",
                        "max_length",
                        "max_rungs",
                        "max_time",
                        "time_metric",
                        "max_trials",
                        "mode",
                        "name",
                        "num_rungs",
                        "stop_once",
                        "budget",
                        "train_stragglers",
                        "unit",
                    ],
                    True,
                ),
                **COMMON,
            },
            later=("name", "metric"),
        ),
        "if": {"required": ["name"]},
        "then": union(
            *((f"const:name={name}", {"rule": kind}) for name, kind in KINDS.items()),
            message="is not a searcher; use one of " + ", ".join(CURRENT),
            field="name",
        ),
    },
    "searcher-single": _kind("single", {"max_length": SEARCHER_LENGTH}, later=()),
    "searcher-random": _kind(
        "random",
        {
            "max_concurrent_trials": CONCURRENCY,
            "max_trials": AT_LEAST_ONE,
            "max_length": SEARCHER_LENGTH,
        },
        later=("max_trials",),
    ),
    "searcher-grid": _kind(
        "grid",
        {"max_concurrent_trials": CONCURRENCY, "max_length": SEARCHER_LENGTH},
        later=(),
    ),
    "searcher-adaptive-asha": _kind(
        "adaptive_asha",
        {
            "bracket_rungs": nullable("array", items={"type": "integer"}),
            "max_trials": AT_LEAST_ONE,
            "time_metric": STRING,
            "max_time": nullable("integer"),
            "mode": MODE,
            "divisor": DIVISOR,
            "max_rungs": AT_LEAST_ONE,
            "max_concurrent_trials": CONCURRENCY,
            "max_length": SEARCHER_LENGTH,
            "stop_once": BOOLEAN,
        },
        later=("max_trials",),
    ),
    "searcher-async-halving": _kind(
        "async_halving",
        {
            "num_rungs": AT_LEAST_ONE,
            "max_length": POSITIVE_LENGTH,
            "max_trials": AT_LEAST_ONE,
            "divisor": DIVISOR,
            "max_concurrent_trials": CONCURRENCY,
            "stop_once": BOOLEAN,
            "time_metric": STRING,
            "max_time": nullable("integer"),
        },
        later=("num_rungs", "max_trials"),
    ),
    "searcher-custom": _kind(
        "custom", {"unit": {"enum": ["batches", "records", "epochs", None]}}, later=(), closed=False
    ),
    "searcher-adaptive": _kind(
        "adaptive",
        {
            "budget": optional("length", "object"),
            "bracket_rungs": nullable("array", items={"type": "integer"}),
            "mode": MODE,
            "divisor": DIVISOR,
            "max_rungs": AT_LEAST_ONE,
            "max_length": POSITIVE_LENGTH,
            "train_stragglers": BOOLEAN,
        },
        later=("budget",),
    ),
    "searcher-adaptive-simple": _kind(
        "adaptive_simple",
        {
            "max_trials": nullable("integer", minimum=1, maximum=2000),
            "mode": MODE,
            "divisor": DIVISOR,
            "max_rungs": AT_LEAST_ONE,
            "max_length": POSITIVE_LENGTH,
        },
        later=("max_trials",),
    ),
    "searcher-sync-halving": _kind(
        "sync_halving",
        {
            "budget": POSITIVE_LENGTH,
            "num_rungs": AT_LEAST_ONE,
            "max_length": POSITIVE_LENGTH,
            "divisor": DIVISOR,
            "train_stragglers": BOOLEAN,
        },
        later=("num_rungs", "budget"),
    ),
    "searcher-length": union(
        ("not:type:object", {"type": "integer", "minimum": 0}),
        ("always", {"rule": "check-positive-length"}),
    ),
    "length": union(
        *((f"singleproperty:{unit}", _length(unit)) for unit in ("batches", "records", "epochs")),
        message='a length object must have one attribute named "batches", "records", or "epochs"',
    ),
    "check-positive-length": {
        "allOf": [{"rule": "length"}, {"additionalProperties": {"type": "integer", "minimum": 1}}]
    },
}
