"""All-or-nothing writes: umask permissions, no temporaries left, stale ones cleaned.

Mutants this file caught (each made on purpose once, then restored): ``clean_stale`` a no-op
(the stale-temporary test fails); temporaries made with ``tempfile.mkstemp`` (the permission
test fails: 0600).
"""

import os
import subprocess
import sys

import pytest

from evaluations import atomic


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_written_files_get_umask_permissions(tmp_path):
    out = tmp_path / "sub" / "m.json"
    atomic.write_text(out, "{}\n")
    assert out.read_text() == "{}\n"
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert [p.name for p in out.parent.iterdir()] == ["m.json"]


def test_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "m.json"
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    out = tmp_path / "m.json"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    ).stdout.strip()
    stale = out.with_name(f"{out.name}.tmp-{atomic._HOST}-{dead}")
    stale.write_text("left by a kill")
    stale_dir = out.with_name(f"{out.name}.tmp-{atomic._HOST}-{dead}.d")
    stale_dir.mkdir()
    live = out.with_name(f"{out.name}.tmp-{atomic._HOST}-1")  # pid 1 is alive
    live.write_text("a live writer")
    other_host = out.with_name(f"{out.name}.tmp-otherhost-{dead}")
    other_host.write_text("another node's")
    atomic.write_text(out, "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.json", live.name, other_host.name])
