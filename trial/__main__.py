"""``python -m trial``: the bundled trial's entrypoint.

On a Determined cluster it takes everything from the cluster info (experiment config,
hyperparameters, latest checkpoint, distributed layout); off-cluster ``--local`` runs the same code
with a dummy core context whose checkpoints live in ``<work-dir>/checkpoints``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from common import write_atomic
from errors import ProjectError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.nproc < 1:
        print(f"error: --nproc {args.nproc} must be at least 1", file=sys.stderr)
        return 1
    try:
        if args.local and "LOCAL_RANK" not in os.environ and not args.resume:
            from trial.runtime.workdir import check_start

            check_start(Path(args.work_dir).resolve(), resume=False, fresh=False)
    except ProjectError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.local and args.nproc > 1 and "LOCAL_RANK" not in os.environ:
        return _supervise_ranks(argv, args)
    from trial.ui.console import local_session

    try:
        # locally: the terminal shows progress; everything else goes to <work-dir>/train.log
        with local_session(args.work_dir, verbose=args.verbose or not args.local) as console:
            result = _run_local(args, console) if args.local else _run_cluster()
            if int(os.environ.get("RANK", "0")) == 0:
                _print_summary(result, args.work_dir if args.local else None)
    except ProjectError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _supervise_ranks(argv: list[str], args: argparse.Namespace) -> int:
    from trial.runtime.ranks import run_ranks

    code = run_ranks(argv, nproc=args.nproc, work_dir=args.work_dir)
    if code != 0:
        print(
            f"error: {args.nproc} local ranks exited with code {code}; see the rank logs above",
            file=sys.stderr,
        )
    return code


def _run_cluster():
    import determined as det

    from trial.runtime.data import staged_data_paths
    from trial.runtime.train import RunRequest, train

    info = det.get_cluster_info()
    if info is None or info.task_type != "TRIAL":
        raise ProjectError(
            "no Determined trial found; off-cluster use `python -m trial --local` or `invoke train`"
        )
    # Determined 0.38.1 has no public accessor for the experiment config (TrialInfo keeps it as
    # `_config`, "not a stable API"); `data:` is read through the public `info.user_data` instead.
    experiment = info.trial._config
    world_size = sum(info.container_slot_counts)
    distributed = _torch_distributed_context(det, world_size)
    request = RunRequest(
        experiment=experiment,
        hparams=info.trial.hparams,
        data=staged_data_paths(info.user_data or {}),
        work_dir=Path("work_dirs") / f"trial_{info.trial.trial_id}",
        resume_from=info.latest_checkpoint,
    )
    with det.core.init(
        distributed=distributed,
        preempt_mode=_preempt_mode(det, distributed),
        tensorboard_mode=_tensorboard_mode(det, distributed),
    ) as core_context:
        if distributed is None or distributed.get_rank() == 0:  # the one that asks the master
            from trial.engine.searcher_stop import SearcherStop, master_trial_state

            core_context.preempt = SearcherStop(core_context.preempt, master_trial_state(info))
        if distributed is not None:
            from trial.engine.distributed import RankPreemption, dist_timeout

            timeout_s = dist_timeout(request.hparams)
            core_context.preempt = RankPreemption(core_context.preempt, timeout_s=timeout_s)
        return train(core_context, request, world_size=world_size)


def _tensorboard_mode(det, distributed):
    """Only rank 0 writes TensorBoard files (mmengine's visualizer is master-only): the other
    ranks upload nothing. Determined's AUTO mode would have each of them sync its (empty) folder
    to checkpoint storage and, on exit, wait without a deadline for that upload — forever when the
    node has lost its network."""
    modes = det.core.TensorboardMode
    chief = distributed is None or distributed.get_rank() == 0
    return modes.AUTO if chief else modes.MANUAL


def _preempt_mode(det, distributed):
    """Many ranks: only the chief asks Determined; the ranks agree through RankPreemption."""
    modes = det.core.PreemptMode
    return modes.WorkersAskChief if distributed is None else modes.ChiefOnly


def _torch_distributed_context(det, world_size: int):
    """Determined's DistributedContext from torch's launcher environment (None for one rank)."""
    if world_size <= 1:
        return None
    if "LOCAL_RANK" not in os.environ:
        raise ProjectError(
            f"{world_size} slots but no torch launcher environment; set the entrypoint to "
            "`python3 -m determined.launch.torch_distributed python3 -m trial`"
        )
    return det.core.DistributedContext.from_torch_distributed()


def _run_local(args: argparse.Namespace, console=None):
    import determined as det

    from trial.engine.distributed import RankPreemption, dist_timeout, torch_world_size
    from trial.runtime.data import resolve_data
    from trial.runtime.train import RunRequest, SignalPreemption, train
    from trial.runtime.workdir import resume_checkpoint
    from trial.settings.hparams import load_experiment, local_hparams
    from trial.settings.preflight import command_line_overrides
    from trial.ui.progress import console_hooks

    experiment = load_experiment(args.experiment)
    work_dir = Path(args.work_dir).resolve()
    storage = work_dir / "checkpoints"
    hparams, overrides = command_line_overrides(
        local_hparams(experiment.get("hyperparameters") or {}),
        sets=args.set,
        hparam_items=args.hparam,
    )
    request = RunRequest(
        experiment=experiment,
        hparams=hparams,
        data=resolve_data(args.data, experiment, check_json=not args.checked_data),
        work_dir=work_dir / "run",
        max_iters=args.max_iters,
        overrides=overrides,
        resume_from=resume_checkpoint(storage) if args.resume else None,
        metrics_log=work_dir / "metrics.jsonl",
        hooks=console_hooks(console, work_dir, interval=hparams.get("log_interval") or 10),
    )
    storage.mkdir(parents=True, exist_ok=True)
    world_size = torch_world_size()
    distributed = _torch_distributed_context(det, world_size)
    mode = _preempt_mode(det, distributed)
    with det.core.init(
        checkpoint_storage=str(storage), distributed=distributed, preempt_mode=mode
    ) as core_context:
        core_context.preempt = SignalPreemption(core_context.preempt)
        if distributed is not None:
            from trial.runtime.ranks import preempt_request_file

            core_context.preempt = RankPreemption(
                core_context.preempt,
                request_file=preempt_request_file(work_dir),
                timeout_s=dist_timeout(hparams),
            )
        return train(core_context, request, world_size=world_size)


def _print_summary(result, work_dir: str | None) -> None:
    summary = {
        "steps": result.steps,
        "preempted": result.preempted,
        "checkpoint": result.checkpoint,
        "validation": dict(result.validation),
    }
    if work_dir:
        write_atomic(Path(work_dir) / "result.json", json.dumps(summary, indent=2))
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
        "--nproc",
        type=int,
        default=1,
        help="local mode: run N ranks through torch's launcher (gloo on CPU, nccl on GPUs)",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="local mode: mmengine's full log on the terminal instead of progress bars",
    )
    p.add_argument(
        "--checked-data",
        action="store_true",
        help="the --data JSON was already validated (invoke train's preflight): check layout only",
    )
    return p


if __name__ == "__main__":
    sys.exit(main())
