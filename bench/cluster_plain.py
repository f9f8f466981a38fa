"""The plain side of ``invoke bench cluster``, run inside the project's image under podman:
``Runner.from_cfg(cfg).train()`` of the very config the trial builds from the same hyperparameters
(trial_settings + build_config), without anything Determined. mmengine logs every iteration.

    python3 -m bench.cluster_plain DATA_ROOT HPARAMS_YAML
"""

from __future__ import annotations

import sys

import yaml


def main(data_root: str, hparams_yaml: str) -> None:
    from mmengine.runner import Runner

    from trial.runtime.data import coco_dir_paths
    from trial.settings.config import build_config, load_base_config, resolve_base
    from trial.settings.hparams import model_ref, trial_settings

    hparams = yaml.safe_load(hparams_yaml)
    settings = trial_settings({"hyperparameters": hparams}, hparams,
                              data=coco_dir_paths(data_root), work_dir="/tmp/plain")  # fmt: skip
    cfg = build_config(load_base_config(resolve_base(model_ref(hparams))), settings)
    cfg["val_cfg"] = cfg["val_dataloader"] = cfg["val_evaluator"] = None  # training only
    cfg["test_cfg"] = cfg["test_dataloader"] = cfg["test_evaluator"] = None
    Runner.from_cfg(cfg).train()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
