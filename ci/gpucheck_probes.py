"""The measuring steps of ci/gpucheck.py: machine facts, mmcv's ops on CUDA vs CPU, trial vs plain.

Each returns one JSON-ready dict (printed as the step's last line). ``ops`` raises SystemExit when
an answer differs, so the step fails and the training steps are skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def env(_args) -> dict:
    """Python, torch, CUDA, the GPU and its driver, nvcc, cores."""
    import torch

    facts = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "nproc": os.cpu_count(),
    }
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name()
        facts["capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
    if shutil.which("nvidia-smi"):
        q = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        facts["nvidia_smi"] = subprocess.run(q, capture_output=True, text=True).stdout.strip()
    nvcc = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"
    if nvcc.exists():
        facts["nvcc"] = (
            subprocess.run([nvcc, "--version"], capture_output=True, text=True)
            .stdout.strip()
            .splitlines()[-1]
        )
    return facts


def _inputs(torch):
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 200
    wh = torch.rand(300, 2, generator=g) * 60 + 2
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(300, generator=g)
    idxs = torch.randint(0, 5, (300,), generator=g)
    feat = torch.rand(2, 16, 64, 64, generator=g)
    rois = torch.cat([torch.randint(0, 2, (64, 1), generator=g).float(), boxes[:64] / 4], dim=1)
    logits = torch.randn(512, 80, generator=g)
    labels = torch.randint(0, 81, (512,), generator=g)  # 80 = background
    return boxes, scores, idxs, feat, rois, logits, labels


def _focal_reference(torch, logits, labels, gamma=2.0, alpha=0.25):
    """sigmoid focal loss in plain torch (mmdet's py_sigmoid_focal_loss formula), summed."""
    target = torch.nn.functional.one_hot(labels, 81)[:, :80].to(logits.dtype)
    p = logits.sigmoid()
    pt = (1 - p) * target + p * (1 - target)
    weight = (alpha * target + (1 - alpha) * (1 - target)) * pt.pow(gamma)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (bce * weight).sum()


def ops(args) -> dict:
    """nms, batched_nms, RoIAlign and sigmoid focal loss on ``--device`` against CPU; bf16 probe."""
    import torch
    from mmcv.ops import RoIAlign, batched_nms, nms, sigmoid_focal_loss

    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        raise SystemExit("ops: no CUDA device visible")
    boxes, scores, idxs, feat, rois, logits, labels = _inputs(torch)
    roi_align = RoIAlign((7, 7), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    checks = {}
    _, keep_cpu = nms(boxes, scores, 0.5)
    _, keep_dev = nms(boxes.to(dev), scores.to(dev), 0.5)
    checks["nms"] = {"ok": keep_cpu.tolist() == keep_dev.cpu().tolist(), "kept": len(keep_cpu)}
    cfg = dict(type="nms", iou_threshold=0.5)
    _, bk_cpu = batched_nms(boxes, scores, idxs, cfg)
    _, bk_dev = batched_nms(boxes.to(dev), scores.to(dev), idxs.to(dev), cfg)
    checks["batched_nms"] = {"ok": bk_cpu.tolist() == bk_dev.cpu().tolist(), "kept": len(bk_cpu)}
    ra_cpu = roi_align(feat, rois)
    ra_dev = roi_align(feat.to(dev), rois.to(dev)).cpu()
    diff = (ra_cpu - ra_dev).abs().max().item()
    checks["roi_align"] = {"ok": diff < 1e-4, "max_abs_diff": diff}
    ref = _focal_reference(torch, logits, labels)
    if dev == "cpu":
        checks["sigmoid_focal_loss"] = {
            "ok": True,
            "note": "mmcv has no CPU kernel (CUDA only); mmdet uses its torch formula on CPU",
        }
    else:
        x = logits.to(dev).requires_grad_()
        got = sigmoid_focal_loss(x, labels.to(dev), 2.0, 0.25, None, "sum")
        got.backward()
        xr = logits.clone().requires_grad_()
        _focal_reference(torch, xr, labels).backward()
        rel = abs(got.item() - ref.item()) / abs(ref.item())
        gdiff = (x.grad.cpu() - xr.grad).abs().max().item()
        checks["sigmoid_focal_loss"] = {
            "ok": rel < 1e-4 and gdiff < 1e-5,
            "rel_diff": rel,
            "grad_max_abs_diff": gdiff,
        }
    refused = _bf16(torch, dev, boxes, scores, idxs, feat, rois, logits, labels)
    result = {
        "device": dev,
        "checks": checks,
        "bf16_refused": sorted(refused),
        "bf16_errors": refused,
    }
    if dev == "cuda":
        result["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(result))
    bad = [name for name, c in checks.items() if not c["ok"]]
    if bad:
        raise SystemExit(f"ops: {', '.join(bad)} on {dev} disagree with CPU")
    return result


def _bf16(torch, dev, boxes, scores, idxs, feat, rois, logits, labels) -> dict[str, str]:
    """Which ops refuse bfloat16 inputs on ``dev`` (name -> first line of the error)."""
    from mmcv.ops import RoIAlign, batched_nms, nms, sigmoid_focal_loss

    bf = torch.bfloat16
    runs = {
        "nms": lambda: nms(boxes.to(dev, bf), scores.to(dev, bf), 0.5),
        "batched_nms": lambda: batched_nms(
            boxes.to(dev, bf), scores.to(dev, bf), idxs.to(dev), dict(type="nms", iou_threshold=0.5)
        ),
        "roi_align": lambda: RoIAlign((7, 7), 1.0, 2, aligned=True)(
            feat.to(dev, bf), rois.to(dev, bf)
        ),
        "sigmoid_focal_loss": lambda: sigmoid_focal_loss(
            logits.to(dev, bf), labels.to(dev), 2.0, 0.25, None, "sum"
        ),
    }
    refused = {}
    for name, run in runs.items():
        try:
            run()
        except Exception as err:
            refused[name] = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    return refused


def bench(args) -> dict:
    """`invoke bench trial`'s 1-rank lines: RetinaNet s/iter, plain mmengine vs the trial in
    interleaved fresh processes, and the milliseconds the trial adds per step (tiny model); read
    from the benchmark's own JSON result lines (bench/harness.py)."""
    args.work.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "bench.trial", "--runs", str(args.runs), "--layouts", "1 rank"]
    env = {**os.environ, "TMPDIR": str(args.work)}  # the runs' work dirs stay in the check's work
    # Its lines go on to the step's log as they come (a step killed at its limit still shows
    # how far the runs got); its stdout is also kept for the result lines.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        sys.stderr.write(line)
        sys.stderr.flush()
        lines.append(line)
    if proc.wait() != 0:
        raise SystemExit(
            f"bench: python -m bench.trial exited {proc.returncode} (its log is above)"
        )
    return bench_summary("".join(lines))


def bench_summary(stdout: str) -> dict:
    """The step's record from bench.trial's 1-rank result lines (SystemExit when one is missing)."""
    from bench.harness import results

    found = {r["result"]: r for r in results(stdout, bench="trial") if r["layout"] == "1 rank"}
    if set(found) != {"retinanet", "overhead"}:
        raise SystemExit(f"bench: no 1-rank result lines in its output (found {sorted(found)})")
    retinanet, overhead = found["retinanet"], found["overhead"]
    return {
        "plain_s_per_iter": retinanet["plain_s_per_iter"],
        "trial_s_per_iter": retinanet["trial_s_per_iter"],
        "ratio_trial_over_plain": retinanet["ratio"],
        "trial_added_ms_per_step": overhead["added_ms_per_step"],
        "runs": retinanet["runs"],
    }


PROBES = {"env": env, "ops": ops, "bench": bench}
