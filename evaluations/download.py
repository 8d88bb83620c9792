"""Fetch the Inception graph, OpenAI's reference batches and checkpoints into a cache directory.

One process at a time per file: an exclusive ``flock`` on ``.NAME.lock`` serialises concurrent
requests (parallel evaluations, several ranks); the others wait, then find the finished file.
A transfer is streamed, block by block as the bytes arrive, to ``NAME.<url hash>.part`` and
renamed into place only after it proved to be the expected kind of file (an npz or zip whose
every member reads back with a correct CRC, a GraphDef that parses and has the evaluator's
nodes; never empty, never an HTML page) and, when pinned, to have the expected sha256. The
``.part`` is keyed by the URL: an interrupted transfer of the same URL resumes with an HTTP Range
request, a ``.part`` left by another URL (a changed config) is deleted, never resumed. A
``.part`` that is already complete (a crash before the rename: the server answers 416) is
verified and finished. The sha256 of every completed file is recorded beside it
(``NAME.sha256``) and re-checked on each later use.

Nothing can hang: an attempt that receives no byte for ``stall_timeout`` seconds is abandoned,
and the whole download (retries and their waits included) ends at ``deadline`` seconds. HTTP
408/429/5xx answers, connection errors and stalls are retried ``retries`` times after waits of
``backoff``, 2x, 4x ... seconds (at most 60 s, or the server's Retry-After when longer); no
jitter, since the lock already keeps concurrent requests for one file off the server. Every
failure is one line naming the URL, the bytes received and what is left on disk.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
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
_CHUNK = 1 << 20  # largest block read (and written to the .part) at once
_RETRYABLE_HTTP = {408, 429, 500, 502, 503, 504}
_REDIRECTS = {301, 302, 303, 307, 308}
_MAX_WAIT = 60.0  # longest wait between two attempts, seconds
PROGRESS_MIN_BYTES = 64 << 20  # files at least this large (or of unknown size) report progress


def default_cache_dir() -> Path:
    return Path(os.environ.get("ADM_BENCH_CACHE", Path.home() / ".cache" / "adm-bench"))


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def part_path(path: Path, url: str) -> Path:
    """Where a transfer of ``url`` to ``path`` is kept until complete: keyed by the URL's hash."""
    return path.with_name(f"{path.name}.{hashlib.sha256(url.encode()).hexdigest()[:12]}.part")


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


@dataclass
class _Run:
    """One download's limits and what it has received so far (over all its attempts)."""

    url: str
    part: Path
    stall: float  # seconds without a byte before an attempt is abandoned
    deadline: float  # seconds for the whole download
    deadline_at: float  # time.monotonic() at which the whole download gives up
    progress_every: float | None  # seconds between progress lines on stderr; None: quiet
    received: int = 0  # bytes received in this call

    def left(self) -> float:
        return self.deadline_at - time.monotonic()


class _Stalled(OSError):
    """No byte for the stall timeout (retried like a dropped connection)."""


class _PastDeadline(Exception):
    """The overall deadline passed (never retried)."""


def _discard_other_parts(path: Path, part: Path) -> None:
    """Delete the ``.part`` files another URL left for this name (a config changed since)."""
    pattern = re.compile(rf"{re.escape(path.name)}(\.[0-9a-f]{{12}})?\.part")
    for other in path.parent.iterdir():
        if other != part and pattern.fullmatch(other.name):
            size = other.stat().st_size
            other.unlink()
            print(f"deleted {other} ({size} bytes): left by another URL, not resumed", file=sys.stderr)


def _open(url: str, start: int, timeout: float):
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - configured URLs


def _range_total(headers) -> int | None:
    value = (headers or {}).get("Content-Range", "")  # "bytes a-b/TOTAL" or "bytes */TOTAL"
    total = value.rsplit("/", 1)[-1] if "/" in value else ""
    return int(total) if total.isdigit() else None


