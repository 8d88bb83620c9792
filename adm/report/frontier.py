"""The cost-quality frontier: quality against network evaluations and wall seconds, per
solver, beside a gold row; frontier.{csv,md} and the line per scale that answers "how many steps,
with which solver, keep the gold row's numbers?".

An entry is what the workflow's `frontier_report` rule passes (workflow/rules/frontier.smk):
{"solver", "steps", "step_schedule", "scale", "gold" (bool), "path" (an evaluator metrics JSON),
"benchmarks" (Snakemake benchmark TSVs of the point's sampling jobs, one per shard)}.

Counting conventions (stated in every table):
* NFE = diffusion-network evaluations per image. DDPM and DDIM with K respaced steps: K. DPM-Solver++
  (2M/3M) with K steps: K (multistep: each step reuses the earlier data predictions; the last node,
  sigma = 0, is x_0 itself and costs nothing), see adm/sampling/solvers.py.
* Classifier guidance adds one classifier forward + backward to x_t per network evaluation, at any
  scale > 0, and none at scale 0; it is counted apart (column `classifier_evals`), not in NFE.
  At ImageNet 128 one is 86.5 GFLOP against the UNet's 613.9 (bench/out/table1_cost.md), so the
  NFE ratio is also the FLOP ratio of two guided settings.
* Wall seconds = the sum over the point's sampling jobs (shards) of Snakemake's benchmark `s`
  column: job-seconds including model loading, on whatever machine ran them. Compare them only
  within one run of the DAG (the same machine and load).

"Inside the gold row's interval": FID at or below the upper end of the gold row's 95% bootstrap
interval at that scale (inside it, or better); with no interval (bootstrap 0), at or below its FID.
Pure Python + matplotlib (Agg), no torch: the report rule calls it.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable, Mapping

import matplotlib

matplotlib.use("Agg")  # headless: rules run without a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from .paper import DEMO_BANNER, METRIC_LABELS, METRICS  # noqa: E402
from .table import _digits, _fmt, read_metrics_doc  # noqa: E402

SOLVER_LABELS: dict[str, str] = {
    "ddpm": "DDPM (ancestral)",
    "ddim": "DDIM (η = 0)",
    "dpmpp-2m": "DPM-Solver++(2M)",
    "dpmpp-3m": "DPM-Solver++(3M)",
    "dpmpp-2m-sde": "DPM-Solver++(2M) SDE",
}
NFE_NOTE = (
    "NFE: diffusion-network evaluations per image (DDPM/DDIM K steps = K; DPM-Solver++ K steps = K, "
    "SDE variant included); "
    "classifier guidance adds one classifier forward + backward per NFE at scale > 0, counted apart. "
    "Seconds: sampling job-seconds summed over shards (Snakemake benchmarks, model loading included). "
    "Inside: FID at or below the upper end of the gold row's 95% bootstrap interval."
)
MARKERS = ("o", "s", "^", "D", "v", "P")


def network_evaluations(solver: str, steps: int) -> int:
    """Diffusion-network evaluations per image of `steps` steps of `solver` (one per step for all
    five: DDPM and DDIM evaluate once per step; DPM-Solver++(2M/3M) and the 2M SDE are multistep)."""
    if solver not in SOLVER_LABELS:
        raise ValueError(f"unknown solver {solver!r} (one of {', '.join(SOLVER_LABELS)})")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return int(steps)


def classifier_evaluations(solver: str, steps: int, scale: float) -> int:
    """Classifier forward + backward passes per image: one per network evaluation when guided
    (scale > 0); at scale 0 the classifier is not even loaded."""
    return network_evaluations(solver, steps) if scale > 0 else 0


def benchmark_seconds(paths: Iterable[str | Path], column: str = "s") -> float | None:
    """Sum of a column of Snakemake benchmark TSVs (`s`: wall seconds, `cpu_time`: CPU seconds; the
    mean row of each file where a rule repeats); None if any file is missing or has no number."""
    total = 0.0
    for path in paths:
        try:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f, delimiter="\t"))
        except FileNotFoundError:
            return None
        values = [float(r[column]) for r in rows if r.get(column) not in (None, "", "NA", "-")]
        if not values:
            return None
        total += sum(values) / len(values)
    return total


def point_label(solver: str, steps: int, step_schedule: str = "uniform") -> str:
    """`DPM-Solver++(2M) 20 (logsnr)`: the schedule only where it is not time-uniform."""
    text = f"{SOLVER_LABELS[solver]} {steps}"
    return text + (f" ({step_schedule})" if solver.startswith("dpmpp") and step_schedule != "uniform" else "")


def frontier_row(entry: Mapping, doc: dict, seconds: float | None, cpu_seconds: float | None = None) -> dict:
    """One flat row: the setting, its costs, the five metrics and their intervals."""
    solver, steps, scale = entry["solver"], int(entry["steps"]), float(entry["scale"])
    schedule = entry.get("step_schedule", "uniform")
    row = {
        "scale": scale,
        "gold": bool(entry.get("gold")),
        "solver": solver,
        "steps": steps,
        "step_schedule": schedule,
        "label": point_label(solver, steps, schedule),
        "nfe": network_evaluations(solver, steps),
        "classifier_evals": classifier_evaluations(solver, steps, scale),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "n_samples": doc.get("n_samples"),
        "feature_network": doc.get("feature_network"),
    }
    ci = doc.get("ci") or {}
    for m in METRICS:
        lo, hi = ci.get(m) or (None, None)
        row.update({m: doc["metrics"].get(m), f"{m}_ci_lo": lo, f"{m}_ci_hi": hi})
    return row


def gold_row(rows: list[dict], scale: float) -> dict | None:
    return next((r for r in rows if r["gold"] and r["scale"] == scale), None)


def gold_bound(gold: dict, metric: str = "fid") -> float | None:
    """The worst value still 'inside' the gold row: its interval's upper end, else its value."""
    hi = gold.get(f"{metric}_ci_hi")
    return float(hi) if hi is not None else gold.get(metric)


