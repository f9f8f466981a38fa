"""Staging fixtures: a real GCS emulator over HTTP with the COCO sample uploaded, a fault proxy, and
helpers that run ``python -m staging`` as a real process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gcs_fault_proxy import FaultProxy
from staging_helpers import GS_SOURCE

from staging.emulator import ENV, running_emulator, upload_dir


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
