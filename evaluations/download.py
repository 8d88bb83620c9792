"""Fetch the Inception graph, OpenAI's reference batches and checkpoints into a cache directory.

One process at a time per file: an exclusive ``flock`` on ``.NAME.lock`` serialises concurrent
requests (parallel evaluations, several ranks); the others wait, then find the finished file.
A transfer goes to ``NAME.part`` and is renamed into place only after it proved to be the
expected kind of file (an npz or zip whose every member reads back with a correct CRC, a
GraphDef that parses and has the evaluator's nodes; never empty, never an HTML page) and, when
pinned, to have the expected sha256. An interrupted transfer resumes with an HTTP Range request;
a ``.part`` that is already complete (a crash before the rename: the server answers 416) is
verified and finished. The sha256 of every completed file is recorded beside it
(``NAME.sha256``) and re-checked on each later use.
"""

from __future__ import annotations

import fcntl
import os
import sys
import urllib.error
import urllib.request
import zipfile
from contextlib import contextmanager
from pathlib import Path

from evaluations import atomic
from evaluations.errors import ChecksumError, DownloadError, EvalError
from evaluations.npzio import sha256_file

BASE_URL = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches"
GRAPH_URL = f"{BASE_URL}/classify_image_graph_def.pb"
REFERENCE_URLS = {
    "imagenet64": f"{BASE_URL}/imagenet/64/VIRTUAL_imagenet64_labeled.npz",
    "imagenet128": f"{BASE_URL}/imagenet/128/VIRTUAL_imagenet128_labeled.npz",
    "imagenet256": f"{BASE_URL}/imagenet/256/VIRTUAL_imagenet256_labeled.npz",
    "imagenet512": f"{BASE_URL}/imagenet/512/VIRTUAL_imagenet512.npz",
}
KINDS = {".npz": "zip", ".pt": "zip", ".pb": "graph"}  # torch checkpoints are zip archives
_CHUNK = 1 << 20
_RETRYABLE_HTTP = {408, 429, 500, 502, 503, 504}


def default_cache_dir() -> Path:
    return Path(os.environ.get("ADM_BENCH_CACHE", Path.home() / ".cache" / "adm-bench"))


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def recorded_sha256(path: str | Path) -> str | None:
    """The sha256 our downloader recorded for ``path`` on first download, if any."""
    record = _record_path(Path(path))
    return record.read_text().split()[0].lower() if record.exists() else None


def verify_cached(path: Path, expected_sha256: str | None = None) -> str:
    """Check a cached file against its recorded (and the expected) sha256; return it."""
    sha = sha256_file(path)
    record = _record_path(path)
    recorded = recorded_sha256(path)
    for want, what in (
        (recorded, f"the sha256 recorded at download ({record})"),
        (expected_sha256, "the expected sha256"),
    ):
        if want and sha != want.lower():
            raise ChecksumError(
                f"{path}: sha256 {sha} differs from {what} {want}; delete the file to download it again"
            )
    if recorded is None:
        atomic.write_text(record, f"{sha}  {path.name}\n")
    return sha


def check_kind(path: Path, kind: str | None, url: str) -> None:
    """Reject what cannot be the file asked for, with one line naming the URL."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    if size == 0:
        raise DownloadError(f"{url}: the server sent an empty body")
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        raise DownloadError(f"{url}: the server sent an HTML/XML page ({size} bytes), not the file")
    if kind == "zip":
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
                empty = not zf.namelist()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise DownloadError(f"{url}: the {size} bytes received are not a complete npz/zip ({exc})") from None
        if bad is not None or empty:
            raise DownloadError(
                f"{url}: the archive received is damaged ({'no members' if empty else f'bad CRC in {bad}'})"
            )
    elif kind == "graph":
        from evaluations.graph import parse_graph_def

        try:
            parse_graph_def(path.read_bytes(), Path(url.rsplit("/", 1)[-1]))
        except EvalError as exc:
            raise DownloadError(f"{url}: the {size} bytes received are not a usable feature graph ({exc})") from None


@contextmanager
def _locked(path: Path):
    """Exclusive lock for one cached file, across processes (and hosts over NFS)."""
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process downloading {path.name}", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _open(url: str, start: int, timeout: float):
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - configured URLs


def _range_total(headers) -> int | None:
    value = (headers or {}).get("Content-Range", "")  # "bytes a-b/TOTAL" or "bytes */TOTAL"
    total = value.rsplit("/", 1)[-1] if "/" in value else ""
    return int(total) if total.isdigit() else None


def _transfer(url: str, part: Path, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (restarting when the server ignores Range)."""
    start = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, start, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # nothing past our bytes: the .part may be complete
            total = _range_total(exc.headers)
            if total is None or total == start:
                return
            part.unlink()  # longer than the file: another file's leftovers
            raise DownloadError(
                f"{url}: {part.name} held {start} bytes of a {total}-byte file; deleted it, starting over"
            ) from None
        raise
    with response:
        if start and response.status != 206:
            start = 0  # server sent the whole file: start over
        with open(part, "ab" if start else "wb") as f:
            while block := response.read(_CHUNK):
                f.write(block)
        expected = response.headers.get("Content-Length")
    if expected is not None and part.stat().st_size != start + int(expected):
        raise DownloadError(f"{url}: connection closed early ({part.stat().st_size} bytes)")


def _kept(part: Path) -> str:
    if part.exists() and part.stat().st_size:
        return f"{part} ({part.stat().st_size} bytes) is kept and the next run resumes it"
    return "nothing was kept"


def _fetch(url: str, part: Path, retries: int, timeout: float) -> None:
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, timeout)
            return
        except urllib.error.HTTPError as exc:
            if exc.code not in _RETRYABLE_HTTP or attempt == retries:
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}; {_kept(part)}") from None
            print(f"download of {url}: HTTP {exc.code}; retrying", file=sys.stderr)
        except (urllib.error.URLError, OSError, DownloadError) as exc:
            if attempt == retries:
                raise DownloadError(f"{url}: download failed ({exc}); {_kept(part)}") from None
            print(f"download of {url} interrupted ({exc}); resuming", file=sys.stderr)


def download(
    url: str,
    cache_dir: str | Path,
    expected_sha256: str | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    filename: str | None = None,
    kind: str | None = "auto",
) -> Path:
    """Return the cached path of ``url``, downloading (or resuming) it when absent.
    ``kind``: "zip", "graph", None (no check) or "auto" (from the file name's suffix)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / (filename or url.rsplit("/", 1)[-1])
    kind = KINDS.get(path.suffix) if kind == "auto" else kind
    with _locked(path):
        if path.exists():
            verify_cached(path, expected_sha256)
            return path
        part = path.with_name(path.name + ".part")
        _fetch(url, part, retries, timeout)
        try:
            check_kind(part, kind, url)
            sha = sha256_file(part)
            if expected_sha256 and sha != expected_sha256.lower():
                raise ChecksumError(f"{url}: downloaded sha256 {sha} does not match the expected {expected_sha256}")
        except EvalError as exc:
            part.unlink(missing_ok=True)
            raise type(exc)(f"{exc}; deleted the download, nothing was kept") from None
        os.replace(part, path)
        atomic.write_text(_record_path(path), f"{sha}  {path.name}\n")
    return path