class _Progress:
    """A tqdm bar when stderr is a terminal, else one line every ``every`` seconds (log files)."""

    def __init__(self, name: str, start: int, total: int | None, every: float | None):
        self.name, self.done, self.total, self.every = name, start, total, every
        self.bar, self.t0, self.last, self.start = None, time.monotonic(), time.monotonic(), start
        if every is None or (total is not None and total < PROGRESS_MIN_BYTES):
            self.every = None
        elif sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=name, file=sys.stderr)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.every is not None and time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            rate = (self.done - self.start) / max(self.last - self.t0, 1e-9) / 2**20
            of = f" of {self.total / 2**20:.1f} MiB ({100 * self.done / self.total:.0f}%)" if self.total else ""
            print(f"{self.name}: {self.done / 2**20:.1f} MiB{of}, {rate:.1f} MiB/s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _stream(run: _Run, response, f, progress: _Progress) -> None:
    """Copy the body to ``f`` as it arrives (read1: whatever the socket has, never the whole body)."""
    while True:
        if run.left() <= 0:
            raise _PastDeadline
        try:
            block = response.read1(_CHUNK)
        except TimeoutError:
            raise _Stalled(f"no byte for {run.stall:g} s") from None
        if not block:
            return
        f.write(block)
        f.flush()  # on disk as received: a killed job keeps what it had
        run.received += len(block)
        progress.update(len(block))


def _transfer(run: _Run) -> None:
    """Append the rest of the URL to the .part (restarting when the server ignores Range)."""
    url, part = run.url, run.part
    start = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, start, min(run.stall, max(run.left(), 0.01)))
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # nothing past our bytes: the .part may be complete
            total = _range_total(exc.headers)
            if total is None or total == start:
                return
            part.unlink()  # longer than the file: the file changed on the server
            raise DownloadError(f"{part.name} held {start} bytes of a {total}-byte file; deleted it") from None
        raise
    except TimeoutError:
        raise _Stalled(f"no answer for {run.stall:g} s") from None
    with response:
        if start and response.status != 206:
            start = 0  # server sent the whole file: start over
        expected = response.headers.get("Content-Length")
        total = start + int(expected) if expected is not None else None
        progress = _Progress(part.name.rsplit(".", 2)[0], start, total, run.progress_every)
        try:
            with open(part, "ab" if start else "wb") as f:
                _stream(run, response, f, progress)
        finally:
            progress.close()
    if total is not None and part.stat().st_size != total:
        raise DownloadError(f"connection closed early ({part.stat().st_size} of {total} bytes)")


def _kept(part: Path) -> str:
    """What is left on disk, in words; an empty .part is removed so that the words hold."""
    if part.exists() and part.stat().st_size:
        return f"{part} ({part.stat().st_size} bytes) is kept and the next run resumes it"
    part.unlink(missing_ok=True)
    return "nothing was kept"


def _wait(exc: Exception, attempt: int, backoff: float) -> float:
    """Seconds before retry ``attempt`` (0-based): exponential, or the server's Retry-After."""
    wait = backoff * 2**attempt
    after = getattr(exc, "headers", None) and exc.headers.get("Retry-After", "")
    if after and after.strip().isdigit():
        wait = max(wait, float(after))
    return min(wait, _MAX_WAIT)


def _describe(exc: Exception) -> tuple[str, bool]:
    """One line for a failed attempt, and whether it is worth another."""
    if isinstance(exc, urllib.error.HTTPError):
        reason = " ".join(str(exc.reason).split())
        if exc.code in _REDIRECTS and "infinite loop" in reason:  # urllib's three-line message
            return f"redirect loop (HTTP {exc.code}, last to {exc.filename})", False
        return f"HTTP {exc.code} {reason}", exc.code in _RETRYABLE_HTTP
    if isinstance(exc, urllib.error.URLError):
        return f"cannot connect ({' '.join(str(exc.reason).split())})", True
    return " ".join(str(exc).split()) or type(exc).__name__, True


def _fetch(run: _Run, retries: int, backoff: float, sleep: Callable[[float], None]) -> None:
    for attempt in range(retries + 1):
        try:
            _transfer(run)
            return
        except _PastDeadline:
            what, again = f"not finished within the {run.deadline:g} s deadline", False
        except (urllib.error.URLError, OSError, http.client.HTTPException, DownloadError) as exc:
            what, again = _describe(exc)
            if isinstance(exc, urllib.error.HTTPError):
                exc.close()
            wait = _wait(exc, attempt, backoff)
            if again and attempt < retries and wait >= run.left():
                what, again = f"{what}, and the deadline comes before a retry", False
        if not again or attempt == retries:
            raise DownloadError(f"{run.url}: {what}; {run.received} bytes received; {_kept(run.part)}")
        print(f"download of {run.url}: {what}; retry {attempt + 1} of {retries} in {wait:g} s", file=sys.stderr)
        sleep(wait)


def download(
    url: str,
    cache_dir: str | Path,
    expected_sha256: str | None = None,
    *,
    filename: str | None = None,
    kind: str | None = "auto",
    retries: int = 3,
    stall_timeout: float = 60.0,
    deadline: float = 6 * 3600.0,
    backoff: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
    progress_every: float | None = 10.0,
) -> Path:
    """Return the cached path of ``url``, downloading (or resuming) it when absent.

    kind: "zip", "graph", None (no check) or "auto" (from the file name's suffix).
    retries: further attempts after a failed one (HTTP 408/429/5xx, connection errors, stalls).
    stall_timeout: seconds without a byte before an attempt is abandoned.
    deadline: seconds for the whole download, retries and waits included (from taking the lock).
    backoff: seconds before the first retry, doubled before each next one (at most 60 s).
    sleep: how to wait between attempts (tests pass a recorder).
    progress_every: seconds between progress lines for large files on stderr; None: quiet.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / (filename or url.rsplit("/", 1)[-1])
    kind = KINDS.get(path.suffix) if kind == "auto" else kind
    with _locked(path):
        if path.exists():
            verify_cached(path, expected_sha256)
            return path
        part = part_path(path, url)
        _discard_other_parts(path, part)
        run = _Run(url, part, stall_timeout, deadline, time.monotonic() + deadline, progress_every)
        _fetch(run, retries, backoff, sleep)
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
