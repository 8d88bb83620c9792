"""Atomic file writes shared by every program: temp file in the destination folder, fsync, rename.

Temporary files carry a recognisable prefix (TEMP_PREFIX), so a later run can remove the ones a
killed run left behind without touching anyone else's files; and they are made readable as the
umask allows (mkstemp alone creates 0600, which colleagues on a shared cluster cannot read).
Standard library only: `merge` and `prepare-data` must not pay torch's import.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

TEMP_PREFIX = ".adm-tmp."  # ours, and only ours: clean_stale_temps deletes nothing else
TEMP_SUFFIX = ".tmp"


def default_mode() -> int:
    """0o666 minus the process umask: the mode `open(path, "w")` would give a new file."""
    mask = os.umask(0o022)  # the only portable way to read the umask is to set it...
    os.umask(mask)  # ...and put it straight back
    return 0o666 & ~mask


def temp_name_prefix(path: Path) -> str:
    return f"{TEMP_PREFIX}{path.name}."


def clean_stale_temps(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete temporary files a killed writer left in `folder` (only for `name` when given)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    # mkstemp puts 8 random characters between our prefix and suffix
    pattern = f"{TEMP_PREFIX}{name + '.' + '?' * 8 if name else '*'}{TEMP_SUFFIX}"
    removed = []
    for p in folder.glob(pattern):
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:  # another process cleaned it first
            pass
    return removed


class WriteError(OSError):
    """A file that could not be written (a full disk, a read-only folder): str() is one line naming
    the file, the reason and what was kept; errno is the cause's (ENOSPC, EACCES, ...)."""

    def __init__(self, path: str | os.PathLike, cause: OSError, kept: str):
        super().__init__(cause.errno, cause.strerror or str(cause) or type(cause).__name__, str(path))
        self.kept = kept

    def __str__(self) -> str:
        return f"{self.filename}: could not write the file ({self.strerror}); {self.kept}"


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], binary: bool = True) -> Path:
    """Call write(f) on a temporary file beside `path`, fsync, then os.replace onto `path`.

    A kill at any moment leaves either the old file or the new one under `path`, never a mix;
    the temporary file it may leave is removed by the next write of the same path. An OSError
    (a full disk, often seen only at flush or fsync) becomes a :class:`WriteError` naming `path`
    (not the temporary file) and what is left under it.
    """
    path = Path(path)
    try:
        return _atomic_write(path, write, binary)
    except WriteError:
        raise
    except OSError as e:
        kept = f"the previous {path.name} is kept" if path.is_file() else "nothing was written under it"
        raise WriteError(path, e, kept) from e


def _atomic_write(path: Path, write: Callable[[Any], None], binary: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_name_prefix(path), suffix=TEMP_SUFFIX)
    try:
        os.fchmod(fd, default_mode())
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy src's bytes to dst atomically (the declared copy of a file kept elsewhere)."""
    data = Path(src).read_bytes()
    return atomic_write(dst, lambda f: f.write(data))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """The sha256 of a file's bytes, read in chunks (weights files run to gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_json(path, obj) -> None:
    """Atomic JSON write (every resolved-config file and checkpoint sidecar)."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda f: f.write(text), binary=False)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomic UTF-8 text write (tables, pages): bytes, so the locale's encoding never matters."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda f: f.write(data))


@contextlib.contextmanager
def one_line_os_errors():
    """For the workflow's report scripts: an OSError (a full disk, a missing or unreadable input)
    ends the script with one line on stderr (the rule's log) and exit code 1, no traceback.
    Writers that go through :func:`atomic_write` name the file and what was kept; Snakemake then
    removes the failed job's other outputs, so no half-made report survives."""
    try:
        yield
    except OSError as e:
        if isinstance(e, WriteError) or not e.filename:
            line = str(e)
        else:
            line = f"{e.filename}: {e.strerror or e} (the step stopped; Snakemake removes a failed job's outputs)"
        print(f"error: {line}", file=sys.stderr)
        sys.exit(1)
