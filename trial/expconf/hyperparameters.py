"""Rule sets for ``hyperparameters``: one per kind (const, int, double, log, categorical), nesting,
and the grid searcher's need for a ``count`` on every range.

Mirrors Determined 0.38.1's hyperparameters.json, hyperparameter.json (a union keyed by ``type``;
an object without ``type`` nests hyperparameters; any other value is an implicit const),
hyperparameter-{const,int,double,log,categorical}.json and check-grid-hyperparameter.json.
"""

from __future__ import annotations

from trial.expconf.engine import nullable, obj, union

KINDS = ("int", "double", "log", "const", "categorical")
COUNT = nullable("integer", minimum=1)
LESS = {"compareProperties": {"type": "a<b", "a": "minval", "b": "maxval"}}


def _range(kind: str, number: str, **extra: dict) -> dict:
    return obj(
        f"a {kind} hyperparameter",
        {
            "type": {"const": kind},
            "minval": {"type": number},
            "maxval": {"type": number},
            **extra,
            "count": COUNT,
        },
        required=("type", "minval", "maxval", *extra),
        **LESS,
    )


RULES = {
    "hyperparameters": {"type": "object", "additionalProperties": {"rule": "hyperparameter"}},
    "hyperparameter": union(
        *((f"const:type={kind}", {"rule": f"hyperparameter-{kind}"}) for kind in KINDS),
        (
            "always",
            {
                "type": "object",
                "properties": {
                    "type": {
                        "checks": {
                            "is not a hyperparameter type; use one of " + ", ".join(KINDS): False
                        }
                    }
                },
                "additionalProperties": {"rule": "hyperparameter"},
            },
        ),
        ("never", {"not": {"type": "object"}}),
    ),
    "hyperparameter-const": obj(
        "a const hyperparameter",
        {"type": {"const": "const"}, "val": True},
        required=("type", "val"),
    ),
    "hyperparameter-int": _range("int", "integer"),
    "hyperparameter-double": _range("double", "number"),
    "hyperparameter-log": _range("log", "number", base={"type": "number", "exclusiveMinimum": 0}),
    # Determined's schema says minLength (a string keyword) here, so an empty list passes it;
    # the project's own rule against that lives in master.py.
    "hyperparameter-categorical": obj(
        "a categorical hyperparameter",
        {"type": {"const": "categorical"}, "vals": {"type": "array"}},
        required=("type", "vals"),
    ),
    # Applied to every hyperparameter when the searcher is grid.
    "check-grid-hyperparameter": union(
        ("type:array", {"type": "array", "items": {"rule": "check-grid-hyperparameter"}}),
        (
            "not:hasattr:type",
            {
                "type": "object",
                "properties": {"type": False},
                "additionalProperties": {"rule": "check-grid-hyperparameter"},
            },
        ),
        ("never", {"not": {"type": ["object", "array"]}}),
        (
            "hasattr:type",
            {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"type": "string"}},
                "checks": {
                    "grid search is in use but count was not provided": {
                        "if": {"properties": {"type": {"enum": ["double", "log", "int"]}}},
                        "then": {"not": {"properties": {"count": {"type": "null"}}}},
                    }
                },
            },
        ),
    ),
}
