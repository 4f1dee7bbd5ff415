"""Finding, downloading and verifying raw data files. Nothing is used unless its checksum matches."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

import numpy as np

from bench.errors import BenchError
from bench.io import atomic_path


def sha256_file(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file (`algorithm`: any hashlib name, e.g. md5 where a source publishes only that)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_array(array: np.ndarray) -> str:
    """Content checksum of an array (dtype, shape and values), independent of the file format it came in."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def verify_file(path: Path, expected: str, how_to_get: str, algorithm: str = "sha256") -> str:
    if not path.is_file():
        raise BenchError(f"missing data file {path}; {how_to_get}")
    got = sha256_file(path, algorithm)
    if got != expected:
        raise BenchError(f"corrupt data file {path}: {algorithm} {got[:12]}… != expected {expected[:12]}…; {how_to_get}")
    return got


def verify_array(array: np.ndarray, expected: str, source: str, how_to_get: str) -> str:
    got = sha256_array(array)
    if got != expected:
        raise BenchError(f"corrupt data in {source}: content sha256 {got[:12]}… != expected {expected[:12]}…; {how_to_get}")
    return got


def download(url: str, dest: Path, expected_sha256: str | None, how_to_get: str) -> Path:
    """Download `url` to `dest` atomically; when a file checksum is known, verify it before keeping the file."""
    try:
        with atomic_path(dest) as tmp:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as fh:
                while chunk := response.read(1 << 20):
                    fh.write(chunk)
            if expected_sha256 is not None and sha256_file(tmp) != expected_sha256:
                raise BenchError(f"downloaded {url} has the wrong sha256; {how_to_get}")
    except OSError as exc:
        raise BenchError(f"could not download {url} ({exc.__class__.__name__}: {exc}); {how_to_get}") from None
    return dest
