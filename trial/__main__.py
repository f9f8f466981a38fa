"""``python -m trial``: the bundled trial's entrypoint.

On a Determined cluster it takes everything from the cluster info (experiment config,
hyperparameters, latest checkpoint, distributed layout); off-cluster ``--local`` runs the same code
with a dummy core context whose checkpoints live in ``<work-dir>/checkpoints``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from errors import ProjectError


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        result = _run_local(args) if args.local else _run_cluster()
    except ProjectError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    _print_summary(result, args.work_dir if args.local else None)
    return 0


def _run_cluster():
    import determined as det

    from trial.data import staged_data_paths
    from trial.run import RunRequest, train

    info = det.get_cluster_info()
    if info is None or info.task_type != "TRIAL":
        raise ProjectError(
            "no Determined trial found; off-cluster use `python -m trial --local` or `invoke train`"
        )
    # The experiment config is private in Determined's API; the trial reads only what Determined's
    # own code reads from it (searcher length, validation/checkpoint periods). `data:` is public.
    experiment = info.trial._config
    world_size = len(info.slot_ids) * len(info.container_addrs)
    distributed = det.core.DistributedContext.from_torch_distributed() if world_size > 1 else None
    request = RunRequest(
        experiment=experiment,
        hparams=info.trial.hparams,
        data=staged_data_paths(info.user_data or {}),
        work_dir=Path("work_dirs") / f"trial_{info.trial.trial_id}",
        resume_from=info.latest_checkpoint,
    )
    with det.core.init(distributed=distributed) as core_context:
        return train(core_context, request, world_size=world_size)


def _run_local(args: argparse.Namespace):
    import determined as det

    from trial.config import layer, parse_set_options
    from trial.data import resolve_data
    from trial.experiment import load_experiment, local_hparams
    from trial.run import RunRequest, SignalPreemption, resume_checkpoint, train

    experiment = load_experiment(args.experiment)
    work_dir = Path(args.work_dir).resolve()
    storage = work_dir / "checkpoints"
    hparams = layer(
        local_hparams(experiment.get("hyperparameters") or {}), parse_set_options(args.hparam)
    )
    request = RunRequest(
        experiment=experiment,
        hparams=hparams,
        data=resolve_data(args.data, experiment, check_json=not args.checked_data),
        work_dir=work_dir / "run",
        max_iters=args.max_iters,
        overrides=parse_set_options(args.set),
        resume_from=resume_checkpoint(storage) if args.resume else None,
        metrics_log=work_dir / "metrics.jsonl",
    )
    storage.mkdir(parents=True, exist_ok=True)
    with det.core.init(checkpoint_storage=str(storage)) as core_context:
        core_context.preempt = SignalPreemption(core_context.preempt)
        return train(core_context, request)


def _print_summary(result, work_dir: str | None) -> None:
    summary = {
        "steps": result.steps,
        "preempted": result.preempted,
        "checkpoint": result.checkpoint,
        "validation": dict(result.validation),
    }
    if work_dir:
        path = Path(work_dir) / "result.json"
        tmp = path.with_suffix(".json.incomplete")
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(path)
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in result.validation.items() if k.endswith("mAP"))
    state = "preempted" if result.preempted else "finished"
    print(f"trial {state} at step {result.steps}; {metrics or 'no validation metrics'}", flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trial", description=__doc__.splitlines()[0])
    p.add_argument("--local", action="store_true", help="run off-cluster with a dummy core context")
    p.add_argument("--experiment", help="experiment YAML (local mode)")
    p.add_argument("--work-dir", default="work", help="local work directory (local mode)")
    p.add_argument(
        "--data",
        help="COCO-layout directory, 'experiment' for the staged data: section, "
        "or unset for the built-in shapes set",
    )
    p.add_argument(
        "--max-iters",
        type=int,
        help="training length in batches (overrides hyperparameters.max_iters)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted mmengine config override (repeatable)",
    )
    p.add_argument(
        "--hparam",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="trial hyperparameter, e.g. model=gfl or global_batch_size=4 (repeatable)",
    )
    p.add_argument("--resume", action="store_true", help="resume from the newest local checkpoint")
    p.add_argument(
        "--checked-data",
        action="store_true",
        help="the --data JSON was already validated (invoke train's preflight): check layout only",
    )
    return p


if __name__ == "__main__":
    sys.exit(main())
