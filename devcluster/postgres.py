"""The master's PostgreSQL (Debian's): one data directory, TCP on 127.0.0.1 with a password.

PostgreSQL refuses to run as root, so as root every command runs as the ``postgres`` user (the
Debian package makes it) through ``runuser``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from devcluster.spec import DB_NAME, DB_USER
from errors import ProjectError

INSTALL = "install PostgreSQL with: bash ci/install-system.sh (Debian: apt-get install postgresql)"


def _bindir() -> Path:
    """Debian keeps initdb/pg_ctl in /usr/lib/postgresql/<major>/bin, off PATH."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        raise ProjectError(f"PostgreSQL's pg_ctl not found; {INSTALL}")
    return found[-1].parent


def _as_owner(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    if shutil.which("runuser") is None:
        raise ProjectError("runuser not found: it runs PostgreSQL as the postgres user for root")
    return ["runuser", "-u", "postgres", "--", *argv]


def _run(argv: list[str], what: str) -> str:
    proc = subprocess.run(_as_owner(argv), capture_output=True, text=True, cwd="/")
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
        raise ProjectError(f"PostgreSQL {what} failed: {tail}")
    return proc.stdout


def check_installed() -> None:
    _bindir()
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            raise ProjectError(f"no 'postgres' user to run PostgreSQL as; {INSTALL}") from None


def init(data_dir: Path, password: str) -> None:
    """initdb with a password-protected superuser ``determined`` and the ``determined`` database."""
    if (data_dir / "PG_VERSION").is_file():
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    if os.geteuid() == 0:
        shutil.chown(data_dir, "postgres", "postgres")
        os.chmod(data_dir.parent, 0o755)
    with tempfile.NamedTemporaryFile("w", prefix="pw-", dir="/tmp", delete=True) as pwfile:
        pwfile.write(password + "\n")
        pwfile.flush()
        if os.geteuid() == 0:
            shutil.chown(pwfile.name, "postgres")
        _run([str(_bindir() / "initdb"), "-D", str(data_dir), "-U", DB_USER,
              f"--pwfile={pwfile.name}", "-A", "scram-sha-256", "-E", "UTF8"], "initdb")  # fmt: skip


def start(data_dir: Path, port: int) -> int:
    """Start the server (waiting until it accepts connections); returns the postmaster's PID.

    Its log is ``server.log`` in the data directory, which the ``postgres`` user can write."""
    log = data_dir / "server.log"
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {data_dir}"
    _run([str(_bindir() / "pg_ctl"), "-D", str(data_dir), "-o", options, "-l", str(log), "-w",
          "-t", "60", "start"], f"start (log: {log})")  # fmt: skip
    return pid(data_dir)


def create_database(port: int, password: str) -> None:
    """Create the ``determined`` database unless it exists (over TCP, as the master will)."""
    base = [str(_bindir() / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", DB_USER, "-d",
            "postgres", "-v", "ON_ERROR_STOP=1"]  # fmt: skip
    env = {**os.environ, "PGPASSWORD": password}

    def psql(*args: str) -> str:
        proc = subprocess.run([*base, *args], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise ProjectError(f"PostgreSQL on port {port}: {proc.stderr.strip().splitlines()[-1]}")
        return proc.stdout

    if psql("-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'").strip() != "1":
        psql("-c", f"CREATE DATABASE {DB_NAME}")


def pid(data_dir: Path) -> int:
    """The postmaster's PID from its pid file (0 when it does not run)."""
    try:
        return int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def running(data_dir: Path) -> bool:
    number = pid(data_dir)
    return number > 0 and Path(f"/proc/{number}").exists()


def stop(data_dir: Path) -> None:
    if running(data_dir):
        _run([str(_bindir() / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "stop"], "stop")
