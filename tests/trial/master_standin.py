"""A stand-in for a Determined 0.38.1 master on loopback: NOT a Determined master.

No Determined master can run here. This HTTP server answers the REST calls that Determined's own
harness (``determined.core`` in the 0.38.1 wheel) makes from a trial container, and records every
call, so a test can run the real ``determined.launch.torch_distributed`` entrypoint and read what
the trial told the "master":

- ``POST /api/v1/runs/start``                                  (core.init: RunPrepareForReporting)
- ``POST /api/v1/trials/{id}/metrics``                         (training / validation metrics)
- ``POST /api/v1/trials/{id}/progress``                        (report_progress)
- ``POST /api/v1/checkpoints``                                 (ReportCheckpoint)
- ``GET  /api/v1/checkpoints/{uuid}``                          (checkpoint metadata)
- ``GET  /api/v1/allocations/{id}/signals/preemption``         (long poll; ``preempt()`` answers true)
- ``POST /api/v1/allocations/{id}/signals/ack_preemption``

Anything else is recorded and answered 404, so a test sees an unexpected call. It also writes the
cluster-info files Determined's container setup writes (``determined._info``'s own ``_to_file``).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "standin-session-token"
TOKEN_HEADER = "Grpc-Metadata-x-allocation-token"  # determined.common.api.TaskSession's header


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    token: str | None  # the task session token header, "Bearer <token>"
    status: int = 0  # what the stand-in answered
    client: str = ""  # the caller's IP address (which node called)


@dataclass
class MasterStandin:
    """Records calls; preempts when ``preempt()`` is called or ``preempt_when(call)`` is true."""

    preempt_when: Any = None  # callable(Call) -> bool, checked on every recorded call
    calls: list[Call] = field(default_factory=list)
    host: str = "127.0.0.1"  # where it listens (the host side of a test network's bridge)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._preempt = threading.Event()
        self._checkpoints: dict[str, dict] = {}
        self._server = ThreadingHTTPServer((self.host, 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._server.server_address[1]}"

    def __enter__(self) -> MasterStandin:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._preempt.set()  # release pending long polls
        self._server.shutdown()
        self._server.server_close()

    def preempt(self) -> None:
        self._preempt.set()

    def reset(self) -> None:
        """Forget recorded calls and the preemption flag (a new allocation of the same trial)."""
        with self._lock:
            self.calls.clear()
        self._preempt.clear()

    def find(self, method: str, pattern: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method and re.fullmatch(pattern, c.path)]

    def metrics(self, group: str) -> list[tuple[int, dict]]:
        """(stepsCompleted, avgMetrics) of every metrics report of ``group``, in order."""
        reports = []
        for call in self.find("POST", r"/api/v1/trials/\d+/metrics"):
            if call.body.get("group") == group:
                trial_metrics = call.body["metrics"]  # v1TrialMetrics
                reports.append(
                    (trial_metrics["stepsCompleted"], trial_metrics["metrics"]["avgMetrics"])
                )
        return reports

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)
        if call.method == "POST" and call.path == "/api/v1/checkpoints":
            self._checkpoints[call.body["uuid"]] = call.body
        if self.preempt_when is not None and self.preempt_when(call):
            self._preempt.set()

    def _answer(self, call: Call) -> tuple[int, Any]:
        path = call.path
        if call.method == "GET" and re.fullmatch(
            r"/api/v1/allocations/[^/]+/signals/preemption", path
        ):
            timeout = float(call.query.get("timeout_seconds", ["0"])[0])
            return 200, {"preempt": self._preempt.wait(timeout)}
        if call.method == "GET" and path.startswith("/api/v1/checkpoints/"):
            uuid = path.rsplit("/", 1)[1]
            if uuid in self._checkpoints:
                return 200, {"checkpoint": self._checkpoints[uuid]}
            return 404, {"error": {"error": f"checkpoint {uuid} not found"}}
        known_posts = (
            r"/api/v1/runs/start",
            r"/api/v1/trials/\d+/metrics",
            r"/api/v1/trials/\d+/progress",
            r"/api/v1/checkpoints",
            r"/api/v1/allocations/[^/]+/signals/ack_preemption",
        )
        if call.method == "POST" and any(re.fullmatch(p, path) for p in known_posts):
            return 200, {}
        return 404, {"error": {"error": f"master stand-in does not serve {call.method} {path}"}}

    def write_cluster_info(
        self,
        info_dir: Path,
        *,
        experiment: dict,
        hparams: dict,
        slots: int,
        allocation_id: str,
        latest_checkpoint: str | None = None,
        steps_completed: int = 0,
        trial_id: int = 1,
        container_addrs: tuple[str, ...] = ("127.0.0.1",),
        container_rank: int = 0,
    ) -> None:
        """Write cluster.json, trial.json, rendezvous.json and resources.json into ``info_dir``,
        with Determined's own writers (what its container setup puts in /run/determined/info).
        ``slots`` per container; ``container_addrs``/``container_rank``: one container of many."""
        import determined as det
        from determined import _info

        info_dir.mkdir(parents=True, exist_ok=True)
        det.ClusterInfo(
            master_url=self.url,
            cluster_id="standin-cluster",
            agent_id="standin-agent",
            slot_ids=list(range(slots)),
            task_id=f"{trial_id}.standin-task",
            allocation_id=allocation_id,
            session_token=TOKEN,
            task_type="TRIAL",
            latest_checkpoint=latest_checkpoint,
        )._to_file(str(info_dir / "cluster.json"))
        det.TrialInfo(
            trial_id=trial_id,
            experiment_id=1,
            trial_seed=0,
            hparams=hparams,
            config=experiment,
            steps_completed=steps_completed,
            trial_run_id=1,
            debug=False,
            inter_node_network_interface=None,
        )._to_file(str(info_dir / "trial.json"))
        _info.RendezvousInfo(
            list(container_addrs), container_rank, [slots] * len(container_addrs)
        )._to_file(str(info_dir / "rendezvous.json"))
        _info.ResourcesInfo(gpu_uuids=[])._to_file(str(info_dir / "resources.json"))


def _handler(standin: MasterStandin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            call = Call(
                method=self.command,
                path=parts.path,
                query=parse_qs(parts.query),
                body=json.loads(raw) if raw else None,
                token=self.headers.get(TOKEN_HEADER),
                client=self.client_address[0],
            )
            standin._record(call)
            status, payload = standin._answer(call)
            call.status = status
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    return Handler
