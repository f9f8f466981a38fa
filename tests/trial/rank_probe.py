"""Test driver: one rank of ``python -m trial --local ...`` plus a probe that records, for every
training step, the COCO image ids this rank trained on, and every validation prediction it made.

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


class RankProbe(Hook):
    """Appends to ``<dir>/image-ids-rank<R>.jsonl`` the image ids of every training step and to
    ``<dir>/predictions-rank<R>.jsonl`` every validation prediction (image id, boxes, scores)."""

    priority = "VERY_HIGH"

    def __init__(self, directory: Path, rank: int) -> None:
        self.ids = directory / f"image-ids-rank{rank}.jsonl"
        self.predictions = directory / f"predictions-rank{rank}.jsonl"

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        ids = [sample.img_id for sample in data_batch["data_samples"]]
        _append(self.ids, {"step": runner.iter + 1, "ids": ids})

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        for sample in outputs:
            pred = sample.pred_instances
            record = {"step": runner.iter, "img_id": sample.img_id}
            record.update(bboxes=pred.bboxes.tolist(), scores=pred.scores.tolist())
            _append(self.predictions, record)


def _append(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def main(argv: list[str]) -> int:
    import trial.runtime.train
    from trial.__main__ import main as trial_main

    work = Path(argv[argv.index("--work-dir") + 1])
    probe = RankProbe(work, int(os.environ["RANK"]))
    original = trial.runtime.train.train

    def train_with_probe(core_context, request, **kwargs):
        return original(core_context, replace(request, hooks=(probe, *request.hooks)), **kwargs)

    trial.runtime.train.train = train_with_probe
    return trial_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
