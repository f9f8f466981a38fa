"""Smoke checks that run inside an image: at build time (last RUN step) and by `invoke test-image`.

Reads what the image must contain from image.json beside this file and checks: versions, mmcv's
compiled ops (a CPU nms + RoIAlign with known answers), CUDA compile flags on CUDA variants, a CUDA
op when a GPU is visible, NCCL and no nvcc/CUDA headers on CUDA variants, determined/pycocotools/mmdet imports, the pip constraints, `pip check`.
Prints one line per check; exits 1 on the first failure. Standard library + the image's stack only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# mmcv/mmengine declare opencv-python; the image ships opencv-python-headless (same cv2, no libGL).
ALLOWED_PIP_CHECK = re.compile(r"requires opencv-python(>=[\d.]+)?, which is not installed")


def ok(msg: str) -> None:
    print(f"[smoke] ok   {msg}", flush=True)


def fail(msg: str) -> None:
    print(f"[smoke] FAIL {msg}", flush=True)
    sys.exit(1)


def check_versions(want: dict) -> None:
    import determined
    import mmcv
    import mmdet
    import mmengine
    import torch

    have = {
        "python": "{}.{}".format(*sys.version_info[:2]),
        "torch": "torch==" + torch.__version__,
        "mmcv": mmcv.__version__,
        "mmdet": mmdet.__version__,
        "mmengine": mmengine.__version__,
        "determined": determined.__version__,
    }
    # torch.__version__ carries the CUDA label even where the pin cannot (PyPI's torch==2.14.1).
    want = {**want, "torch": "torch==" + want.get("torch_version", want["torch"][len("torch==") :])}
    for name, value in have.items():
        if value != want[name]:
            fail(f"{name} is {value}, the image was built for {want[name]}")
    ok("versions " + ", ".join(f"{k} {v}" for k, v in have.items()))


def check_cpu_ops() -> None:
    import torch
    from mmcv.ops import RoIAlign, nms

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, keep = nms(boxes, scores, iou_threshold=0.5)
    if keep.tolist() != [0, 2]:
        fail(f"mmcv.ops.nms on CPU kept {keep.tolist()}, expected [0, 2]")
    feat = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    rois = torch.tensor([[0, 0, 0, 4, 4]], dtype=torch.float32)
    out = RoIAlign((1, 1), spatial_scale=1.0, sampling_ratio=2, aligned=False)(feat, rois)
    if abs(out.item() - 10.0) > 1e-4:
        fail(f"mmcv.ops.RoIAlign on CPU gave {out.item()}, expected 10.0")
    ok("mmcv.ops compiled: nms and RoIAlign on CPU")


def check_cuda(want: dict, *, build_time: bool) -> None:
    import torch
    from mmcv.ops import get_compiling_cuda_version, nms

    if want["cuda"] == "cpu":
        ok("cpu variant: no CUDA expected")
        return
    compiled = get_compiling_cuda_version()
    if compiled != want["cuda"] or not str(torch.version.cuda or "").startswith(want["cuda"]):
        fail(
            f"mmcv compiled with CUDA {compiled}, torch with {torch.version.cuda}; "
            f"want {want['cuda']}"
        )
    ok(f"mmcv and torch compiled with CUDA {compiled}")
    if build_time or not torch.cuda.is_available():
        ok("no GPU visible: CUDA op skipped")
        return
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10]], dtype=torch.float32, device="cuda")
    _, keep = nms(boxes, torch.tensor([0.9, 0.8], device="cuda"), iou_threshold=0.5)
    if keep.tolist() != [0]:
        fail(f"mmcv.ops.nms on {torch.cuda.get_device_name()} kept {keep.tolist()}, expected [0]")
    ok(f"mmcv.ops.nms on {torch.cuda.get_device_name()}")


def check_cuda_runtime(want: dict) -> None:
    """CUDA variants: NCCL ships (multi-GPU), and no compiler or toolkit headers do."""
    import sysconfig

    import torch

    if want["cuda"] == "cpu":
        return
    if not torch.distributed.is_nccl_available():
        fail("torch.distributed has no NCCL backend")
    ok(f"NCCL {'.'.join(map(str, torch.cuda.nccl.version()))} (torch.distributed nccl backend)")
    site = Path(sysconfig.get_paths()["purelib"])
    nvcc = [str(p) for p in site.glob("nvidia/*/bin/nvcc")]
    nvcc += [d + "/nvcc" for d in os.environ["PATH"].split(":") if os.path.isfile(d + "/nvcc")]
    headers = sorted(str(p) for p in site.glob("nvidia/*/include/*.h"))
    if nvcc or headers:
        fail(f"the runtime image carries build tools: {(nvcc + headers)[:3]}")
    ok("no nvcc and no CUDA toolkit headers in the runtime image")


def check_imports() -> None:
    import boto3  # noqa: F401
    import determined.core  # noqa: F401
    import jsonschema  # noqa: F401
    import mmdet.models  # noqa: F401
    import pycocotools.coco  # noqa: F401
    from google.cloud import storage  # noqa: F401

    ok("determined.core, mmdet.models, pycocotools, google.cloud.storage, boto3, jsonschema import")


def check_mmdet_config() -> None:
    """What the trial does first: load a bundled mmdet config (mmengine needs pkg_resources)."""
    from mmengine.hub import get_config

    cfg = get_config("mmdet::retinanet/retinanet_r50_fpn_1x_coco.py")
    if cfg.model.type != "RetinaNet":
        fail(f"mmdet::retinanet config loaded a {cfg.model.type}")
    ok("mmdet::retinanet/retinanet_r50_fpn_1x_coco.py loads (mmengine.hub.get_config)")


def check_pip() -> None:
    constraint = os.environ.get("PIP_CONSTRAINT") or str(HERE / "constraints.txt")
    lines = Path(constraint).read_text().split()
    if not any(line.startswith("torch==") for line in lines) or not any(
        line.startswith("mmcv==") for line in lines
    ):
        fail(f"{constraint} must pin torch and mmcv, has {lines}")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, check=False
    )
    problems = [
        line
        for line in proc.stdout.splitlines()
        if line.strip()
        and "No broken requirements" not in line
        and not ALLOWED_PIP_CHECK.search(line)
    ]
    if problems:
        fail(f"pip check: {problems[0]}")
    ok(f"pip check clean; constraints {' '.join(lines)}")


def main(argv: list[str]) -> None:
    build_time = "--build-time" in argv
    want = json.loads((HERE / "image.json").read_text())
    check_versions(want)
    check_cpu_ops()
    check_cuda(want, build_time=build_time)
    check_cuda_runtime(want)
    check_imports()
    check_mmdet_config()
    check_pip()
    print(f"[smoke] passed: variant {want['variant']}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
