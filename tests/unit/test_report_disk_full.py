"""A full disk while the report is written: one line naming the file and what was kept, no
partial file, no traceback in the rule's log (adm.fileio.atomic_write, one_line_os_errors)."""

from __future__ import annotations

import errno
import os
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_report import fake_samples, write_metrics

from adm.fileio import WriteError
from adm.report import grids, plots, table

REPO = Path(__file__).resolve().parents[2]


def disk_full(monkeypatch):
    """fsync raises ENOSPC, as a full disk often reports itself only when data is flushed."""

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)


def _table(tmp_path):
    results = table.load_metrics(write_metrics(tmp_path, "demo"))
    return table.write_table1(results, *(tmp_path / f"out/table1.{e}" for e in ("csv", "md", "tex")), False)


def _plots(tmp_path):
    return plots.write_trend_plots(table.load_metrics(write_metrics(tmp_path, "demo")), tmp_path / "out", False)


def _grid(tmp_path):
    fake_samples(tmp_path / "a.npz", 8, reverse=False)
    return grids.write_grid(tmp_path / "a.npz", tmp_path / "out/grid.png", num=4, columns=2)


@pytest.mark.parametrize(
    "write, first",
    [(_table, "table1.csv"), (_plots, "fid_sfid.png"), (_grid, "grid.png")],
    ids=["table", "plots", "grid"],
)
def test_a_full_disk_names_the_file_and_leaves_nothing_half_written(tmp_path, monkeypatch, write, first):
    (tmp_path / "out").mkdir()
    write(tmp_path)  # a first, complete run
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    disk_full(monkeypatch)
    with pytest.raises(WriteError) as err:
        write(tmp_path)
    assert (
        str(err.value)
        == f"{tmp_path / 'out' / first}: could not write the file (No space left on device); the previous {first} is kept"
    )
    assert err.value.errno == errno.ENOSPC
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before  # no temp file, old bytes
    (tmp_path / "out" / first).unlink()
    with pytest.raises(WriteError, match=f"{first}: could not write the file .*; nothing was written under it$"):
        write(tmp_path)
    assert not (tmp_path / "out" / first).exists()


class NamedInputs(list):
    """Snakemake's `input` as the script reads it: a list with named parts and `.get`."""

    def __init__(self, **named):
        super().__init__(p for paths in named.values() for p in paths)
        self.__dict__.update(named)

    def get(self, key, default=None):
        return self.__dict__.get(key, default)


def test_report_script_ends_a_full_disk_in_one_log_line(tmp_path, monkeypatch):
    """workflow/scripts/table1.py as Snakemake runs it (the `snakemake` object injected)."""
    log = tmp_path / "table1.log"
    out = {e: str(tmp_path / f"table1.{e}") for e in ("csv", "md", "tex")}
    fake = SimpleNamespace(
        scriptdir=str(REPO / "workflow/scripts"),
        log=[str(log)],
        input=NamedInputs(metrics=[str(p) for p in write_metrics(tmp_path, "demo")]),
        output=SimpleNamespace(**out),
        params=SimpleNamespace(compare_paper=False),
    )
    monkeypatch.setattr(sys, "stderr", sys.stderr)  # the script points stderr at its log: restored after
    monkeypatch.setattr(sys, "path", list(sys.path))
    disk_full(monkeypatch)
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(REPO / "workflow/scripts/table1.py"), init_globals={"snakemake": fake})
    sys.stderr.close()
    assert exit_.value.code == 1
    assert log.read_text().splitlines() == [
        f"error: {out['csv']}: could not write the file (No space left on device); nothing was written under it"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics", "table1.log"]
