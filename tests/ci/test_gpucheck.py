"""The GPU check's plan (ci/gpucheck.py): every step has its own limit under the device's 10 minutes,
a failed step skips what needs it and nothing else, and the carry folder holds what the machine lacks."""

from __future__ import annotations

import sys

import pytest

from common import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "ci"))
import gpucheck
import gpucheck_carry

DEVICE_COMMAND_LIMIT_S = 600
PHASE_BUDGET_S = 600  # each phase is one device command


def setup(tmp_path, *, rehearsal=False):
    return gpucheck.Setup(tmp_path / "carry", tmp_path / "work", tmp_path / "out", rehearsal)


def test_gpu_plan_covers_the_issue_and_fits_the_device(tmp_path):
    steps = gpucheck.plan_steps(setup(tmp_path))
    names = [s.name for s in steps]
    assert names[:5] == ["install", "env", "cxx20", "mmcv", "ops"]
    for model in ("retinanet", "maskrcnn", "gfl"):
        assert f"train-{model}-fp32" in names and f"train-{model}-fp16" in names
    assert "bench" in names and not any(n.endswith("bf16") for n in names)
    assert all(s.timeout_s < DEVICE_COMMAND_LIMIT_S for s in steps)
    mmcv = next(s for s in steps if s.name == "mmcv")
    env = dict(mmcv.env)
    assert env["TORCH_CUDA_ARCH_LIST"] == "9.0" and env["MMCV_SDIST"].endswith("mmcv-2.1.0.tar.gz")
    assert "mmcv-compile" in mmcv.argv
    fp16 = next(s for s in steps if s.name == "train-gfl-fp16")
    assert "optim_wrapper.type=AmpOptimWrapper" in fp16.argv and "30" in fp16.argv
    assert fp16.argv[1:5] == ("-m", "invoke", "train", "gfl")  # the product verb, its local profile
    assert "--fresh" in fp16.argv  # a rerun of the phase replaces the last run in its work dir


def test_bf16_training_only_when_no_op_refused(tmp_path):
    names = [s.name for s in gpucheck.plan_steps(setup(tmp_path), bf16=True)]
    assert {"train-retinanet-bf16", "train-maskrcnn-bf16", "train-gfl-bf16"} <= set(names)


def test_phases_split_the_plan_into_two_device_commands(tmp_path):
    build = gpucheck.plan_steps(setup(tmp_path), phases=(gpucheck.BUILD,))
    train = gpucheck.plan_steps(setup(tmp_path), phases=(gpucheck.TRAIN,))
    assert {s.phase for s in build} == {"build"} and {s.phase for s in train} == {"train"}
    # What each phase may take at most, step limits added: the budget of one command is 10 min;
    # the build phase's worst case is the compile's limit plus seconds for the rest.
    assert next(s.timeout_s for s in build if s.name == "mmcv") <= 570


def test_rehearsal_uses_cpu_fewer_iterations_and_the_cached_wheel(tmp_path):
    steps = {s.name: s for s in gpucheck.plan_steps(setup(tmp_path, rehearsal=True))}
    assert "mmcv-cached" in steps["mmcv"].argv
    assert steps["ops"].argv[-1] == "cpu"
    assert "2" in steps["train-retinanet-fp32"].argv
    assert steps["install"].needs == ("machine-base",)  # the machine's packages, emulated here
    assert next(iter(steps)) == "machine-base"


def test_a_failed_step_skips_its_dependents_only(tmp_path):
    py = sys.executable
    steps = [
        gpucheck.Step("a", "build", (py, "-c", "raise SystemExit(3)"), 30),
        gpucheck.Step("b", "build", (py, "-c", "print('{\"x\": 1}')"), 30),
        gpucheck.Step("c", "build", (py, "-c", "pass"), 30, ("a",)),
        gpucheck.Step("d", "build", (py, "-c", "import time; time.sleep(5)"), 1),
        gpucheck.Step("e", "build", (py, "-c", "pass"), 30, ("b",)),
    ]
    logged: list[str] = []
    out = gpucheck.run_steps(steps, log=logged.append, results={})
    assert {k: v.status for k, v in out.items()} == {
        "a": "failed",
        "b": "ok",
        "c": "skipped",
        "d": "timeout",
        "e": "ok",
    }
    assert out["a"].detail.startswith("exit 3") and out["b"].data == {"x": 1}


def test_carried_requirements_leave_out_what_the_machine_has():
    reqs = gpucheck_carry.project_requirements()
    names = {gpucheck_carry.requirement_name(r) for r in reqs}
    assert {"mmdet", "mmengine", "determined", "pycocotools", "setuptools"} <= names
    assert not names & {"mmcv", "torch", "matplotlib", "tensorboard", "numpy"}
    assert "setuptools==80.9.0" in reqs  # mmcv's setup.py imports pkg_resources


@pytest.mark.parametrize(("python", "inside"), [("3.12", True), ("3.11", False)])
def test_only_the_gpu_machines_wheels_are_carried(tmp_path, python, inside):
    carry = tmp_path / "gpu-carry"
    assert (gpucheck_carry.wheels_dir(carry, python).parent == carry) is inside


def test_a_step_past_its_limit_is_killed_with_its_children(tmp_path):
    marker = tmp_path / "child-survived"
    child = f"import time; time.sleep(3); open({str(marker)!r}, 'w').write('x')"
    step = gpucheck.Step(
        "slow", "build", ("bash", "-c", f'{sys.executable} -c "{child}" & wait'), 1
    )
    out = gpucheck.run_steps([step], log=lambda _t: None, results={})
    assert out["slow"].status == "timeout"
    import time

    time.sleep(4)
    assert not marker.exists()  # the grandchild died with the step (a compile's ninja would)


def test_a_failure_is_reported_by_its_exception_not_the_wrappers_last_line(tmp_path):
    script = (
        "import sys; print('AssertionError: AmpOptimWrapper needs a GPU'); sys.exit('error: x')"
    )
    step = gpucheck.Step("t", "train", (sys.executable, "-c", script), 30)
    out = gpucheck.run_steps([step], log=lambda _t: None, results={})
    assert out["t"].detail == "exit 1: AssertionError: AmpOptimWrapper needs a GPU"
