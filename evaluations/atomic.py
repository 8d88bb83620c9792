"""All-or-nothing file writes, with temporaries that a later run can recognise and remove.

A temporary is ``NAME.tmp-HOST-PID[suffix]`` beside its target; it is created with ``open``,
so it gets the umask's permissions (0644 for the usual 022), not mkstemp's 0600, and the
rename keeps them. A kill between write and rename leaves the temporary behind: the next write
of the same target removes those of dead processes on this host (a live writer, or one on
another host sharing the file system, is left alone).
"""

from __future__ import annotations

import os
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path

_HOST = socket.gethostname().replace("-", "_")


def temp_path(path: Path, suffix: str = "") -> Path:
    return path.with_name(f"{path.name}.tmp-{_HOST}-{os.getpid()}{suffix}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale(path: Path) -> list[Path]:
    """Remove the temporaries of ``path`` left by dead processes of this host; return them."""
    removed = []
    prefix = f"{path.name}.tmp-{_HOST}-"
    if not path.parent.is_dir():
        return removed
    for p in path.parent.iterdir():
        if not p.name.startswith(prefix):
            continue
        digits = p.name[len(prefix) :].split(".")[0]
        if digits.isdigit() and int(digits) != os.getpid() and not _alive(int(digits)):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed


@contextmanager
def atomic_path(path: str | Path, suffix: str = ""):
    """Yield a temporary path to write; on success it is renamed to ``path``, else removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tmp = temp_path(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
