"""--cluster: offline checks, --dry-run, the context directory, and submission through Determined's
API. No Determined master can run here: the tests named ``..._master_standin`` talk HTTP to a small
loopback stand-in that answers the two REST calls submission makes and records them."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from common import REPO_ROOT, free_port
from errors import ConfigError, TrainingError
from trial.verbs.cluster import plan_submission, submit

REGISTRY = "ghcr.io/acme"  # where `invoke build-image --registry ghcr.io/acme --push` put the image


def test_context_holds_the_trial_and_the_startup_hook_at_its_root(tmp_path):
    sub = plan_submission(
        "gfl",
        context_dir=tmp_path / "context",
        sets=["optim_wrapper.optimizer.lr=0.005"],
        registry=REGISTRY,
    )
    ctx = sub.context_dir
    assert (ctx / "startup-hook.sh").is_file()
    assert (ctx / "trial" / "__main__.py").is_file() and (ctx / "staging" / "__init__.py").is_file()
    assert (ctx / "errors.py").is_file() and (ctx / "common.py").is_file()
    assert (ctx / ".detignore").is_file()
    assert not list(ctx.rglob("__pycache__"))
    # test harnesses stay home, by folder; the benchmarks live outside the packages that travel
    assert not list(ctx.rglob("testing")) and not (ctx / "bench").exists()
    assert sum(f.stat().st_size for f in ctx.rglob("*") if f.is_file()) < 5 * 1024 * 1024
    assert sub.experiment["hyperparameters"]["optim_wrapper.optimizer.lr"] == 0.005
    assert sub.notices == []


def test_custom_config_travels_in_the_context(tmp_path):
    cfg = tmp_path / "mine.py"
    cfg.write_text("_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\n")
    sub = plan_submission(
        "retinanet", context_dir=tmp_path / "context", config=str(cfg), registry=REGISTRY
    )
    assert sub.experiment["hyperparameters"]["model"] == "configs/mine.py"
    assert (sub.context_dir / "configs" / "mine.py").read_text() == cfg.read_text()


def test_experiment_failing_the_038_rules_is_refused_before_submitting(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "entrypoint: python3 -m trial\n"
        "searcher: {name: single, metric: bbox_mAP}\nresources: {slots_per_trial: -1}\n"
    )
    with pytest.raises(ConfigError, match=rf"^{bad}: resources.slots_per_trial: "):
        plan_submission("retinanet", context_dir=tmp_path / "ctx", experiment_path=str(bad))


def test_dry_run_prints_the_experiment_and_the_context_and_submits_nothing(tmp_path):
    out = submit(
        "retinanet-asha", dry_run=True, master=f"http://127.0.0.1:{free_port()}", registry=REGISTRY
    )
    header, _, rest = out.partition("\n")
    assert header.startswith("# experiment (valid for Determined 0.38.1")
    text, _, listing = rest.partition("# context directory: ")
    assert yaml.safe_load(text)["searcher"]["time_metric"] == "batches"
    assert "startup-hook.sh" in listing and "trial/__main__.py" in listing
    assert " KiB (limit 5 MiB)" in listing.splitlines()[0]


def test_dry_run_names_the_deprecated_fields(tmp_path):
    old = yaml.safe_load(_bundled("retinanet").read_text())
    old["searcher"]["max_length"] = {"batches": 90000}
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(old))
    out = submit("retinanet", dry_run=True, experiment_path=str(path), registry=REGISTRY)
    assert out.splitlines()[0] == (
        f"notice: {path}: searcher.max_length is deprecated in Determined 0.38.1; "
        "set hyperparameters.max_iters instead"
    )


def test_unreachable_master_is_one_clear_line(tmp_path):
    port = free_port()
    with pytest.raises(
        TrainingError, match=rf"no Determined master reachable at http://127.0.0.1:{port}"
    ):
        submit("retinanet", master=f"http://127.0.0.1:{port}", registry=REGISTRY)


class MasterStandin(BaseHTTPRequestHandler):
    """Answers GET /info and POST /api/v1/experiments like a 0.38 master; records each call."""

    calls: list[dict]
    refuse: str | None

    def do_GET(self) -> None:
        self.calls.append({"method": "GET", "path": self.path})
        self._reply(200, {"version": "0.38.1", "cluster_id": "standin"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append(
            {
                "method": "POST",
                "path": self.path,
                "body": body,
                "auth": self.headers["Authorization"],
            }
        )
        if self.refuse:
            self._reply(
                400, {"error": {"code": 3, "reason": "InvalidArgument", "error": self.refuse}}
            )
        elif body.get("validateOnly"):
            self._reply(200, {"experiment": {}, "config": {}})
        else:
            self._reply(200, {"experiment": {"id": 42}, "config": {}, "warnings": []})

    def _reply(self, code: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def master_standin(monkeypatch, tmp_path) -> Iterator[type[MasterStandin]]:
    handler = type("Handler", (MasterStandin,), {"calls": [], "refuse": None})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # A token as a Determined task gets it: no login round trip, no token cache under $HOME.
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DET_USER", "alice")
    monkeypatch.setenv("DET_USER_TOKEN", "t0k3n")
    handler.url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


def test_submit_asks_the_master_to_validate_then_creates_master_standin(master_standin):
    out = submit("retinanet-asha", master=master_standin.url, registry=REGISTRY)
    assert out.splitlines()[-1] == (
        f"Created experiment 42: {master_standin.url}/det/experiments/42"
    )
    posts = [c for c in master_standin.calls if c["method"] == "POST"]
    assert [c["body"].get("validateOnly", False) for c in posts] == [True, False]
    assert all(c["path"] == "/api/v1/experiments" and c["auth"] == "Bearer t0k3n" for c in posts)
    sent = yaml.safe_load(posts[1]["body"]["config"])
    assert sent["searcher"]["max_time"] == 90000
    names = {f["path"] for f in posts[1]["body"]["modelDefinition"]}
    assert {"startup-hook.sh", "trial/__main__.py", "errors.py"} <= names


def test_submitting_prints_the_experiment_id_and_no_library_chatter_master_standin(
    master_standin, tmp_path
):
    """`invoke train --cluster` printed setuptools' pkg_resources warnings and Determined's
    "Preparing files to send to master..." (issue 29, C4)."""
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(REPO_ROOT), "train", "retinanet", "--cluster",
         "--master", master_standin.url, "--registry", REGISTRY],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines() == [
        f"Created experiment 42: {master_standin.url}/det/experiments/42"
    ]
    assert proc.stderr == ""


def test_the_masters_refusal_is_one_line_and_nothing_is_created_master_standin(master_standin):
    master_standin.refuse = (
        "the `adaptive_asha` searcher requires `max_time` and `time_metric` to be set"
    )
    with pytest.raises(ConfigError) as err:
        submit("retinanet", master=master_standin.url, registry=REGISTRY)
    assert str(err.value) == (
        f"the master at {master_standin.url} refused the experiment: {master_standin.refuse}"
    )
    posts = [c for c in master_standin.calls if c["method"] == "POST"]
    assert len(posts) == 1 and posts[0]["body"]["validateOnly"] is True


def _bundled(name: str):
    from trial.settings.hparams import EXPERIMENTS_DIR

    return EXPERIMENTS_DIR / f"{name}.yaml"
