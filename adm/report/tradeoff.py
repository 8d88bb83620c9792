"""Trade-off plots of guidance methods: precision vs recall and FID vs IS, one curve per arm; with
FD_DINOv2 measured, FID and FD_DINOv2 against the guidance scale.

The axes researchers compare guidance methods on (Dhariwal & Nichol 2021, Fig. 5; Ho & Salimans
2021, Fig. 4): raising the guidance strength buys precision (IS) with recall (FID), so a method is
better where its curve lies beyond another's, whatever the scales. Each curve joins one arm's
points in scale order, every point labelled with its scale; error bars are +- one sd across seed
sets where a point carries a "spread". FD_DINOv2 has no precision/recall counterpart to trade
against, so it is drawn as the later guidance papers draw it (Karras et al. 2024, autoguidance,
Fig. 1 and 5): the metric against the guidance scale, one line per arm, FID in a panel beside it.
Each method's scale is its own (classifier s, CFG w, autoguidance w), so lines of different
methods share the axis, not the meaning of its values. Pure matplotlib (Agg), no torch: the report rules call it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")  # headless: rules run without a display
import matplotlib.pyplot as plt  # noqa: E402

from .paper import DEMO_BANNER, DINOV2_UNVERIFIED, METRIC_LABELS, METRICS, PAPER_TABLE1, UNVERIFIED_BANNER  # noqa: E402
from .plots import save_figure  # noqa: E402
from .table import OPTIONAL_METRICS, dinov2_unverified, is_demo, is_unverified  # noqa: E402

# plot name -> (x metric, y metric): recall on x as in the papers' precision/recall figures, IS
# on x for FID vs IS (better is right-down for FID/IS, right-up for precision/recall).
TRADEOFF_PLOTS: dict[str, tuple[str, str]] = {
    "tradeoff_pr": ("recall", "precision"),
    "tradeoff_fid_is": ("inception_score", "fid"),
}
# plot name -> the metrics drawn against the guidance scale, a panel each; drawn only when the run
# measured the optional one (FD_DINOv2)
SCALE_PLOTS: dict[str, tuple[str, ...]] = {"tradeoff_fd_dinov2": ("fid", "fd_dinov2")}
LABELS = {**METRIC_LABELS, **OPTIONAL_METRICS}
PAPER_LABEL = "paper: classifier guidance (Table 1)"
MARKERS = ("o", "s", "^", "D", "v", "P")

Curves = Mapping[str, Mapping[float, dict]]  # arm label -> {scale: metrics doc (+ optional "spread")}


def _value(doc: dict, metric: str) -> float | None:
    v = (doc.get("metrics") or {}).get(metric)
    return None if v is None or not math.isfinite(float(v)) else float(v)


def curve_points(points: Mapping[float, dict], x: str, y: str) -> list[tuple[float, float, float, float, float]]:
    """(scale, x, y, x sd, y sd) of one arm in increasing scale; points missing x or y are left
    out (an arm evaluated without that metric), a missing sd is 0 (one seed set: no bar)."""
    rows = []
    for scale in sorted(points, key=float):
        doc = points[scale]
        vx, vy = _value(doc, x), _value(doc, y)
        if vx is None or vy is None:
            continue
        spread = doc.get("spread") or {}
        rows.append((float(scale), vx, vy, float(spread.get(x) or 0.0), float(spread.get(y) or 0.0)))
    return rows


def scale_points(points: Mapping[float, dict], metric: str) -> list[tuple[float, float, float]]:
    """(scale, value, sd) of one arm in increasing scale; points without the metric left out."""
    rows = []
    for scale in sorted(points, key=float):
        value = _value(points[scale], metric)
        if value is not None:
            rows.append((float(scale), value, float((points[scale].get("spread") or {}).get(metric) or 0.0)))
    return rows


def paper_points(x: str, y: str) -> list[tuple[float, float, float]]:
    """(scale, x, y) of Table 1's classifier-guidance rows, in increasing scale."""
    ix, iy = METRICS.index(x), METRICS.index(y)
    return [(s, row[ix], row[iy]) for s, row in sorted(PAPER_TABLE1.items())]


def _label_points(ax, scales, xs, ys, color) -> None:
    for s, px, py in zip(scales, xs, ys):
        ax.annotate(f"{s:g}", (px, py), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)


