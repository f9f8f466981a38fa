"""Bad S3 inputs: one line on stderr within seconds, exit 1, the cache exactly as it was, and never
a credential (the secret key and session token are looked for in every output and cache file)."""

from __future__ import annotations

import os
import time
import uuid

import pytest
from staging_helpers import S3_SOURCE, incomplete_files, run_staging, snapshot

from common import free_port

pytestmark = pytest.mark.s3

SECRET = f"s3cr3t-{uuid.uuid4().hex}"
TOKEN = f"t0ken-{uuid.uuid4().hex}"
NO_AMBIENT_CREDENTIALS = {  # nothing but what a test passes: no profile, no role, no IMDS
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
    "AWS_CONFIG_FILE": "/nonexistent/config",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture
def warm_cache(s3, tmp_path):
    """A cache that already holds a staged S3 sample, so "untouched" means something."""
    ok = run_staging("--source", S3_SOURCE, "--cache", str(tmp_path / "cache"),
                     "--dest", str(tmp_path / "dest0"), "--splits", "val")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    return tmp_path / "cache"


def _env(**extra: str) -> dict[str, str]:
    drop = ("AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(NO_AMBIENT_CREDENTIALS, AWS_SECRET_ACCESS_KEY=SECRET, AWS_SESSION_TOKEN=TOKEN)
    env.update(extra)
    return env


def _fails_cleanly(cache, source: str, *, env: dict, expect: str, within_s: float = 15) -> str:
    before = snapshot(cache)
    t0 = time.monotonic()
    done = run_staging("--source", source, "--cache", str(cache),
                       "--dest", str(cache.parent / "dest"), "--splits", "val", env=env)  # fmt: skip
    took = time.monotonic() - t0
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stdout
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert expect in lines[0], lines[0]
    assert took < within_s, f"took {took:.1f} s"
    assert snapshot(cache) == before
    assert incomplete_files(cache) == []
    assert not (cache.parent / "dest" / "annotations").exists()
    assert SECRET not in done.stdout + done.stderr and TOKEN not in done.stdout + done.stderr
    return lines[0]


def test_missing_bucket(warm_cache):
    _fails_cleanly(warm_cache, "s3://no-such-bucket/coco", env=_env(),
                   expect="bucket s3://no-such-bucket not found")  # fmt: skip


def test_missing_annotation_object(warm_cache):
    _fails_cleanly(warm_cache, "s3://coco/not-there", env=_env(),
                   expect="missing object s3://coco/not-there/annotations/")  # fmt: skip


def test_missing_credentials(warm_cache):
    env = _env()  # run_staging starts from os.environ: blank out the fixture's credentials
    env.update(
        dict.fromkeys(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"), "")
    )
    _fails_cleanly(warm_cache, S3_SOURCE, env=env, expect="no AWS credentials for s3://coco/")


def test_unreachable_endpoint_fails_fast_with_one_line(warm_cache):
    port = free_port()  # a port nobody listens on: connections are refused
    # a user:password in the endpoint URL is never shown either
    endpoint = f"http://someone:{SECRET}@127.0.0.1:{port}"
    env = _env(AWS_ENDPOINT_URL=endpoint, AWS_ENDPOINT_URL_S3=endpoint)
    line = _fails_cleanly(warm_cache, S3_SOURCE, env=env,
                          expect=f"cannot reach S3 at http://127.0.0.1:{port}")  # fmt: skip
    assert "someone" not in line


def test_secret_never_appears_in_output_or_cache(s3_proxy, tmp_path):
    """A good run, a run whose download is retried (a logged warning) and a failing one: the
    secret key and session token appear in no output and no file staging wrote."""
    from staging.testing.fault_proxy import Rule

    s3_proxy.rules.append(Rule("flip", match="instances_val2017", method="GET", times=1))
    args = ("--source", S3_SOURCE, "--cache", str(tmp_path / "cache"), "--splits", "val")
    runs = [
        run_staging(*args, "--dest", str(tmp_path / "d1"), "--with-images", env=_env()),
        run_staging(*args, "--dest", str(tmp_path / "d2"), env=_env()),
        run_staging(
            "--source",
            "s3://nope-bucket/x",
            "--cache",
            str(tmp_path / "cache"),
            "--dest",
            str(tmp_path / "d3"),
            env=_env(),
        ),
    ]
    assert [r.returncode for r in runs] == [0, 0, 1], [r.stderr for r in runs]
    assert "retrying" in runs[0].stderr
    for r in runs:
        assert SECRET not in r.stdout + r.stderr and TOKEN not in r.stdout + r.stderr
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SECRET.encode() not in data and TOKEN.encode() not in data, path


def test_bad_options_leave_everything_untouched(warm_cache, tmp_path):
    """A bad bucket name in data.source: one line before any request."""
    done = run_staging("--source", "s3:///coco", "--cache", str(warm_cache),
                       "--dest", str(tmp_path / "dest"), env=_env())  # fmt: skip
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        == "error: data.source='s3:///coco' has no bucket; write s3://bucket/prefix"
    )
    assert not (tmp_path / "dest").exists()
