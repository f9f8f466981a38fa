"""Staging fixtures: a real GCS emulator and a real S3 server (moto's, its own process) over HTTP
with the COCO sample uploaded, a fault proxy in front of either, and helpers that run
``python -m staging`` as a real process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from staging_helpers import GS_SOURCE, S3_SOURCE

from staging.testing import s3_emulator
from staging.testing.fault_proxy import FaultProxy
from staging.testing.gcs_emulator import ENV, running_emulator, upload_dir


@pytest.fixture(scope="session")
def emulator_session(coco_sample: Path) -> Iterator[str]:
    """gcp-storage-emulator on loopback (own process) holding the COCO sample at gs://coco/coco2017.
    STORAGE_EMULATOR_HOST is set only inside tests that ask for ``emulator``."""
    with running_emulator() as url:
        upload_dir(coco_sample, GS_SOURCE)
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv(ENV)
            yield url


@pytest.fixture
def emulator(emulator_session: str, monkeypatch) -> str:
    """The session's emulator, with STORAGE_EMULATOR_HOST pointing at it for this test."""
    monkeypatch.setenv(ENV, emulator_session)
    return emulator_session


@pytest.fixture
def proxy(emulator: str, monkeypatch) -> Iterator[FaultProxy]:
    """A fault-injecting, request-counting proxy; STORAGE_EMULATOR_HOST points at it."""
    port = int(emulator.rsplit(":", 1)[1])
    p = FaultProxy(port)
    monkeypatch.setenv(ENV, p.url)
    yield p
    p.close()


@pytest.fixture(scope="session")
def s3_session(coco_sample: Path) -> Iterator[str]:
    """moto's S3 server on loopback (its own process) holding the COCO sample at
    s3://coco/coco2017 (boto3's default CRC32 checksums). Its endpoint and test credentials are
    set only inside tests that ask for ``s3``."""
    with s3_emulator.running_s3() as url:
        s3_emulator.upload_dir(coco_sample, S3_SOURCE)
        with pytest.MonkeyPatch.context() as mp:
            for name in (*s3_emulator.ENDPOINT_ENVS, *s3_emulator.TEST_ENV):
                mp.delenv(name, raising=False)
            yield url


@pytest.fixture
def s3(s3_session: str, monkeypatch) -> str:
    """The session's S3 server: endpoint and test credentials set for this test."""
    for name in s3_emulator.ENDPOINT_ENVS:
        monkeypatch.setenv(name, s3_session)
    for name, value in s3_emulator.TEST_ENV.items():
        monkeypatch.setenv(name, value)
    return s3_session


@pytest.fixture
def s3_proxy(s3: str, monkeypatch) -> Iterator[FaultProxy]:
    """A fault-injecting, request-counting proxy in front of the S3 server; the endpoint
    variables point at it."""
    p = FaultProxy(int(s3.rsplit(":", 1)[1]))
    for name in s3_emulator.ENDPOINT_ENVS:
        monkeypatch.setenv(name, p.url)
    yield p
    p.close()