def tradeoff_figure(curves: Curves, x: str, y: str, title: str, overlay_paper: bool):
    """One figure: a curve per arm (errorbar line, points labelled by scale), the paper dashed."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=110)
    for i, (label, points) in enumerate(curves.items()):
        rows = curve_points(points, x, y)
        if not rows:
            continue
        scales, xs, ys, sx, sy = (list(c) for c in zip(*rows))
        color, marker = f"C{i % 10}", MARKERS[i % len(MARKERS)]  # arms on top of each other stay apart
        has_bars = any(sx) or any(sy)
        ax.errorbar(
            xs,
            ys,
            xerr=sx if has_bars else None,
            yerr=sy if has_bars else None,
            marker=marker,
            capsize=3,
            color=color,
            label=label,
        )
        _label_points(ax, scales, xs, ys, color)
    if overlay_paper:
        scales, xs, ys = (list(c) for c in zip(*paper_points(x, y)))
        ax.plot(xs, ys, "--", marker="x", color="0.45", label=PAPER_LABEL)
        _label_points(ax, scales, xs, ys, "0.45")
    ax.set_xlabel(METRIC_LABELS[x])
    ax.set_ylabel(METRIC_LABELS[y])
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def scale_figure(curves: Curves, metrics: tuple[str, ...], title: str, overlay_paper: bool):
    """A panel per metric against the guidance scale, a line per arm (+- sd bars where given); the
    paper's Table 1 dashed in the panels of metrics it has (FID, ...: not FD_DINOv2)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 4.2), dpi=110, squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for i, (label, points) in enumerate(curves.items()):
            rows = scale_points(points, metric)
            if not rows:
                continue
            scales, ys, sy = (list(c) for c in zip(*rows))
            color, marker = f"C{i % 10}", MARKERS[i % len(MARKERS)]
            ax.errorbar(scales, ys, yerr=sy if any(sy) else None, marker=marker, capsize=3, color=color, label=label)
        if overlay_paper and metric in METRICS:
            column = METRICS.index(metric)
            scales, ys = zip(*((s, row[column]) for s, row in sorted(PAPER_TABLE1.items())))
            ax.plot(scales, ys, "--", marker="x", color="0.45", label=PAPER_LABEL)
        ax.set_xlabel("guidance scale (each method's own)")
        ax.set_ylabel(LABELS[metric])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _title(first_line: str, docs: dict, demo: bool, overlay: bool) -> str:
    if demo:
        first_line += f"\n({DEMO_BANNER})"
    elif is_unverified(docs):
        first_line += f"\n({UNVERIFIED_BANNER})"
    if overlay:
        first_line += "\n(dashed: Dhariwal & Nichol 2021, Table 1)"
    return first_line


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    written = []
    for ext in ("png", "svg"):
        path = out_dir / f"{name}.{ext}"
        # svg: text kept as text (searchable labels); no timestamp and fixed ids: same bytes per run
        with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "adm-bench"}):
            save_figure(fig, path, ext)
        written.append(path)
    plt.close(fig)
    return written


def write_tradeoff_plots(curves: Curves, out_dir: str | Path, compare_paper: bool) -> list[Path]:
    """Write tradeoff_pr.{png,svg} (precision vs recall) and tradeoff_fid_is.{png,svg} (FID vs IS)
    into out_dir and, when the points carry FD_DINOv2, tradeoff_fd_dinov2.{png,svg} (FID and
    FD_DINOv2 against the guidance scale); returns the paths written.

    curves: arm label (e.g. "classifier", "classifier, interval (0.28, 5.42]", "CFG", "autoguidance") ->
    {scale: doc}, doc a metrics JSON as the evaluator writes ({"metrics": {...}, "feature_network",
    ...}), optionally with "spread": {metric: sd across seeds} for error bars. compare_paper:
    overlay Table 1's curve, unless any point was measured with the demo feature network (then
    the plots carry the demo banner instead); an unverified feature graph is named in the title.
    """
    if not curves or not any(curves.values()):
        raise ValueError("no trade-off points to plot: every arm is empty")
    docs = {i: doc for i, doc in enumerate(d for points in curves.values() for d in points.values())}
    demo = is_demo(docs)
    overlay = compare_paper and not demo
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (x, y) in TRADEOFF_PLOTS.items():
        title = _title(
            f"{METRIC_LABELS[y]} vs {METRIC_LABELS[x]}, points labelled by guidance scale", docs, demo, overlay
        )
        written += _save(tradeoff_figure(curves, x, y, title, overlay), out_dir, name)
    for name, metrics in SCALE_PLOTS.items():
        if not any(_value(doc, m) is not None for doc in docs.values() for m in metrics if m not in METRICS):
            continue  # a run without FD_DINOv2: exactly the files (and bytes) of before
        title = _title(" and ".join(LABELS[m] for m in metrics) + " vs guidance scale", docs, demo, overlay)
        if dinov2_unverified(docs.values()):
            title += f"\n(FD_DINOv2: {DINOV2_UNVERIFIED})"
        written += _save(scale_figure(curves, metrics, title, overlay), out_dir, name)
    return written