def add_ratios(rows: list[dict]) -> list[dict]:
    """Per row, against the gold row of its scale: nfe_ratio and time_ratio (gold / this, so > 1
    means cheaper) and inside_gold."""
    for r in rows:
        gold = gold_row(rows, r["scale"])
        bound = gold_bound(gold) if gold else None
        r["nfe_ratio"] = gold["nfe"] / r["nfe"] if gold else None
        r["time_ratio"] = gold["seconds"] / r["seconds"] if gold and gold["seconds"] and r["seconds"] else None
        r["inside_gold"] = None if bound is None or r["fid"] is None else bool(r["fid"] <= bound)
    return rows


def cheapest_inside(rows: list[dict], scale: float) -> dict | None:
    """The non-gold setting at `scale` inside the gold row's interval with the fewest network
    evaluations (ties: the fewer seconds, then the lower FID); None when no setting is inside."""
    inside = [r for r in rows if r["scale"] == scale and not r["gold"] and r.get("inside_gold")]
    if not inside:
        return None
    return min(inside, key=lambda r: (r["nfe"], r["seconds"] if r["seconds"] is not None else math.inf, r["fid"]))


def verdict(rows: list[dict], scale: float) -> str:
    """The line per scale: the cheapest setting inside the gold row's interval, with its ratios."""
    gold = gold_row(rows, scale)
    if gold is None:
        return f"scale {scale:g}: no gold row"
    interval = "" if gold["fid_ci_hi"] is None else f" [{_fmt(gold['fid_ci_lo'], 2)}, {_fmt(gold['fid_ci_hi'], 2)}]"
    ref = f"{gold['label']} (FID {_fmt(gold['fid'], 2)}{interval})"
    best = cheapest_inside(rows, scale)
    if best is None:
        return f"scale {scale:g}: no setting of the grid is inside the interval of {ref}"
    time = f"{best['time_ratio']:.1f}x less sampling time" if best["time_ratio"] else "time ratio unknown"
    return (
        f"scale {scale:g}: {best['label']} ({best['nfe']} NFE) reaches {ref} with FID "
        f"{_fmt(best['fid'], 2)}: {best['nfe_ratio']:.1f}x fewer network evaluations, {time}"
    )


def frontier_rows(entries: Iterable[Mapping]) -> list[dict]:
    """Rows (scale ascending, gold first, then solver and steps in entry order) with ratios."""
    entries = list(entries)
    rows = []
    for e in entries:
        doc = read_metrics_doc(e["path"])
        benches = e.get("benchmarks") or []
        rows.append(frontier_row(e, doc, benchmark_seconds(benches), benchmark_seconds(benches, "cpu_time")))
    order = list(dict.fromkeys(e["solver"] for e in entries))
    rows.sort(key=lambda r: (r["scale"], not r["gold"], order.index(r["solver"]), r["steps"]))
    return add_ratios(rows)


def _ratio(x) -> str:
    return "–" if x is None else f"{x:.1f}x"


def table_cells(r: dict) -> list[str]:
    metrics = []
    for m in METRICS:
        d = _digits(m)
        cell = _fmt(r[m], d)
        if r[f"{m}_ci_lo"] is not None:
            cell += f" [{_fmt(r[f'{m}_ci_lo'], d)}, {_fmt(r[f'{m}_ci_hi'], d)}]"
        metrics.append(cell)
    inside = {True: "yes", False: "no", None: "–"}[r["inside_gold"]]
    name = f"**gold: {r['label']}**" if r["gold"] else r["label"]
    seconds = _fmt(r["seconds"], 1)
    return [f"{r['scale']:g}", name, str(r["nfe"]), str(r["classifier_evals"]), seconds, *metrics] + [
        _ratio(r["nfe_ratio"]),
        _ratio(r["time_ratio"]),
        "–" if r["gold"] else inside,
    ]


HEADER = ["Scale", "Setting", "NFE", "Classifier evals", "Seconds"] + [METRIC_LABELS[m] for m in METRICS]
HEADER += ["NFE ratio", "Time ratio", "Inside gold"]


def notes(rows: list[dict]) -> list[str]:
    lines = [DEMO_BANNER] if any(r["feature_network"] == "demo" for r in rows) else []
    return lines + [NFE_NOTE]


