"""The pretrained checkpoints a trial's config loads (``init_cfg=Pretrained``, ``load_from``),
named for staging: ``python -m trial.settings.pretrained`` hands them to staging as data
(staging needs nothing from the trial: the startup hook runs this first, then
``python -m staging --checkpoints FILE``).

    python -m trial.settings.pretrained --experiment-config EXPERIMENT.yaml --out refs.json

Writes a JSON list of checkpoint references when the experiment's ``data:`` stages weights
(``weights_mirror`` or ``stage_weights``), and nothing otherwise. The trial's hyperparameters
come from Determined ($DET_HPARAMS, or ``hparams`` in trial.json), else from the experiment's
``hyperparameters:`` as a local run resolves them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from errors import ConfigError, ProjectError
from trial.settings.config import load_base_config, resolve_base
from trial.settings.hparams import RESERVED_HPARAMS, local_hparams, model_ref
from trial.settings.overrides import apply_overrides, flatten_hparams

WEIGHTS_NEED_HPARAMS = (
    "staging weights needs the experiment's hyperparameters (its model names the "
    "checkpoints); pass --experiment-config EXPERIMENT.yaml"
)


def needed_checkpoints(hparams: Mapping[str, Any]) -> list[str]:
    """The checkpoints a trial with these hyperparameters loads (none when pretrained is off)."""
    from staging.weights import checkpoint_refs

    if not hparams.get("pretrained", True):
        return []
    cfg = load_base_config(resolve_base(model_ref(hparams)))
    apply_overrides(cfg, flatten_hparams(hparams, reserved=RESERVED_HPARAMS))
    return checkpoint_refs(cfg)


def experiment_checkpoints(doc: dict[str, Any] | str | None) -> list[str]:
    """The checkpoints the trial of this experiment document (or its path) loads."""
    from staging.spec import load_experiment_doc

    doc = load_experiment_doc(doc) if isinstance(doc, str) else doc or {}
    config = doc.get("config") if "hyperparameters" not in doc and "config" in doc else doc
    hparams = doc.get("hparams")
    if os.environ.get("DET_HPARAMS"):
        hparams = json.loads(os.environ["DET_HPARAMS"])
    if not isinstance(hparams, dict):
        hparams = local_hparams((config or {}).get("hyperparameters") or {})
    if not hparams:
        raise ConfigError(WEIGHTS_NEED_HPARAMS)
    return needed_checkpoints(hparams)


def main(argv: list[str] | None = None) -> int:
    """Write the list when the experiment stages weights; ProjectError -> one line, exit 1."""
    p = argparse.ArgumentParser(prog="python -m trial.settings.pretrained", description=__doc__)
    p.add_argument(
        "--experiment-config",
        required=True,
        help="experiment YAML or trial.json (env:NAME: the variable NAME)",
    )
    p.add_argument("--out", required=True, help="where to write the JSON list")
    args = p.parse_args(argv)
    try:
        from staging.cache import write_atomic
        from staging.spec import data_section, load_experiment_doc

        doc = load_experiment_doc(args.experiment_config)
        data = data_section(doc) or {}
        if not (data.get("weights_mirror") or data.get("stage_weights")):
            return 0
        refs = experiment_checkpoints(doc)
        write_atomic(Path(args.out), json.dumps(refs).encode())
    except ProjectError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
