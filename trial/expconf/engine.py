"""The rule engine: JSON-schema rule sets with the keywords Determined's master adds, in two passes.

Determined 0.38.1's master validates an experiment config with draft-7 JSON schemas plus its own
keywords (master/pkg/schemas/extensions): ``union`` (one of several forms, the error of the form
whose key matches is the one reported), ``checks`` (a named condition with its own message),
``compareProperties`` (``a<b``, ``a<=b``, ``a_is_subdir_of_b``), ``disallowProperties``,
``optionalRef`` (a reference that also lets ``null`` through) and, in the completeness pass only,
``eventuallyRequired`` / ``eventually``. This module gives jsonschema's Draft7Validator the same
keywords, spelled ``rule`` / ``optionalRule`` for references into the project's own rule sets
(one per Determined schema, see the sibling modules), and turns each error into a ``Problem``
naming the field.
"""

from __future__ import annotations

import difflib
import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from errors import one_line

DETERMINED_VERSION = "0.38.1"


@dataclass(frozen=True)
class Problem:
    """One violation: the dotted field (``bind_mounts[0].host_path``), what is wrong, the fix."""

    field: str
    message: str
    fix: str = ""

    def line(self, source: str) -> str:
        return f"{source}: {self.field}: {self.message}" + (f"; {self.fix}" if self.fix else "")


# --- builders for rule data ----------------------------------------------------------------------


def nullable(*types: str, **rules: Any) -> dict:
    """A field that may be null (the master fills its default) or one of ``types``."""
    return {"type": [*types, "null"], **rules}


def obj(
    title: str,
    properties: Mapping[str, Any],
    *,
    required: tuple[str, ...] = (),
    later: tuple[str, ...] | None = None,
    **rules: Any,
) -> dict:
    """A closed object (unknown fields are errors); ``later``: required once defaults are in."""
    schema: dict = {
        "title": title,
        "type": "object",
        "additionalProperties": False,
        "properties": dict(properties),
        **rules,
    }
    if required:
        schema["required"] = list(required)
    if later is not None:
        schema["eventuallyRequired"] = list(later)
    return schema


def rule(name: str) -> dict:
    """The value must satisfy the rule set ``name``."""
    return {"rule": name}


def optional(name: str, *types: str) -> dict:
    """Null, or of ``types`` and satisfying the rule set ``name`` (Determined's optionalRef)."""
    return {"type": [*types, "null"], "optionalRule": name}


def union(
    *items: tuple[str, dict], message: str = "matches none of its allowed forms", field: str = ""
) -> dict:
    """Exactly one of ``items`` (unionKey, schema) must hold; see ``_union`` for the reporting.
    ``field``: the key the message is about (``type``, ``name``), reported as the field."""
    items_ = [{**schema, "unionKey": key} for key, schema in items]
    return {"union": {"message": message, "items": items_, "field": field}}


# --- the keywords --------------------------------------------------------------------------------


def _key_matches(key: str, instance: Any) -> bool:
    """Determined's unionKey: which form the user evidently meant (its error gets reported)."""
    if key in ("always", "never"):
        return key == "always"
    kind, _, arg = key.partition(":")
    if kind == "not":
        return not _key_matches(arg, instance)
    if kind == "type":
        return isinstance(instance, {"array": list, "object": dict}[arg])
    if not isinstance(instance, dict):
        return False
    if kind == "const":
        name, _, value = arg.partition("=")
        return isinstance(instance.get(name), str) and instance[name] == value
    if kind == "singleproperty":
        return list(instance) == [arg]
    if kind == "hasattr":
        return arg in instance
    raise ValueError(f"unknown unionKey {key!r}")


def _union(validator, union_: dict, instance: Any, schema: dict) -> Iterator[ValidationError]:
    selected, matched = None, 0
    for item in union_["items"]:
        errors = list(validator.descend(instance, item))
        if not errors:
            matched += 1
        elif selected is None and _key_matches(item["unionKey"], instance):
            selected = errors
    if matched == 1:
        return
    if matched > 1:
        yield ValidationError("matches more than one form (a bug in the project's rules)")
    elif selected is not None:
        yield from selected
    else:
        yield ValidationError(union_["message"], path=[union_["field"]] if union_["field"] else [])


