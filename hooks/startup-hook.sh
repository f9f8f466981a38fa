#!/usr/bin/env bash
# Determined startup hook: stage the experiment's `data:` section into the node cache before the
# workload starts, with the same code as `invoke stage-coco` (python -m staging).
#
# Determined runs `startup-hook.sh` from the root of the uploaded context directory before every
# workload, uncached; the node cache makes every run after the first a metadata check.
#
# Where the experiment config comes from (first match wins):
#   1. $MMDET_DET_EXPERIMENT_CONFIG: an explicit experiment YAML/JSON path (tests, local use);
#   2. $DET_EXPERIMENT_CONFIG: the experiment config as JSON, which Determined sets in trial
#      containers (determined._info.TrialInfo._from_env reads it);
#   3. /run/determined/info/trial.json (key "config"), which Determined writes early in every
#      trial container (TrialInfo._to_file; DEFAULT_TRIAL_INFO_PATH). Override with
#      $MMDET_DET_TRIAL_INFO.
# No config, or a config without a data: section: nothing to stage, exit 0. A data: section is
# checked whole (an unknown field such as `sourc:` fails the workload in one line).
#
# When the experiment stages pretrained weights (data.weights_mirror / data.stage_weights), the
# trial names them: `python -m trial.settings.pretrained` writes the list for the trial's hyperparameters,
# and staging gets it as data (--checkpoints); staging itself imports nothing from the trial.
#
# The interpreter is $MMDET_PYTHON, else `python3` (what the trial's entrypoint runs). The staging
# package is found through the context directory (PYTHONPATH), so it need not be pip-installed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -d "$here/staging" ]]; then
    context_dir="$here"          # the hook sits at the root of the context directory
elif [[ -d "$here/../staging" ]]; then
    context_dir="$(cd "$here/.." && pwd)"  # the hook sits in hooks/ of a checkout
else
    context_dir="$PWD"
fi
export PYTHONPATH="$context_dir${PYTHONPATH:+:$PYTHONPATH}"
python="${MMDET_PYTHON:-python3}"
trial_info="${MMDET_DET_TRIAL_INFO:-/run/determined/info/trial.json}"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

stage() {
    echo "startup-hook: staging data from ${1/#env:/\$}" >&2
    local args=(--if-configured --experiment-config "$1")
    if [[ -d "$context_dir/trial" ]]; then
        "$python" -m trial.settings.pretrained --experiment-config "$1" --out "$scratch/checkpoints.json"
        if [[ -s "$scratch/checkpoints.json" ]]; then
            args+=(--checkpoints "$scratch/checkpoints.json")
        fi
    fi
    "$python" -m staging "${args[@]}"
}

if [[ -n "${MMDET_DET_EXPERIMENT_CONFIG:-}" ]]; then
    stage "$MMDET_DET_EXPERIMENT_CONFIG"
elif [[ -n "${DET_EXPERIMENT_CONFIG:-}" ]]; then
    stage "env:DET_EXPERIMENT_CONFIG"  # read from the variable: errors name it, not a temp file
elif [[ -f "$trial_info" ]]; then
    stage "$trial_info"
else
    echo "startup-hook: no experiment config found; nothing to stage" >&2
fi
