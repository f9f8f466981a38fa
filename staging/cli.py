"""Command line of ``python -m staging`` (and the option merging ``invoke stage-coco`` shares)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from common import quiet_library_warnings
from errors import ConfigError, ProjectError

OPTION_HELP = {
    "source": "COCO 2017 folder: a local/NFS path, gs://bucket/prefix or s3://bucket/prefix "
    "(data.source)",
    "cache": "node-local cache directory shared by every trial and rank (data.cache)",
    "dest": "where to build the COCO-layout view the trial reads (data.dest)",
    "splits": "comma-separated splits to stage, e.g. train,val (data.splits)",
    "with_images": "also stage the images (otherwise gs:// and s3:// images are read through "
    "the cache)",
    "subset": "N images per split, chosen deterministically by --seed (for CI)",
    "seed": "seed that chooses the --subset images",
    "workers": "parallel downloads",
    "verify": "re-hash cached files against their recorded crc32c and re-fetch bad ones",
    "dry_run": "print what would be fetched and exit without writing anything",
    "weights_mirror": "gs:// or s3://bucket/prefix, or a folder, holding pretrained checkpoints "
    "(data.weights_mirror; implies --stage-weights)",
    "stage_weights": "also stage the pretrained checkpoints the experiment's model loads "
    "(data.stage_weights)",
    "experiment_config": "read the data: section from this experiment YAML ('-' = stdin, "
    "env:NAME = the variable NAME)",
    "checkpoints": "JSON list of the checkpoints the trial loads, for --stage-weights (written "
    "by `python -m trial.settings.pretrained`; the startup hook passes it)",
}


INT_OPTIONS = ("subset", "seed", "workers")
WEIGHTS_NEED_EXPERIMENT = (
    "staging weights needs the experiment's hyperparameters (its model names the "
    "checkpoints); pass --experiment-config EXPERIMENT.yaml"
)
WEIGHTS_NEED_LIST = (
    "data.weights_mirror/stage_weights: staging needs the list of checkpoints the trial "
    "loads; run hooks/startup-hook.sh or `invoke stage-coco --experiment-config X`, or pass "
    "--checkpoints FILE written by `python -m trial.settings.pretrained --experiment-config X --out FILE`"
)


def merge_options(base: dict[str, Any] | None, **options: Any) -> dict[str, Any]:
    """``data:`` from a config overlaid by explicit options (None/False/'' mean "not given")."""
    data = dict(base or {})
    for key, value in options.items():
        if value is None or value == "" or value is False:
            continue
        data[key] = value
    return data


def build_spec(
    experiment_config: str | None = None,
    *,
    base: dict | None = None,
    checkpoints: list[str] | None = None,
    **options: Any,
):
    """DataSpec from an optional experiment config (or its loaded ``base``) plus options
    (numbers may come as command-line strings: ``--subset abc`` is one ConfigError).
    ``checkpoints``: the trial's checkpoint list, when one was handed over."""
    from staging.spec import DataSpec, config_label, load_data_section

    options = {k: _cli_int(k, v) if k in INT_OPTIONS else v for k, v in options.items()}

    if base is None and experiment_config:
        base = load_data_section(experiment_config)
        if base is None and not options.get("source"):
            raise ConfigError(
                f"{config_label(experiment_config)} has no data: section; add "
                "data.source/cache/dest"
            )
    spec = DataSpec.from_dict(merge_options(base, **options))
    if spec.weights_enabled and not experiment_config and checkpoints is None:
        raise ConfigError(WEIGHTS_NEED_EXPERIMENT)
    return spec


def load_checkpoints(path: str) -> list[str]:
    """The checkpoint references in ``path`` (a JSON list of strings); ConfigError if bad."""
    import json
    from pathlib import Path

    try:
        refs = json.loads(Path(path).read_text())
    except OSError as err:
        raise ConfigError(f"cannot read --checkpoints {path}: {err.strerror}") from err
    except ValueError as err:
        raise ConfigError(f"--checkpoints {path} is not JSON: {err}") from err
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise ConfigError(f"--checkpoints {path} must hold a JSON list of checkpoint strings")
    return refs


def _cli_int(name: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return int(value.strip())
    except ValueError:
        flag = name.replace("_", "-")
        raise ConfigError(f"--{flag} {value!r} is not a whole number; e.g. --{flag} 100") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m staging", description=__doc__)
    for name in ("source", "cache", "dest", "splits", "weights_mirror", "experiment_config",
                 "checkpoints"):  # fmt: skip
        p.add_argument(f"--{name.replace('_', '-')}", help=OPTION_HELP[name])
    for name in INT_OPTIONS:  # checked by build_spec: one-line error, exit 1
        p.add_argument(f"--{name}", help=OPTION_HELP[name])
    for name in ("with_images", "verify", "stage_weights", "dry_run"):
        p.add_argument(f"--{name.replace('_', '-')}", action="store_true", help=OPTION_HELP[name])
    p.add_argument(
        "--if-configured",
        action="store_true",
        help="exit 0 quietly when the experiment config has no data: section (hook)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse, stage, print the summary line; ProjectError -> one line on stderr, exit 1."""
    args = _parser().parse_args(argv)
    quiet_library_warnings()  # e.g. google-api-core's notice that it will drop this Python one day
    logging.basicConfig(level=logging.INFO, format="staging: %(message)s", stream=sys.stderr)
    for chatty in ("botocore", "boto3", "s3transfer", "urllib3"):  # "Found credentials in ..."
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        return _run(args)
    except ProjectError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    from staging.spec import config_label, data_section, load_experiment_doc
    from staging.stage import stage_coco
    from staging.weights import stage_weights

    doc = load_experiment_doc(args.experiment_config) if args.experiment_config else None
    base = data_section(doc) if doc is not None else None
    if args.if_configured and not base:  # a data: section is checked whole, typos included
        print(
            f"staging: no data: section in {config_label(args.experiment_config)}; nothing to "
            "stage",
            file=sys.stderr,
        )
        return 0
    skip = ("experiment_config", "dry_run", "checkpoints")
    options = {k: getattr(args, k) for k in OPTION_HELP if k not in skip}
    refs = load_checkpoints(args.checkpoints) if args.checkpoints else None
    spec = build_spec(args.experiment_config, base=base, checkpoints=refs, **options)
    if spec.weights_enabled and refs is None and not args.dry_run:
        raise ConfigError(WEIGHTS_NEED_LIST)  # before anything is staged
    result = stage_coco(spec, progress=not args.quiet, dry_run=args.dry_run)
    if not args.dry_run:
        print(result.summary())
        if spec.weights_enabled:
            assert refs is not None
            print(stage_weights(spec.cache, refs, mirror=spec.weights_mirror).summary())
    return 0
