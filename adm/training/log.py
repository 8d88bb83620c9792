"""The training log, defined once: its columns, its writer (trainers) and its reader (report).

Each trainer appends to RESUME_LOG beside its checkpoint.pt; that file is never a workflow output,
so Snakemake never deletes it before a rerun, and a resume drops exactly the rows written after
the checkpoint it continues from. At the end the trainer copies it to LOG, the declared output.
Hence a resumed run's log equals an uninterrupted one's, except in TIMING_COLUMNS (wall clock).
Standard library only, so the report can read logs without importing torch.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from adm.fileio import atomic_copy, atomic_write

LOG = "log.csv"  # the declared copy (what the workflow and the report read)
RESUME_LOG = "checkpoint-log.csv"  # the authoritative log, kept beside checkpoint.pt
STEP = "step"  # optimizer steps done when the row was written
TIMING_COLUMNS = ("samples_per_s", "elapsed_s")  # wall-clock columns: differ between any two runs


def _quartiles(*metrics: str) -> list[str]:
    """metric_q0 .. metric_q3: the mean over each quarter of the timestep range (q0 = least noise)."""
    return [f"{m}_q{i}" for m in metrics for i in range(4)]


# L_hybrid = L_simple (mse) + λ·L_vlb (vb), Nichol & Dhariwal 2021 Eq. 16.
DIFFUSION_COLUMNS = [
    STEP,
    "lr",
    "loss",
    "mse",
    "vb",
    *_quartiles("loss", "mse", "vb"),
    "grad_norm",
    "loss_scale",
    *TIMING_COLUMNS,
]
CLASSIFIER_TRAIN = ["loss", "acc@1", "acc@5", *_quartiles("loss", "acc@1")]  # on the noised training batches
CLASSIFIER_EVAL = [
    "heldout_loss",
    "heldout_acc@1",
    "heldout_acc@5",  # held-out x_t (fixed t, noise)
    "heldout_clean_loss",
    "heldout_clean_acc@1",
    "heldout_clean_acc@5",
]  # held-out x_0, t = 0
CLASSIFIER_COLUMNS = [STEP, "lr", *CLASSIFIER_TRAIN, "grad_norm", "loss_scale", *TIMING_COLUMNS, *CLASSIFIER_EVAL]

# What the report draws from each log (column -> legend label).
DIFFUSION_CURVES = {"loss": "L_hybrid", "mse": "L_simple (MSE of eps)", "vb": "L_vlb"}
CLASSIFIER_CURVES = {
    "acc@1": "train acc@1 (noised)",
    "heldout_acc@1": "held-out acc@1 (noised)",
    "heldout_clean_acc@1": "held-out acc@1 (clean)",
}


def _format(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


class CSVLog:
    """Appends one row per log interval to `path`; a resume keeps the rows up to its step."""

    def __init__(self, path: str | os.PathLike, fields: list[str], resume_step: int | None, main: bool = True):
        self.path, self.fields, self.main = Path(path), fields, main
        if not main:  # only rank 0 writes
            return
        rows = []
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get(STEP) and int(r[STEP]) <= resume_step]

        def write(f):
            w = csv.DictWriter(f, fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

        atomic_write(self.path, write, binary=False)

    def write(self, row: dict) -> None:
        if not self.main:
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow({k: _format(v) for k, v in row.items()})

    def publish(self, dest: str | os.PathLike) -> None:
        """Copy the log to the declared output `dest` (atomic)."""
        if self.main:
            atomic_copy(self.path, dest)


def read_log(path: str | os.PathLike, columns) -> dict[str, tuple[list[float], list[float]]]:
    """{column: (steps, values)} for each of `columns` present in the log at `path`.

    Rows where a column is empty are skipped (held-out metrics are written every eval interval
    only); a column the log lacks (a log from an older trainer) is left out.
    """
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        rows = list(reader)
    if STEP not in header:
        raise ValueError(f"{path}: not a training log (no {STEP!r} column)")
    out = {}
    for c in columns:
        if c not in header:
            continue
        pairs = [(float(r[STEP]), float(r[c])) for r in rows if r.get(c) not in (None, "")]
        if pairs:
            out[c] = ([s for s, _ in pairs], [v for _, v in pairs])
    return out