def write_frontier(entries: list[dict], out_csv: str | Path, out_md: str | Path) -> list[dict]:
    """frontier.csv (every number; notes and verdicts as `#` lines) and frontier.md (the verdict
    line per scale, then the table)."""
    if not entries:
        raise ValueError("no frontier points")
    rows = frontier_rows(entries)
    verdicts = [verdict(rows, s) for s in sorted({r["scale"] for r in rows})]
    for path in (out_csv, out_md):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="") as f:
        f.writelines(f"# {line}\n" for line in notes(rows) + verdicts)
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"> {n}" for n in notes(rows)] + [""] + [f"- {v}" for v in verdicts] + [""]
    align = "|".join(":---" if h == "Setting" else "---:" for h in HEADER)
    lines += ["| " + " | ".join(HEADER) + " |", f"|{align}|"]
    lines += ["| " + " | ".join(table_cells(r)) + " |" for r in rows]
    Path(out_md).write_text("\n".join(lines) + "\n")
    return rows


# ---------------------------------------------------------------- plots

X_AXES = {
    "nfe": ("nfe", "network evaluations per image (NFE, log)"),
    "seconds": ("seconds", "sampling job-seconds, summed over shards (log)"),
}


def _panel(ax, rows: list[dict], scale: float, x: str, metric: str, solvers: list[str]) -> None:
    """One (metric, scale) panel: a curve per solver in steps order, the gold row's interval as a
    band (its value dashed, its own cost a star)."""
    gold = gold_row(rows, scale)
    if gold is not None and gold[metric] is not None:
        if gold[f"{metric}_ci_lo"] is not None:
            ax.axhspan(gold[f"{metric}_ci_lo"], gold[f"{metric}_ci_hi"], color="0.85", label="gold: 95% interval")
        ax.axhline(gold[metric], ls="--", color="0.4", lw=1)
        if gold[x] is not None:
            ax.plot([gold[x]], [gold[metric]], "*", ms=10, color="0.2", label=f"gold: {gold['label']}")
    for i, solver in enumerate(solvers):
        pts = [r for r in rows if r["scale"] == scale and not r["gold"] and r["solver"] == solver]
        pts = sorted((r for r in pts if r[x] is not None and r[metric] is not None), key=lambda r: r["steps"])
        if not pts:
            continue
        xs, ys = [r[x] for r in pts], [r[metric] for r in pts]
        ax.plot(xs, ys, marker=MARKERS[i % len(MARKERS)], color=f"C{i}", label=SOLVER_LABELS[solver])
        for r, px, py in zip(pts, xs, ys):
            ax.annotate(str(r["steps"]), (px, py), textcoords="offset points", xytext=(3, 3), fontsize=6, color=f"C{i}")
    ax.set_xscale("log")
    # plain numbers on the log axis: the NFE of the grid itself, or 1-2-5 ticks of seconds
    if x == "nfe":
        ax.set_xticks(sorted({r["nfe"] for r in rows if r["scale"] == scale}))
    else:
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3, which="both")


def frontier_figure(rows: list[dict], x: str):
    """Metrics (rows of panels) against NFE or seconds, one column per scale."""
    key, xlabel = X_AXES[x]
    scales = sorted({r["scale"] for r in rows})
    solvers = list(dict.fromkeys(r["solver"] for r in rows if not r["gold"]))
    fig, axes = plt.subplots(len(METRICS), len(scales), figsize=(4.4 * len(scales), 2.6 * len(METRICS)), dpi=100)
    axes = [[a] for a in axes] if len(scales) == 1 else axes
    for i, metric in enumerate(METRICS):
        for j, scale in enumerate(scales):
            ax = axes[i][j]
            _panel(ax, rows, scale, key, metric, solvers)
            ax.set_ylabel(METRIC_LABELS[metric], fontsize=8)
            if i == 0:
                ax.set_title(f"guidance scale {scale:g}", fontsize=9)
            if i == len(METRICS) - 1:
                ax.set_xlabel(xlabel, fontsize=8)
    axes[0][0].legend(fontsize=6)
    title = "Cost-quality frontier: points labelled by steps"
    if any(r["feature_network"] == "demo" for r in rows):
        title += f"\n({DEMO_BANNER})"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def frontier_plots(out_dir: str | Path) -> list[Path]:
    return [Path(out_dir) / f"frontier_{x}.{ext}" for x in X_AXES for ext in ("png", "svg")]


def write_frontier_plots(rows: list[dict], out_dir: str | Path) -> list[Path]:
    """frontier_nfe.{png,svg} and frontier_seconds.{png,svg} in out_dir."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for x in X_AXES:
        fig = frontier_figure(rows, x)
        for ext in ("png", "svg"):
            # svg: text kept as text, no timestamp, fixed ids: the same bytes for the same rows
            with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "adm-bench"}):
                fig.savefig(Path(out_dir) / f"frontier_{x}.{ext}", metadata={"Date": None} if ext == "svg" else None)
        plt.close(fig)
    return frontier_plots(out_dir)