def _checks(validator, checks: dict, instance: Any, schema: dict) -> Iterator[ValidationError]:
    for message, condition in checks.items():
        if not validator.is_valid(instance, condition):
            yield ValidationError(message)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _compare(validator, cmp: dict, instance: Any, schema: dict) -> Iterator[ValidationError]:
    # Like the master, compare only when both values are there and of the right type.
    if not isinstance(instance, dict):
        return
    a, b = instance.get(cmp["a"]), instance.get(cmp["b"])
    if cmp["type"] in ("a<b", "a<=b"):
        if _number(a) and _number(b) and (a >= b if cmp["type"] == "a<b" else a > b):
            yield ValidationError(f"{cmp['a']} must be less than {cmp['b']}")
    elif isinstance(a, str) and isinstance(b, str):  # a_is_subdir_of_b, as the master compares
        a, b = posixpath.normpath(a), posixpath.normpath(b)
        if not a.startswith(b) if posixpath.isabs(a) else a.startswith(".."):
            yield ValidationError(f"{cmp['a']} must be a subdirectory of {cmp['b']}")


def _disallow(validator, fields: dict, instance: Any, schema: dict) -> Iterator[ValidationError]:
    if isinstance(instance, dict):
        for key, message in fields.items():
            if key in instance:
                yield ValidationError(message, path=[key])


def _eventually_required(validator, fields, instance, schema) -> Iterator[ValidationError]:
    if isinstance(instance, dict):
        for key in fields:
            if instance.get(key) is None:
                yield ValidationError("is required", path=[key])


def _make_validators(rules: Mapping[str, dict]) -> tuple[type, type]:
    def _rule(validator, name, instance, schema):
        yield from validator.descend(instance, rules[name])

    def _optional_rule(validator, name, instance, schema):
        if instance is not None:
            yield from validator.descend(instance, rules[name])

    def _eventually(validator, condition, instance, schema):
        yield from validator.descend(instance, condition)

    keywords = {
        "rule": _rule,
        "optionalRule": _optional_rule,
        "union": _union,
        "checks": _checks,
        "compareProperties": _compare,
        "disallowProperties": _disallow,
    }
    base = jsonschema.Draft7Validator
    sanity = jsonschema.validators.extend(base, keywords)
    completeness = jsonschema.validators.extend(
        base, {**keywords, "eventuallyRequired": _eventually_required, "eventually": _eventually}
    )
    return sanity, completeness


class RuleBook:
    """The rule sets by name, checked as the master does on submit (sanity) or after defaults."""

    def __init__(self, rules: Mapping[str, dict]) -> None:
        self.rules = dict(rules)
        self._sanity, self._completeness = _make_validators(self.rules)

    def problems(self, name: str, value: Any, *, complete: bool = False, at: str = "") -> list:
        """Every violation of rule set ``name`` by ``value``; fields are prefixed with ``at``."""
        cls = self._completeness if complete else self._sanity
        errors = cls(self.rules[name]).iter_errors(value)
        return [_problem(error, at) for error in errors]


def field_name(at: str, path: Any) -> str:
    """``at`` + a jsonschema path as the user writes it: ``bind_mounts[0].host_path``."""
    out = at
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problem(error: ValidationError, at: str) -> Problem:
    field = field_name(at, error.absolute_path)
    if error.validator == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        extra = next(k for k in error.instance if k not in known)
        close = difflib.get_close_matches(extra, known, n=1)
        title = error.schema.get("title", "this section")
        return Problem(
            field_name(field, [extra]),
            f"is not a field of {title} (Determined {DETERMINED_VERSION})",
            f"did you mean {close[0]!r}?" if close else f"known here: {', '.join(sorted(known))}",
        )
    if error.validator == "required":
        missing = next(k for k in error.validator_value if k not in error.instance)
        return Problem(field_name(field, [missing]), "is required")
    return Problem(field or "(top level)", one_line(error.message))
