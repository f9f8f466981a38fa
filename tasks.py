"""mmdet-determined's user-facing verbs. Wiring only: parse options, call one package function,
turn a ProjectError into one line on stderr and exit 1. Heavy imports stay inside the tasks so that
``invoke --list`` is instant."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from invoke import Exit, task

from common import quiet_library_warnings
from errors import ProjectError


@contextmanager
def user_errors(interrupted: str = "interrupted (Ctrl-C)") -> Iterator[None]:
    """Turn a ProjectError into a one-line message and exit code 1 (no traceback); Ctrl-C into
    one line saying ``interrupted`` and exit code 130 (invoke alone exits 1 without a word).

    A reader that stopped early (``invoke ... | head -2``) ends the verb quietly with exit 0:
    stdout is flushed here, while a closed pipe can still be caught, and then pointed at
    /dev/null so that the interpreter's own flush at exit finds nothing to complain about.
    Library notices nobody running a verb can act on are hidden (common.LIBRARY_NOISE)."""
    quiet_library_warnings()
    try:
        yield
        sys.stdout.flush()
    except ProjectError as err:
        raise Exit(f"error: {err}", code=err.exit_code) from None
    except KeyboardInterrupt:
        raise Exit(f"error: {interrupted}", code=130) from None
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        raise Exit(code=0) from None


# --- images (owner: images/) -------------------------------------------------------------------
# BEGIN images tasks
@task(
    iterable=["variant"],
    help={
        "variant": "variant of images/matrix.yaml to build (repeatable), e.g. --variant cpu",
        "all": "build every variant of images/matrix.yaml",
        "builder": "docker (buildx, registry cache) or buildah (daemonless; this machine)",
        "push": "push both tags to --registry after building",
        "registry": "registry prefix for the tags, e.g. ghcr.io/acme (default: local only)",
        "dry_run": "print the plan (tags, build args, command, skip decision); build nothing",
        "wheelhouse": "dir of ready torch/mmcv wheels, or 'auto' (ci/setup.sh cache, /opt/wheels)",
        "base_image": "replace the variant's runtime base image (e.g. a mirror of the digest)",
        "force": "build even when the content-hash tag already exists",
        "pip_conf": "pip config for the build (private index + token), mounted as a build secret",
        "check": "only check that README.md's variant table matches images/matrix.yaml",
        "update_readme": "only regenerate README.md's variant table from images/matrix.yaml",
    },
)
def build_image(
    c,
    variant=None,
    all=False,
    builder="buildah",
    push=False,
    registry=None,
    dry_run=False,
    wheelhouse=None,
    base_image=None,
    force=False,
    pip_conf=None,
    check=False,
    update_readme=False,
):
    """Build mmdet/mmcv/torch/determined images from the checked matrix (images/matrix.yaml).

    Every variant is checked against the compatibility rules first; an image whose content-hash tag
    already exists (locally or in --registry) is skipped unless --force.
    """
    with user_errors():
        if check or update_readme:
            from images.readme import sync_readme

            changed = sync_readme(check=check)
            print("README.md image table " + ("updated" if changed else "is current"))
            return
        from images.build import BuildRequest, build_images

        request = BuildRequest(
            variants=tuple(variant or ()), all=all, builder=builder, registry=registry,
            push=push, dry_run=dry_run, force=force, wheelhouse=wheelhouse,
            base_image=base_image, pip_conf=pip_conf,
        )  # fmt: skip
        build_images(request)


@task(
    help={
        "tag": "image reference, e.g. localhost/mmdet-determined:mmdet3.3.0-…-cpu-py3.11",
        "builder": "buildah (run in a working container) or docker (docker run; GPU when visible)",
    },
)
def test_image(c, tag, builder="buildah"):
    """Run the smoke checks inside a built image (versions, mmcv ops, CUDA, determined imports)."""
    with user_errors():
        from images.verify import test_image as run_smoke

        print(run_smoke(tag, builder=builder), end="")


# END images tasks


# --- staging (owner: staging/) -----------------------------------------------------------------
# BEGIN staging tasks
@task(
    help={
        "source": "COCO 2017 folder: a local/NFS path, gs:// or s3://bucket/prefix (data.source)",
        "cache": "node-local cache directory shared by every trial and rank (data.cache)",
        "dest": "where to build the COCO-layout view the trial reads (data.dest)",
        "splits": "comma-separated splits, e.g. train,val (default: both)",
        "with_images": "also stage the images (else gs:// and s3:// images are read through "
        "the cache)",
        "subset": "N images per split, chosen deterministically by --seed (CI)",
        "seed": "seed that chooses the --subset images (default 0)",
        "workers": "parallel downloads (default 16)",
        "verify": "re-hash cached files against their crc32c and re-fetch bad ones",
        "dry_run": "print what would be fetched and exit without writing",
        "experiment_config": "read defaults from this experiment YAML's data: section",
        "weights_mirror": "gs:// or s3://bucket/prefix, or a folder, holding pretrained checkpoints "
        "(data.weights_mirror; implies --stage-weights)",
        "stage_weights": "also stage the checkpoints the experiment's model loads (needs "
        "--experiment-config)",
    },
)
def stage_coco(
    c,
    source=None,
    cache=None,
    dest=None,
    splits=None,
    with_images=False,
    subset=None,
    seed=None,
    workers=None,
    verify=False,
    dry_run=False,
    experiment_config=None,
    weights_mirror=None,
    stage_weights=False,
):
    """Stage COCO annotations (and images) from disk, gs:// or s3:// into the node cache and a dest view.

    A warm cache costs metadata checks only. Example:
    invoke stage-coco --source gs://bucket/coco2017 --cache /mnt/node-cache/coco --dest /tmp/coco
    """
    with user_errors(
        "stage-coco interrupted (Ctrl-C): the cache keeps only complete files; run it again to "
        "continue (files already staged are not fetched again)"
    ):
        from staging.cli import build_spec
        from staging.stage import stage_coco as run_stage

        spec = build_spec(
            experiment_config, source=source, cache=cache, dest=dest, splits=splits,
            with_images=with_images, subset=subset, seed=seed, workers=workers, verify=verify,
            weights_mirror=weights_mirror, stage_weights=stage_weights,
        )  # fmt: skip
        result = run_stage(spec, progress=True, dry_run=dry_run)
        if not dry_run:
            print(result.summary())
        if spec.weights_enabled and not dry_run:  # the trial names them; staging fetches them
            from staging.weights import stage_weights
            from trial.settings.pretrained import experiment_checkpoints

            refs = experiment_checkpoints(experiment_config)
            print(stage_weights(spec.cache, refs, mirror=spec.weights_mirror).summary())


# END staging tasks


# --- trial (owner: trial/) ---------------------------------------------------------------------
# BEGIN trial tasks
@task(
    help={
        "model": "retinanet | maskrcnn | gfl | an mmdet config such as "
        "mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py",
        "cluster": "submit to the Determined master ($DET_MASTER or --master) instead of training here",
        "data": "COCO-layout directory (annotations/instances_{train,val}2017.json, {train,val}2017/); "
        "default: the built-in shapes set",
        "max_iters": "training length in iterations (local default 200, 400 for retinanet on the "
        "shapes set; with --cluster it sets hyperparameters.max_iters)",
        "work_dir": "local work directory (default ./work_dirs/MODEL): checkpoints, metrics, logs",
        "config": "an mmdet 3.x config .py file to train instead of a bundled model",
        "set": "dotted mmengine override, repeatable: --set optim_wrapper.optimizer.lr=0.01",
        "hparam": "trial hyperparameter, repeatable: --hparam global_batch_size=8",
        "resume": "continue the local run in --work-dir from its newest checkpoint",
        "fresh": "delete the previous run in --work-dir and start over (else it is refused)",
        "master": "Determined master URL for --cluster (default: $DET_MASTER)",
        "registry": "with --cluster: the registry invoke build-image --registry pushed the image "
        "to; it completes the experiment's mmdet-determined:TAG",
        "experiment": "experiment YAML to run (default: experiments/MODEL.yaml)",
        "dry_run": "with --cluster: check the experiment against Determined 0.38.1's rules and print "
        "the YAML and context directory that would be submitted; submit nothing",
        "nproc": "local ranks (torch's launcher; gloo on CPU, nccl on GPUs); "
        "global_batch_size must be a multiple",
        "verbose": "local: mmengine's full log on the terminal instead of progress bars "
        "(otherwise it goes to WORK_DIR/train.log)",
    },
    iterable=["set_", "hparam"],
    auto_shortflags=False,
)
def train(
    c,
    model,
    cluster=False,
    data=None,
    max_iters=None,
    work_dir=None,
    config=None,
    set_=None,
    hparam=None,
    resume=False,
    master=None,
    experiment=None,
    dry_run=False,
    nproc=None,
    verbose=False,
    fresh=False,
    registry=None,
):
    """Train an mmdet model through the bundled Determined trial (locally, or --cluster).

    Locally (the default) the trial runs on this machine with a dummy Determined context and prints
    the final bbox mAP; with --cluster the experiment YAML is checked against Determined 0.38.1's
    rules, then the master validates it (validateOnly) and creates it; --dry-run prints it instead.
    """
    with user_errors():
        from trial.verbs.options import check_mode_options, optional_whole_number

        check_mode_options(
            cluster=cluster, local_only={"--data": data, "--work-dir": work_dir, "--resume": resume,
            "--fresh": fresh, "--nproc": nproc, "--verbose": verbose},
            cluster_only={"--dry-run": dry_run, "--master": master, "--registry": registry},
        )  # fmt: skip
        iters = optional_whole_number(max_iters, "--max-iters", what="training iterations")
        if cluster:
            from trial.verbs.cluster import submit

            print(
                submit(
                    model, dry_run=dry_run, config=config, sets=set_ or [], hparams=hparam or [],
                    max_iters=iters, master=master, experiment_path=experiment, registry=registry,
                )
            )  # fmt: skip
            return
        from trial.verbs.local import LocalTrain, result_line, train_local

        result = train_local(
            LocalTrain(
                model=model,
                data=data,
                max_iters=iters,
                work_dir=work_dir,
                config=config,
                sets=set_ or [],
                hparams=hparam or [],
                resume=resume,
                experiment=experiment,
                nproc=optional_whole_number(nproc, "--nproc", what="local ranks") or 1,
                verbose=verbose,
                fresh=fresh,
            )
        )
        print(result_line(result))


# END trial tasks


# --- export / eval / predict (owner: trial/verbs/export.py, trial/verbs/evaluate.py, trial/verbs/predict.py) ----
# BEGIN export tasks
SOURCE_HELP = (
    "a local work directory (its newest checkpoint), a checkpoint directory or .pth file, "
    "or a Determined checkpoint UUID"
)


@task(
    help={
        "source": SOURCE_HELP,
        "out": "new (or empty) directory for config.py, model.pth, export.json and README.md",
        "master": "Determined master URL for a checkpoint UUID (default: $DET_MASTER)",
    },
)
def export(c, source, out, master=None):
    """Export a trained checkpoint as a plain MMDetection model (config.py + model.pth).

    The export loads with stock mmdet (init_detector / DetInferencer), without this project.
    Example: invoke export work_dirs/retinanet --out exports/retinanet
    """
    with user_errors():
        from trial.verbs.export import export_model

        info = export_model(source, out, master=master)
        print(
            f"exported {info['model']} (iteration {info['iterations']}, checkpoint "
            f"{info['source']['checkpoint']}) to {out}"
        )


@task(
    name="eval",
    help={
        "model": "an export directory (invoke export), or any SOURCE invoke export takes",
        "data": "COCO-layout directory: annotations/instances_SPLIT2017.json and SPLIT2017/",
        "split": "which split of --data (default val)",
        "out": "where to write the metrics JSON (default ./eval_SPLIT.json)",
        "master": "Determined master URL when MODEL is a checkpoint UUID (default: $DET_MASTER)",
        "device": "torch device, e.g. cpu or cuda:1 (default: cuda:0 when there is a GPU, else cpu)",
    },
)
def eval_(c, model, data, split="val", out=None, master=None, device=None):
    """COCO bbox (and segm) mAP of a model on a COCO-layout directory; prints the table, writes JSON.

    Example: invoke eval exports/retinanet --data /data/coco
    """
    with user_errors():
        from trial.verbs.evaluate import evaluate_model

        result = evaluate_model(model, data, split=split, out=out, master=master, device=device)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items() if k.endswith("mAP"))
        print(
            f"{shown} on {result['images']} {split} images (checkpoint {result['checkpoint']}); "
            f"metrics in {out or f'eval_{split}.json'}"
        )


@task(
    help={
        "model": "an export directory (invoke export), or any SOURCE invoke export takes",
        "images": "an image, a directory of images, or several of them separated by commas",
        "out": "new (or empty) directory for NAME.png per image, results.json and images.json",
        "score_thr": "draw and report detections with at least this score (default 0.3)",
        "master": "Determined master URL when MODEL is a checkpoint UUID (default: $DET_MASTER)",
        "device": "torch device, e.g. cpu or cuda:1 (default: cuda:0 when there is a GPU, else cpu)",
    },
)
def predict(c, model, images, out, score_thr="0.3", master=None, device=None):
    """Draw a model's detections (boxes, masks, class names) on images; COCO results JSON too.

    Example: invoke predict exports/retinanet photos/,more/cat.jpg --out predictions
    """
    with user_errors():
        from trial.verbs.options import fraction
        from trial.verbs.predict import predict_images

        inputs = [item for item in images.split(",") if item]
        threshold = fraction(score_thr, "--score-thr")
        summary = predict_images(
            model, inputs, out, score_thr=threshold, master=master, device=device
        )
        print(
            f"{summary['detections']} detections on {summary['images']} images in {summary['out']}"
        )


# END export tasks


# --- ci (owner: ci/) ---------------------------------------------------------------------------
# BEGIN ci tasks
SMOKE_MODELS = ("retinanet", "maskrcnn", "gfl")  # ci/smoke.py trains each bundled experiment


@task(
    help={
        "models": "comma-separated models to train (default: retinanet,maskrcnn,gfl)",
        "iters": "training iterations per model",
        "expect_warm": "fail unless the first staging downloads nothing (a second smoke run)",
    },
)
def smoke(c, models="retinanet,maskrcnn,gfl", iters="4", expect_warm=False):
    """End-to-end smoke: GCS emulator (and S3) -> startup hook -> train + evaluate on a COCO subset."""
    import shlex
    import sys

    from trial.verbs.options import whole_number

    with user_errors():
        iters = whole_number(iters, "--iters", what="training iterations per model")
        unknown = [m for m in models.split(",") if m not in SMOKE_MODELS]
        if unknown or not models:
            raise Exit(
                f"error: --models {models!r}: choose from {', '.join(SMOKE_MODELS)} "
                "(comma-separated)", code=1,
            )  # fmt: skip
    script = Path(__file__).resolve().parent / "ci" / "smoke.py"  # invoke -r REPO from anywhere
    argv = [sys.executable, str(script), "--models", models, "--iters", str(iters)]
    if expect_warm:
        argv.append("--expect-warm")
    if c.run(shlex.join(argv), warn=True).failed:
        raise Exit("error: smoke failed (see above)", code=1)


# END ci tasks


# --- benchmarks ---------------------------------------------------------------------------------
BENCHES = {
    "trial": "bench.trial",
    "cluster": "bench.cluster",
    "staging": "bench.staging",
    "images": "bench.images",
    "resume": "bench.resume",
    "startup": "bench.startup",
}


@task(
    help={
        "what": f"which benchmark: {', '.join(BENCHES)}",
        "runs": "repetitions per side (median; default: the benchmark's own)",
        "scale": "startup only: size of the generated COCO set, a positive number (1 = "
        "train2017, the default; 0.05 for a quick check)",
    },
)
def bench(c, what, runs=None, scale=None):
    """Run a side-by-side benchmark and print ratios (results go into docs/benchmarks.md).

    Each benchmark module exposes ``main(runs: int) -> None``; runs=0 keeps its own default.
    """
    import importlib

    if what not in BENCHES:
        raise Exit(
            f"error: unknown benchmark {what!r}; choose one of: {', '.join(BENCHES)}", code=1
        )
    if scale is not None and what != "startup":
        raise Exit("error: --scale applies to the startup benchmark only", code=1)
    with user_errors():
        from trial.verbs.options import optional_whole_number, positive_number

        options = (
            {} if scale is None else {"scale": positive_number(scale, "--scale", example="0.05")}
        )
        count = optional_whole_number(runs, "--runs", what="repetitions per side") or 0
        importlib.import_module(BENCHES[what]).main(runs=count, **options)


# --- a local Determined cluster (owner: devcluster/) ----------------------------------------------
@task(
    positional=["action"],
    help={
        "action": "up | down | status | build (only build master and agent)",
        "agents": "up: number of agents (default 1)",
        "slots": "up: CPU slots per agent (default 2)",
        "master_port": "up: the master's port on 127.0.0.1 (default 8080)",
        "db_port": "up: PostgreSQL's port on 127.0.0.1 (default 5433)",
        "state_dir": "where the cluster lives (default $MMDET_DET_CLUSTER_DIR, else "
        "/var/lib/mmdet-determined/cluster as root, ~/.local/state/mmdet-determined/cluster)",
    },
)
def cluster(c, action, agents="1", slots="2", master_port="8080", db_port="5433", state_dir=None):
    """A real Determined 0.38.1 cluster on this machine: PostgreSQL, the master, CPU agents on podman.

    `up` builds master and agent from Determined's Go module the first time (cached), starts
    everything, waits for the agents and prints DET_MASTER/DET_USER/DET_PASS as shell exports;
    it is idempotent. `status` prints the same exports while the cluster is up (exit 1 when not).
    `down` stops every process it started, removes its containers, database and state.
    """
    with user_errors():
        from devcluster.cli import run
        from trial.verbs.options import whole_number

        numbers = {
            name: whole_number(value, f"--{name.replace('_', '-')}", maximum=maximum)
            for name, value, maximum in (("agents", agents, None), ("slots", slots, None),
                                         ("master_port", master_port, 65535),
                                         ("db_port", db_port, 65535))
        }  # fmt: skip
        code = run(action, state_dir=state_dir, **numbers)
    if code:
        raise Exit(code=code)
