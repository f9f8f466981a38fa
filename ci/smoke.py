"""``invoke smoke``: the whole path a user's pipeline takes, on a tiny COCO subset, on this machine.

A GCS emulator on loopback holds COCO in a bucket (../shared/coco-tiny when present, else the
built-in shapes set); hooks/startup-hook.sh stages a subset into a node cache exactly as on a
Determined node; retinanet, maskrcnn and gfl train a few iterations each from the staged data
(images read from gs:// through the cached backend) and evaluate. The emulator's bucket and the node
cache persist under $MMDET_DET_CACHE/smoke, so a second smoke must stage with zero downloads.
Then the same path from S3: moto's S3 server on loopback holds the same COCO in a bucket, the hook
stages it with data.source s3://..., and --s3-models train from it (images read from s3:// through
the cached backend). moto keeps buckets in memory; re-uploading the same bytes gives the same
ETags, so the node cache stays warm across smokes there too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, run as a script

from common import REPO_ROOT as REPO
from common import cache_root
from errors import ProjectError
from trial.testing.samples import describe_sample, real_coco_sample

BUCKET_URL = "gs://smoke-coco/coco2017"
S3_BUCKET_URL = "s3://smoke-coco/coco2017"
MODELS = ("retinanet", "maskrcnn", "gfl")
HPARAMS = ["image_scale=[160, 160]", "global_batch_size=2", "log_interval=2", "num_workers=0"]
SUMMARY = re.compile(r"staged (\d+) files .*: (\d+) downloaded, (\d+) cache hits")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    state = Path(args.state or cache_root() / "smoke")
    try:
        rows, downloads = _smoke(
            state, models=args.models.split(","), iters=args.iters, subset=args.subset
        )
        if args.s3_models:
            s3_rows, s3_downloads = _smoke_s3(
                state, models=args.s3_models.split(","), iters=args.iters, subset=args.subset
            )
            rows += s3_rows
            downloads = [a + b for a, b in zip(downloads, s3_downloads, strict=True)]
    except ProjectError as err:
        print(f"smoke: error: {err}", file=sys.stderr)
        return 1
    _print_table(rows, downloads)
    if args.expect_warm and downloads[0] != 0:
        print(
            f"smoke: expected a warm cache, but the first staging downloaded {downloads[0]} files",
            file=sys.stderr,
        )
        return 1
    return 0


def _smoke(
    state: Path, *, models: list[str], iters: int, subset: int
) -> tuple[list[dict], list[int]]:
    from staging.testing.gcs_emulator import running_emulator, upload_dir

    source = _source_dir(state)
    with running_emulator(storage_dir=state / "gcs"):
        marker = state / "gcs" / "uploaded"
        if not marker.exists():
            count = upload_dir(source, BUCKET_URL)
            marker.write_text(f"{count} files from {source}\n")
            print(f"smoke: uploaded {count} files from {source} to {BUCKET_URL}", flush=True)
        experiment = _experiment(state, subset=subset)
        downloads = [_run_startup_hook(experiment)]
        rows = [_train(model, experiment, state / "work" / model, iters=iters) for model in models]
        downloads.append(_run_startup_hook(experiment))  # every trial's restart on this node
    if downloads[1] != 0:
        raise ProjectError(
            f"the second staging downloaded {downloads[1]} files; the node cache missed"
        )
    return rows, downloads


def _smoke_s3(
    state: Path, *, models: list[str], iters: int, subset: int
) -> tuple[list[dict], list[int]]:
    """The S3 leg: moto's server on loopback, staged by the hook, trained from (s3:// images)."""
    from staging.testing.s3_emulator import running_s3, upload_dir

    source = _source_dir(state)
    with running_s3():
        count = upload_dir(source, S3_BUCKET_URL)
        print(f"smoke: uploaded {count} files from {source} to {S3_BUCKET_URL}", flush=True)
        experiment = _experiment(state, subset=subset, source=S3_BUCKET_URL, name="s3")
        downloads = [_run_startup_hook(experiment)]
        rows = [
            {**_train(model, experiment, state / "work-s3" / model, iters=iters),
             "model": f"{model} (s3)"}
            for model in models
        ]  # fmt: skip
        downloads.append(_run_startup_hook(experiment))
    if downloads[1] != 0:
        raise ProjectError(
            f"the second S3 staging downloaded {downloads[1]} files; the node cache missed"
        )
    return rows, downloads


