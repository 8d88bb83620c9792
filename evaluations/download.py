"""Fetch the Inception graph and OpenAI's reference batches into a cache directory.

A transfer goes to ``NAME.part`` and is renamed into place only after its sha256 checked out, so
a reader never sees a partial file. An interrupted transfer resumes with an HTTP Range request.
The sha256 of every completed file is recorded beside it (``NAME.sha256``) and re-checked on
each later use, so a file corrupted in the cache is caught rather than silently evaluated.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from evaluations.errors import ChecksumError, DownloadError
from evaluations.npzio import sha256_file

BASE_URL = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches"
GRAPH_URL = f"{BASE_URL}/classify_image_graph_def.pb"
REFERENCE_URLS = {
    "imagenet64": f"{BASE_URL}/imagenet/64/VIRTUAL_imagenet64_labeled.npz",
    "imagenet128": f"{BASE_URL}/imagenet/128/VIRTUAL_imagenet128_labeled.npz",
    "imagenet256": f"{BASE_URL}/imagenet/256/VIRTUAL_imagenet256_labeled.npz",
    "imagenet512": f"{BASE_URL}/imagenet/512/VIRTUAL_imagenet512.npz",
}
_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    return Path(os.environ.get("ADM_BENCH_CACHE", Path.home() / ".cache" / "adm-bench"))


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def verify_cached(path: Path, expected_sha256: str | None = None) -> str:
    """Check a cached file against its recorded (and the expected) sha256; return it."""
    sha = sha256_file(path)
    record = _record_path(path)
    recorded = record.read_text().split()[0] if record.exists() else None
    for want, what in ((recorded, f"the sha256 recorded at download ({record})"),
                       (expected_sha256, "the expected sha256")):
        if want and sha != want.lower():
            raise ChecksumError(f"{path}: sha256 {sha} differs from {what} {want}; "
                                "delete the file to download it again")
    if recorded is None:
        _write_atomic(record, f"{sha}  {path.name}\n")
    return sha


def _open(url: str, start: int, timeout: float):
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - fixed https URLs


def _transfer(url: str, part: Path, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (restarting when the server ignores Range)."""
    start = part.stat().st_size if part.exists() else 0
    with _open(url, start, timeout) as response:
        if start and response.status != 206:
            start = 0  # server sent the whole file: start over
        with open(part, "ab" if start else "wb") as f:
            while block := response.read(_CHUNK):
                f.write(block)
        expected = response.headers.get("Content-Length")
    if expected is not None and part.stat().st_size != start + int(expected):
        raise DownloadError(f"{url}: connection closed early ({part.stat().st_size} bytes)")


def download(url: str, cache_dir: str | Path, expected_sha256: str | None = None,
             retries: int = 3, timeout: float = 60.0, filename: str | None = None) -> Path:
    """Return the cached path of ``url``, downloading (or resuming) it when absent."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / (filename or url.rsplit("/", 1)[-1])
    if path.exists():
        verify_cached(path, expected_sha256)
        return path
    part = path.with_name(path.name + ".part")
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, timeout)
            break
        except (urllib.error.URLError, OSError, DownloadError) as exc:
            if attempt == retries:
                raise DownloadError(f"{url}: download failed ({exc}); {part} is kept and the "
                                    "next run resumes it") from None
            print(f"download of {url} interrupted ({exc}); resuming", file=sys.stderr)
    sha = sha256_file(part)
    if expected_sha256 and sha != expected_sha256.lower():
        part.unlink()
        raise ChecksumError(f"{url}: downloaded sha256 {sha} does not match the expected "
                            f"{expected_sha256}; nothing was kept")
    os.replace(part, path)
    _write_atomic(_record_path(path), f"{sha}  {path.name}\n")
    return path

