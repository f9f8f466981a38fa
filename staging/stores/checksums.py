"""Running checksums of a download, in the form each store reports them.

``crc32c``, ``crc32``, ``crc64nvme``, ``sha1`` and ``sha256`` come out as base64 of the
big-endian digest (how GCS reports crc32c and S3 its ``x-amz-checksum-*`` headers); ``md5`` as
lowercase hex (how S3 puts it in the ETag of a single-part upload). CRC64NVME needs awscrt (the
AWS common runtime botocore itself uses for it); without it that algorithm is not offered.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import zlib
from collections.abc import Callable


class _Crc:
    """A CRC kept as an int: ``step(data, crc) -> crc``, digest of ``width`` bytes."""

    def __init__(self, step: Callable[[bytes, int], int], width: int) -> None:
        self._step, self._width, self._crc = step, width, 0

    def update(self, data: bytes) -> None:
        self._crc = self._step(data, self._crc)

    def value(self) -> str:
        return base64.b64encode(self._crc.to_bytes(self._width, "big")).decode()


class _Hash:
    def __init__(self, name: str, *, hex_digest: bool = False) -> None:
        self._h, self._hex = hashlib.new(name), hex_digest

    def update(self, data: bytes) -> None:
        self._h.update(data)

    def value(self) -> str:
        return self._h.hexdigest() if self._hex else base64.b64encode(self._h.digest()).decode()


class _Crc32c:
    def __init__(self) -> None:
        import google_crc32c

        self._c = google_crc32c.Checksum()

    def update(self, data: bytes) -> None:
        self._c.update(data)

    def value(self) -> str:
        return base64.b64encode(self._c.digest()).decode()


@functools.cache
def _crc64nvme_step() -> Callable[[bytes, int], int] | None:
    try:
        from awscrt import checksums
    except ImportError:
        return None
    return checksums.crc64nvme


def supported(algorithm: str) -> bool:
    """True when this process can compute ``algorithm``."""
    if algorithm == "crc64nvme":
        return _crc64nvme_step() is not None
    return algorithm in ("crc32c", "crc32", "sha1", "sha256", "md5")


def new(algorithm: str):
    """A fresh running checksum with ``update(bytes)`` and ``value() -> str``."""
    if algorithm == "crc32c":
        return _Crc32c()
    if algorithm == "crc32":
        return _Crc(zlib.crc32, 4)
    if algorithm == "crc64nvme" and _crc64nvme_step() is not None:
        return _Crc(_crc64nvme_step(), 8)
    if algorithm in ("sha1", "sha256"):
        return _Hash(algorithm)
    if algorithm == "md5":
        return _Hash("md5", hex_digest=True)
    raise ValueError(f"unsupported checksum algorithm {algorithm!r}")