def _source_dir(state: Path) -> Path:
    from trial.runtime.shapes import make_shapes_coco

    source = real_coco_sample() or make_shapes_coco(state / "shapes")
    print(f"smoke: COCO sample: {describe_sample(source)}", flush=True)
    return source


def _experiment(state: Path, *, subset: int, source: str = BUCKET_URL, name: str = "") -> Path:
    experiment = yaml.safe_load((REPO / "experiments" / "retinanet.yaml").read_text())
    experiment["data"] = {
        "source": source,
        "cache": str(state / "node-cache"),
        "dest": str(state / (f"dest-{name}" if name else "dest")),
        "splits": ["train", "val"],
        "with_images": False,
        "subset": subset,
        "seed": 0,
        "workers": 8,
    }
    path = state / (f"experiment-{name}.yaml" if name else "experiment.yaml")
    path.write_text(yaml.safe_dump(experiment, sort_keys=False))
    return path


def _run_startup_hook(experiment: Path) -> int:
    env = {
        **os.environ,
        "MMDET_DET_EXPERIMENT_CONFIG": str(experiment),
        "MMDET_PYTHON": sys.executable,
    }
    proc = subprocess.run(
        ["bash", str(REPO / "hooks" / "startup-hook.sh")], env=env, capture_output=True, text=True
    )
    sys.stderr.write(proc.stderr)
    print(proc.stdout, end="", flush=True)
    if proc.returncode != 0:
        raise ProjectError(f"hooks/startup-hook.sh exited {proc.returncode}")
    found = SUMMARY.search(proc.stdout + proc.stderr)
    if not found:
        raise ProjectError("hooks/startup-hook.sh printed no staging summary")
    return int(found.group(2))


def _train(model: str, experiment: Path, work: Path, *, iters: int) -> dict:
    from trial.runtime.metrics_log import read_metrics_log
    from trial.verbs.local import trial_command, trial_env

    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    command = trial_command(
        experiment,
        work,
        data="experiment",
        max_iters=iters,
        hparams=[f"model={model}", "pretrained=false", *HPARAMS],
        verbose=True,  # the whole log into trial.log (its tail is shown on a failure)
    )
    log = work / "trial.log"
    print(f"smoke: training {model} for {iters} iterations (log: {log})", flush=True)
    start = time.monotonic()
    with log.open("w") as out:
        code = subprocess.run(
            command,
            cwd=work,
            env=trial_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        ).returncode
    wall = time.monotonic() - start
    if code != 0:
        sys.stderr.write("".join(log.read_text().splitlines(keepends=True)[-30:]))
        raise ProjectError(f"{model}: trial exited {code}; full log in {log}")
    result = json.loads((work / "result.json").read_text())
    train = [
        r["metrics"] for r in read_metrics_log(work / "metrics.jsonl") if r["group"] == "training"
    ]
    val = result["validation"]
    if "bbox_mAP" not in val or (model == "maskrcnn" and "segm_mAP" not in val):
        raise ProjectError(f"{model}: validation metrics missing, got {sorted(val)}")
    return {
        "model": model,
        "iters": result["steps"],
        "wall": wall,
        "s_per_iter": statistics.median(m["time"] for m in train) if train else float("nan"),
        "bbox_mAP": val["bbox_mAP"],
        "segm_mAP": val.get("segm_mAP"),
    }


def _print_table(rows: list[dict], downloads: list[int]) -> None:
    print(
        f"\n{'model':15s} {'iters':>5s} {'s/iter':>7s} {'bbox mAP':>9s} {'segm mAP':>9s} {'wall s':>7s}"
    )
    for r in rows:
        segm = f"{r['segm_mAP']:.4f}" if r["segm_mAP"] is not None else "-"
        print(
            f"{r['model']:15s} {r['iters']:5d} {r['s_per_iter']:7.2f} {r['bbox_mAP']:9.4f} {segm:>9s} {r['wall']:7.1f}"
        )
    print(f"staging downloads: first {downloads[0]}, after training {downloads[1]}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="invoke smoke", description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument(
        "--s3-models", default="retinanet", help="models trained from the S3 bucket ('' = none)"
    )
    p.add_argument("--iters", type=int, default=4)
    p.add_argument("--subset", type=int, default=8, help="images per split staged from the bucket")
    p.add_argument("--state", help="where the bucket, node cache and runs persist")
    p.add_argument(
        "--expect-warm", action="store_true", help="fail unless the first staging downloads nothing"
    )
    return p


if __name__ == "__main__":
    sys.exit(main())
