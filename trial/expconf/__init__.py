"""Check an experiment config against Determined 0.38.1's rules, offline, before anything is submitted.

Determined's Python wheel stopped carrying its experiment-config schema after 0.21 (the master
validates), so these rules are the project's own, written from Determined 0.38.1's source: one rule
set per schema in ``schemas/expconf/v0`` (named after it: ``checkpoint-storage``, ``s3``,
``searcher-adaptive-asha``, ``hyperparameter-int``, ``profiling``, ...; see the sibling modules),
checked with the master's two schema passes (sanity on submit; completeness after defaults and the
cluster's checkpoint storage are merged in), plus the master's own create-experiment checks
(``master.py``). tests/trial/test_trial_expconf_vectors.py runs Determined's own test vectors
through it. With a reachable master its own verdict (``validateOnly``) is final; see
trial/verbs/cluster.py.

Every violation is one line naming the field and what to do; deprecations come back as notices.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from errors import ConfigError
from trial.expconf.engine import DETERMINED_VERSION, Problem
from trial.expconf.master import BOOK, MASTER_DEFAULT_STORAGE, check_experiment, deprecations

__all__ = [
    "BOOK",
    "DETERMINED_VERSION",
    "MASTER_DEFAULT_STORAGE",
    "Problem",
    "check_experiment",
    "deprecations",
    "validate_experiment",
]


def validate_experiment(
    config: Mapping[str, Any],
    *,
    source: str,
    cluster_storage: Mapping[str, Any] = MASTER_DEFAULT_STORAGE,
) -> list[str]:
    """Raise ConfigError (one line: source, field, fix) on the first violation; return notices.

    ``cluster_storage``: the checkpoint storage the master merges in (its packaged default unless
    the caller knows the cluster's)."""
    problems = check_experiment(config, cluster_storage=cluster_storage)
    if problems:
        raise ConfigError(problems[0].line(source))
    return deprecations(config, source=source)
