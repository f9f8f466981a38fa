"""Validate experiment YAMLs with Determined's own experiment-config schema before submitting.

determined 0.38.1 no longer ships its JSON schema in the Python package (the master validates on
submit), so ci/setup.sh extracts ``determined.common.schemas`` — the schema and Determined's own
validator extensions — from the last wheel that carried them (determined 0.20.1, from PyPI) into
``<venv>/share/determined-expconf``. The experiment fields this project uses have the same shape in
that schema and in 0.38; fields added after 0.20 (e.g. ``searcher.time_metric``) are not known to it.
This is the client-side "sanity" check; the master's completeness check (required fields after
defaults) still runs on submit. The validator uses jsonschema 3's API, hence the jsonschema pin.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from errors import ConfigError

SCHEMA_VERSION = "0.20.1"
SCHEMA_DIR = Path(sys.prefix) / "share" / "determined-expconf" / "schemas"
MODULE = "determined.common.schemas"


def validate_experiment(config: Mapping[str, Any], *, source: str) -> None:
    """Raise ConfigError naming ``source`` and the first offending field; return on success."""
    errors = _schemas().expconf.sanity_validation_errors(dict(config))
    if errors:
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {_one_line(errors[0])}{more}")


def _schemas() -> Any:
    if MODULE in sys.modules:
        return sys.modules[MODULE]
    init = SCHEMA_DIR / "__init__.py"
    if not init.exists():
        raise ConfigError(
            f"Determined's experiment-config schema is missing at {SCHEMA_DIR}; run ci/setup.sh"
        )
    spec = importlib.util.spec_from_file_location(
        MODULE, init, submodule_search_locations=[str(SCHEMA_DIR)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[MODULE]
        raise
    return module


def _one_line(message: str) -> str:
    return " ".join(str(message).split())
