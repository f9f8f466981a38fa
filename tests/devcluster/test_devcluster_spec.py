"""The pure parts of the local cluster: options, the master's configuration, the agent's command
line, the state file, and the module proxy overlay (served over real HTTP on loopback)."""

from __future__ import annotations

import http.server
import io
import json
import stat
import threading
import zipfile
from pathlib import Path

import pytest

from devcluster import binaries
from devcluster.cluster import State
from devcluster.spec import ClusterSpec, agent_argv, master_config
from errors import ConfigError


def test_master_config_is_a_single_machine_cluster_that_never_touches_a_bridge(tmp_path):
    spec = ClusterSpec(tmp_path, master_port=18080, db_port=15433, agents=2, slots=3)
    config = master_config(spec, db_password="db-pw", admin_password="Admin-1", root=tmp_path / "r")
    assert config["port"] == 18080 and config["root"] == str(tmp_path / "r")
    assert config["db"] == {"host": "127.0.0.1", "port": 15433, "user": "determined",
                            "password": "db-pw", "name": "determined"}  # fmt: skip
    # created before an agent registers: wait, do not fail ("slots requested exceeds capacity")
    assert config["launch_error"] is False
    assert config["telemetry"] == {"enabled": False}
    assert config["security"]["initial_user_password"] == "Admin-1"
    assert config["task_container_defaults"]["network_mode"] == "host"
    assert config["checkpoint_storage"]["host_path"] == str(tmp_path / "checkpoints")
    assert config["resource_manager"]["type"] == "agent"


def test_agent_argv_gives_cpu_slots_and_the_masters_address(tmp_path):
    spec = ClusterSpec(tmp_path, master_port=18080, agents=2, slots=3)
    argv = agent_argv(spec, 1, Path("/bin/determined-agent"))
    assert argv[:2] == ["/bin/determined-agent", "run"]
    assert "--agent-id=agent-2" in argv and "--artificial-slots=3" in argv
    assert "--master-port=18080" in argv and "--container-master-host=127.0.0.1" in argv


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(agents=0), "--agents 0: must be 1..16"),
        (dict(slots=0), "--slots 0: must be 1..64"),
        (dict(master_port=80), "--master-port 80: pick a port in 1024..65535"),
        (dict(master_port=5433, db_port=5433), "--master-port and --db-port are both 5433"),
    ],
)
def test_bad_options_are_one_line(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ClusterSpec(tmp_path, **kwargs)


def test_state_file_is_private_and_round_trips(tmp_path):
    state = State(spec={"agents": 1}, db_password="p1", admin_password="p2", pg_dir="/x",
                  label="k=v")  # fmt: skip
    state.save(tmp_path / "cluster.json")
    assert stat.S_IMODE((tmp_path / "cluster.json").stat().st_mode) == 0o600  # holds passwords
    assert State.load(tmp_path / "cluster.json") == state
    assert State.load(tmp_path / "missing.json") is None


def test_no_determined_source_is_copied_into_the_go_module():
    """Only our own files: go.mod/go.sum, the tools file, the launcher stub and the shim."""
    files = {str(p.relative_to(binaries.GO_DIR)) for p in binaries.GO_DIR.rglob("*") if p.is_file()}
    assert files == {"go.mod", "go.sum", "tools.go", "launcher/go.mod", "launcher/launcher.go",
                     "cmd/podman-docker-shim/main.go"}  # fmt: skip
    go_mod = (binaries.GO_DIR / "go.mod").read_text()
    assert "github.com/determined-ai/determined v0.38.1" in go_mod
    assert "=> ./launcher" in go_mod


def _module_zip(go_mod: bytes) -> bytes:
    out = io.BytesIO()
    prefix = f"{binaries.MODULE}@v{binaries.DETERMINED_VERSION}"
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr(f"{prefix}/go.mod", go_mod)
        zf.writestr(f"{prefix}/README.md", b"x")
    return out.getvalue()


def test_module_overlay_makes_info_and_mod_from_the_served_zip(tmp_path):
    """The module proxy serves v0.38.1's zip but refuses its .info/.mod (seen 2026-12-06): the
    overlay holds the zip as served and the go.mod inside it, byte for byte."""
    go_mod = b"module github.com/determined-ai/determined\n\ngo 1.22.0\n"
    payload = _module_zip(go_mod)
    asked: list[str] = []

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            ok = self.path.endswith(f"/@v/v{binaries.DETERMINED_VERSION}.zip")
            self.send_response(200 if ok else 403)
            self.end_headers()
            self.wfile.write(payload if ok else b"This module version is not available.")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        root = binaries.module_overlay(tmp_path / "goproxy", url)
        folder = root / binaries.MODULE / "@v"
        version = f"v{binaries.DETERMINED_VERSION}"
        assert (folder / f"{version}.mod").read_bytes() == go_mod
        assert (folder / f"{version}.zip").read_bytes() == payload
        assert json.loads((folder / f"{version}.info").read_text()) == {"Version": version}
        assert (folder / "list").read_text() == f"{version}\n"
        binaries.module_overlay(tmp_path / "goproxy", url)  # a second call downloads nothing
        assert asked == [f"/{binaries.MODULE}/@v/{version}.zip"]
    finally:
        server.shutdown()
