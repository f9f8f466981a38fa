"""The GitHub workflow lints clean and calls the same ci/ scripts that .ci/run runs."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from common import REPO_ROOT as REPO

WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"


def stages_known_to_test_sh() -> set[str]:
    text = (REPO / "ci" / "test.sh").read_text()
    return set(re.findall(r"^\s+([\w-]+)\) stage ", text, flags=re.M))


def test_dot_ci_run_calls_the_readme_test_command():
    assert "bash ci/test.sh" in (REPO / ".ci" / "run").read_text()
    assert "bash ci/test.sh" in (REPO / "README.md").read_text()


def test_workflow_jobs_run_ci_test_sh_stages():
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    used = set()
    for name in ("lint", "unit", "integration", "smoke", "cluster"):
        runs = [s["run"] for s in jobs[name]["steps"] if "run" in s]
        calls = [r for r in runs if "ci/test.sh" in r]
        assert calls, f"job {name} does not call ci/test.sh"
        used |= {w for call in calls for w in call.split("ci/test.sh", 1)[1].split()}
    assert used == stages_known_to_test_sh()


def test_actionlint_passes_on_the_workflow():
    out = subprocess.run(["bash", "ci/actionlint.sh"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_actionlint_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-22.04\n    steps:\n      - run: echo ${{ nosuch.ctx }}\n"
    )
    out = subprocess.run(
        ["bash", "ci/actionlint.sh", str(broken)], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 1
    assert 'undefined variable "nosuch"' in out.stdout


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "ci").glob("*.sh")))
def test_ci_scripts_are_strict_bash(script):
    text = (REPO / "ci" / script).read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
