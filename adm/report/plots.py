"""Trend plots of the metrics against the guidance scale (Dhariwal & Nichol 2021, Fig. 4 style)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")  # headless: rules run without a display
import matplotlib.pyplot as plt  # noqa: E402

from adm.fileio import atomic_write  # noqa: E402

from .paper import DEMO_BANNER, METRIC_LABELS, METRICS, PAPER_TABLE1  # noqa: E402
from .table import is_demo  # noqa: E402


def save_figure(fig, path: Path, ext: str) -> Path:
    """fig as png or svg under `path`, atomically (no timestamp in the svg: same bytes per run);
    a full disk is one line naming the file (adm.fileio.WriteError)."""
    metadata = {"Date": None} if ext == "svg" else None
    return atomic_write(path, lambda f: fig.savefig(f, format=ext, metadata=metadata))


# plot name -> metrics drawn on it (one panel each).
PLOTS: dict[str, tuple[str, ...]] = {
    "fid_sfid": ("fid", "sfid"),
    "inception_score": ("inception_score",),
    "precision_recall": ("precision", "recall"),
}
_COLORS = {"fid": "C0", "sfid": "C1", "inception_score": "C2", "precision": "C3", "recall": "C4"}


def _series(results: Mapping[float, dict], metric: str):
    scales = sorted(results)
    values = [results[s]["metrics"].get(metric) for s in scales]
    lo, hi = [], []
    for s, v in zip(scales, values):
        ci = (results[s].get("ci") or {}).get(metric)
        lo.append(0.0 if not ci or v is None else max(v - ci[0], 0.0))
        hi.append(0.0 if not ci or v is None else max(ci[1] - v, 0.0))
    return scales, values, [lo, hi]


def plot_trend(results: Mapping[float, dict], metrics: tuple[str, ...], title: str, overlay_paper: bool):
    """One figure: ours (with CI error bars) and, optionally, the paper's curve, per metric."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=110)
    for m in metrics:
        scales, values, err = _series(results, m)
        ax.errorbar(
            scales, values, yerr=err, marker="o", capsize=3, color=_COLORS[m], label=f"{METRIC_LABELS[m]} (ours)"
        )
        if overlay_paper:
            paper = sorted(PAPER_TABLE1.items())
            idx = METRICS.index(m)
            ax.plot(
                [s for s, _ in paper],
                [r[idx] for _, r in paper],
                "--",
                marker="x",
                color=_COLORS[m],
                alpha=0.7,
                label=f"{METRIC_LABELS[m]} (paper)",
            )
    ax.set_xlabel("classifier scale s")
    ax.set_ylabel(" / ".join(METRIC_LABELS[m] for m in metrics))
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_trend_plots(results: Mapping[float, dict], out_dir: str | Path, compare_paper: bool) -> list[Path]:
    """Write `{fid_sfid,inception_score,precision_recall}.{png,svg}` into out_dir; returns the paths."""
    demo = is_demo(results)
    overlay = compare_paper and not demo
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, metrics in PLOTS.items():
        title = " & ".join(METRIC_LABELS[m] for m in metrics) + " vs classifier scale"
        if demo:
            title += f"\n({DEMO_BANNER})"
        elif overlay:
            title += "\n(dashed: Dhariwal & Nichol 2021, Table 1)"
        fig = plot_trend(results, metrics, title, overlay)
        for ext in ("png", "svg"):
            path = out_dir / f"{name}.{ext}"
            save_figure(fig, path, ext)
            written.append(path)
        plt.close(fig)
    return written


def plot_training_curves(curves: Mapping[str, Mapping[str, tuple[list, list]]], title: str):
    """Figure with one panel per curve set: panel name -> {column: (steps, values)}."""
    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 3.6), dpi=100, squeeze=False)
    for ax, (name, columns) in zip(axes[0], curves.items()):
        for column, (steps, values) in columns.items():
            ax.plot(steps, values, label=column, lw=1.2)
        ax.set_xlabel("training step")
        if "loss" in name and all(v > 0 for _, vals in columns.values() for v in vals):
            ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
