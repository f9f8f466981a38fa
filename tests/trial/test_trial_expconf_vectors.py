"""Determined's own expconf test vectors (tag v0.38.1) through the project's rules, each fragment at
the experiment field its schema describes, must get Determined's verdict.

The vectors are read from ``../shared/determined-expconf-cases`` (beside the repository root) or
``$DETERMINED_EXPCONF_CASES``; a fresh clone has neither, and there these tests say so and skip.
A vector checks one schema pass: ``sane_as`` / ``sanity_errors`` the pass on submit,
``complete_as`` / ``completeness_errors`` the pass after defaults (run here on the fragment as
given, as Determined's own test does). Where a vector names the field of an error
(``<config>.prefix: ...``), the project's rules must report a problem at that field too.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from common import REPO_ROOT
from trial.expconf import BOOK

CASES_ENV = "DETERMINED_EXPCONF_CASES"

CASES_DIR = Path(
    os.environ.get(CASES_ENV) or REPO_ROOT.parent / "shared" / "determined-expconf-cases"
)
MISSING = (
    f"Determined's expconf test vectors are not at {CASES_DIR} (a fresh clone has no ../shared "
    f"beside it; set {CASES_ENV} to a copy of schemas/test_cases/v0 from Determined v0.38.1)"
)
VERDICT_KEYS = ("sane_as", "sanity_errors", "complete_as", "completeness_errors")
# Determined schema -> (where its fragment sits in an experiment config, what else it needs there).
MOUNTS: dict[str, tuple[str, dict]] = {
    "experiment": ("", {}),
    **dict.fromkeys(
        ("checkpoint-storage", "shared-fs", "directory", "s3", "gcs", "azure"),
        ("checkpoint_storage", {}),
    ),
    **{
        f"searcher{kind}": ("searcher", {})
        for kind in (
            "",
            "-single",
            "-random",
            "-grid",
            "-adaptive-asha",
            "-async-halving",
            "-custom",
            "-adaptive",
            "-adaptive-simple",
            "-sync-halving",
        )
    },
    # A length object in searcher.max_length is checked as a positive length.
    "check-positive-length": ("searcher.max_length", {"searcher": {"name": "single"}}),
    "length": ("min_validation_period", {}),
    # (With no searcher at all, experiment.json's grid condition holds vacuously: name one.)
    **{
        f"hyperparameter{kind}": ("hyperparameters.hp", {"searcher": {"name": "single"}})
        for kind in ("", "-const", "-int", "-double", "-log", "-categorical")
    },
    "check-grid-hyperparameter": ("hyperparameters", {"searcher": {"name": "grid"}}),
    "environment": ("environment", {}),
    "environment-image": ("environment.image", {}),
    "environment-variables": ("environment.environment_variables", {}),
    "resources": ("resources", {}),
    "bind-mount": ("bind_mounts[0]", {"bind_mounts": [None]}),
    "profiling": ("profiling", {}),
    "security": ("security", {}),
    "log-policies": ("log_policies", {}),
    "log-policy": ("log_policies[0]", {"log_policies": [None]}),
    **dict.fromkeys(
        ("log-action", "log-legacy-action-cancel-retries", "log-legacy-action-exclude-node"),
        ("log_policies[0].action", {"log_policies": [{"name": "p"}]}),
    ),
}
TEST_ONLY = (
    "a schema Determined ships only to test its union/default machinery (no experiment field)"
)
NOT_APPLICABLE_SCHEMAS = dict.fromkeys(
    ("test-root", "test-sub", "test-union", "test-union-a", "test-union-b"), TEST_ONLY
)
NOT_APPLICABLE_KEYS = {
    "default_as": "the master's default-filling output, not a verdict on the config",
    "merge_as": "the master's merging of two configs (templates, cluster storage), not a verdict",
}


@dataclass(frozen=True)
class Vector:
    file: str
    name: str
    kind: str  # one of VERDICT_KEYS
    schema: str
    case: Any
    expected: tuple[str, ...]  # error patterns, for the *_errors kinds

    @property
    def id(self) -> str:
        return f"{self.file}::{self.name}::{self.kind}::{self.schema}"


def _schema(url: str) -> str:
    return url.rsplit("/", 1)[-1].removesuffix(".json")


def load_vectors(cases_dir: Path) -> tuple[list[Vector], list[tuple[str, str]]]:
    """Every verdict in the files, and every check that cannot apply, with the reason."""
    vectors, skipped = [], []
    for path in sorted(cases_dir.glob("*.yaml")):
        for case in yaml.safe_load(path.read_text()):
            where = f"{path.name}::{case['name']}"
            for key, reason in NOT_APPLICABLE_KEYS.items():
                if key in case:
                    skipped.append((f"{where}::{key}", reason))
            for kind in VERDICT_KEYS:
                urls = case.get(kind) or {}
                for url in urls:
                    schema = _schema(url)
                    if schema in NOT_APPLICABLE_SCHEMAS:
                        skipped.append(
                            (f"{where}::{kind}::{schema}", NOT_APPLICABLE_SCHEMAS[schema])
                        )
                        continue
                    expected = tuple(urls[url]) if isinstance(urls, dict) else ()
                    vectors.append(
                        Vector(path.name, case["name"], kind, schema, case["case"], expected)
                    )
    return vectors, skipped


VECTORS, NOT_APPLICABLE = load_vectors(CASES_DIR) if CASES_DIR.is_dir() else ([], [])
_TOKEN = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def _place(base: dict, mount: str, value: Any) -> dict:
    """``base`` with ``value`` at ``mount`` (``a.b``, ``a[0].b``); the whole config when empty."""
    if not mount:
        return value
    tokens = [int(i) if i else key for key, i in _TOKEN.findall(mount)]
    node: Any = base
    for token, following in itertools.pairwise(tokens):
        if isinstance(token, str) and token not in node:
            node[token] = {} if isinstance(following, str) else [None]
        node = node[token]
    node[tokens[-1]] = value
    return base


def _under(field: str, mount: str) -> bool:
    return not mount or field == mount or field.startswith((f"{mount}.", f"{mount}["))


def problems_at_mount(vector: Vector) -> list:
    """The project's problems with the vector's fragment placed at its field, for its pass."""
    mount, base = MOUNTS[vector.schema]
    config = _place(copy.deepcopy(base), mount, copy.deepcopy(vector.case))
    complete = vector.kind.startswith("complete")
    return [
        p for p in BOOK.problems("experiment", config, complete=complete) if _under(p.field, mount)
    ]


def _expected_field(pattern: str, mount: str) -> str | None:
    """The field a Determined error pattern names (``<config>.a\\[1\\]: ...``), at ``mount``."""
    match = re.match(r"<config>([^:]*):", pattern)
    if match is None:
        return None
    path = match.group(1).replace("\\[", "[").replace("\\]", "]")
    return (mount + path) if mount else path.removeprefix(".")


def disagreement(vector: Vector) -> str | None:
    """Why the project's verdict differs from Determined's, or None when they agree."""
    problems = problems_at_mount(vector)
    fields = [p.field for p in problems]
    if vector.kind in ("sane_as", "complete_as"):
        return f"Determined accepts; the project says {problems[0].line('')}" if problems else None
    if not problems:
        return "Determined refuses; the project accepts"
    mount = MOUNTS[vector.schema][0]
    for pattern in vector.expected:
        field = _expected_field(pattern, mount)
        if field is not None and not any(_under(f, field) for f in fields):
            return f"Determined names {field!r} ({pattern!r}); the project names {fields}"
    return None


@pytest.mark.parametrize(
    "vector",
    VECTORS or [pytest.param(None, marks=pytest.mark.skip(reason=MISSING))],
    ids=[v.id for v in VECTORS] or ["no-vectors"],
)
def test_vector_gets_determineds_verdict(vector: Vector):
    assert disagreement(vector) is None, disagreement(vector)


def test_vector_counts_and_the_ones_that_cannot_apply(capsys):
    if not VECTORS:
        pytest.skip(MISSING)
    agree = sum(disagreement(v) is None for v in VECTORS)
    with capsys.disabled():
        print(
            f"\nDetermined {CASES_DIR.name}: {len(VECTORS)} applicable, {agree} agree, "
            f"{len(NOT_APPLICABLE)} not applicable:"
        )
        for where, reason in NOT_APPLICABLE:
            print(f"  not applicable: {where}: {reason}")
    assert agree == len(VECTORS)
    # Every schema the vectors use is placed at a field or listed as not applicable (none dropped).
    assert {v.schema for v in VECTORS} <= set(MOUNTS)
    # And both verdicts occur: the suite cannot pass by accepting, or refusing, everything.
    kinds = {v.kind for v in VECTORS}
    assert {"sane_as", "sanity_errors", "complete_as", "completeness_errors"} <= kinds


def test_vectors_are_found_beside_the_repository_or_through_the_environment(tmp_path, monkeypatch):
    (tmp_path / "one.yaml").write_text(
        "- name: a refused s3 prefix\n"
        "  sanity_errors:\n"
        "    http://determined.ai/schemas/expconf/v0/s3.json: ['<config>.prefix: .*']\n"
        "  case: {type: s3, bucket: b, prefix: '../up'}\n"
        "- name: defaults only\n"
        "  default_as: http://determined.ai/schemas/expconf/v0/test-root.json\n"
        "  case: {}\n"
    )
    vectors, skipped = load_vectors(tmp_path)
    assert [(v.kind, v.schema) for v in vectors] == [("sanity_errors", "s3")]
    assert disagreement(vectors[0]) is None
    assert [where for where, _ in skipped] == ["one.yaml::defaults only::default_as"]
