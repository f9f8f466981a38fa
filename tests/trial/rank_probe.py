"""Test driver: one rank of ``python -m trial --local ...`` plus a probe that records, for every
training step, the COCO image ids this rank trained on (``<work-dir>/image-ids-rank<R>.jsonl``).

Run it under torch's launcher exactly like the trial's own ranks:
``python -m torch.distributed.run --standalone --nproc-per-node 2 tests/trial/rank_probe.py
--local ... --nproc 2``. Everything but the probe is the trial's code path (``trial.__main__``).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from mmengine.hooks import Hook


class ImageIdProbe(Hook):
    priority = "VERY_HIGH"

    def __init__(self, path: Path) -> None:
        self.path = path

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        ids = [sample.img_id for sample in data_batch["data_samples"]]
        with self.path.open("a") as f:
            f.write(json.dumps({"step": runner.iter + 1, "ids": ids}) + "\n")


def main(argv: list[str]) -> int:
    import trial.run
    from trial.__main__ import main as trial_main

    work = Path(argv[argv.index("--work-dir") + 1])
    probe = ImageIdProbe(work / f"image-ids-rank{os.environ['RANK']}.jsonl")
    original = trial.run.train

    def train_with_probe(core_context, request, **kwargs):
        return original(core_context, replace(request, hooks=(probe, *request.hooks)), **kwargs)

    trial.run.train = train_with_probe
    return trial_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
