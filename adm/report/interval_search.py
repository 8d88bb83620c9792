"""The guidance-interval search (Kynkäänniemi et al. 2024, Sec. 4): its two-stage choice,
its table, its heatmap and the chosen interval as a `guidance_arms` entry.

The procedure: first sigma_hi over the sampling steps' sigmas with sigma_lo = 0, then sigma_lo
below the chosen sigma_hi, each (interval, scale) point measured with a small-N FID at a fixed
scale grid. Bounds are searched per model and schedule, never borrowed: ADM's linear schedule puts
sigma in (0.34, 1.02] at t ~ 99-262 of 1000, a cosine or EDM schedule elsewhere.

A point is {"lo", "hi" (sigma bounds of (lo, hi]), "scale", "fid"} (plus any other metric). Pure
numpy/matplotlib, no torch: the workflow's interval_search rules call it.
"""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path
from typing import Iterable, Mapping

import matplotlib

matplotlib.use("Agg")  # headless: rules run without a display
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

METRIC = "fid"  # the search's criterion (lower is better), as in Kynkäänniemi et al. 2024


def best_point(points: Iterable[Mapping], metric: str = METRIC) -> dict:
    """The point of least `metric`; ties go to the first point in order (the caller lists the
    narrower interval first, so a tie buys the cheaper interval). Points without a finite value
    are skipped; none left is an error."""
    best = None
    for p in points:
        v = p.get(metric)
        if v is None or not math.isfinite(float(v)):
            continue
        if best is None or float(v) < float(best[metric]):
            best = dict(p)
    if best is None:
        raise ValueError(f"no point with a finite {metric} to choose from")
    return best


def choose_hi(stage_hi: Iterable[Mapping], metric: str = METRIC) -> dict:
    """Stage 1: the point (sigma_lo = 0, some sigma_hi, some scale) of least FID."""
    points = list(stage_hi)
    if any(float(p["lo"]) != 0.0 for p in points):
        raise ValueError("stage 1 of the search holds sigma_lo = 0 only")
    return best_point(points, metric)


def choose_interval(stage_hi: Iterable[Mapping], stage_lo: Iterable[Mapping], metric: str = METRIC) -> dict:
    """Stage 2: with sigma_hi fixed by stage 1, the point of least FID among stage 1's points at that
    sigma_hi (sigma_lo = 0) and stage 2's (sigma_lo > 0, the same sigma_hi). Stage 1's points come
    first, so a tie keeps sigma_lo = 0."""
    stage_hi = list(stage_hi)
    hi = float(choose_hi(stage_hi, metric)["hi"])
    stage_lo = list(stage_lo)
    if any(float(p["hi"]) != hi for p in stage_lo):
        raise ValueError(f"stage 2 points must all have the sigma_hi stage 1 chose ({hi!r})")
    return best_point([p for p in stage_hi if float(p["hi"]) == hi] + stage_lo, metric)


def interval_text(lo: float, hi: float) -> str:
    return f"({float(lo):.3g}, {float(hi):.3g}]"


def table_rows(points: Iterable[Mapping], metric: str = METRIC) -> tuple[list[float], list[dict]]:
    """(scales, rows): one row per interval in first-seen order, its `metric` per scale."""
    scales = sorted({float(p["scale"]) for p in points})
    rows: dict[tuple[float, float], dict] = {}
    for p in points:
        key = (float(p["lo"]), float(p["hi"]))
        row = rows.setdefault(key, {"stage": p.get("stage", ""), "lo": key[0], "hi": key[1], "values": {}})
        row["values"][float(p["scale"])] = p.get(metric)
    return scales, list(rows.values())


def _fmt(v) -> str:
    return "–" if v is None else f"{float(v):.2f}"


def write_table(points: list[dict], chosen: Mapping, out_csv: str | Path, out_md: str | Path) -> None:
    """interval_search.csv (one line per point) and .md (one row per interval, one column per scale;
    the chosen point in bold)."""
    with open(out_csv, "w", newline="") as f:
        keys = ["stage", "lo", "hi", "scale", METRIC]
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(points)
    scales, rows = table_rows(points)
    lines = [
        f"Interval search (Kynkäänniemi et al. 2024): FID at N = {chosen.get('num_samples', '?')} samples, one seed, "
        f"per guidance interval (σ_lo, σ_hi] (rows) and scale (columns). Stage 1: σ_hi over the sampling steps' σ "
        f"with σ_lo = 0; stage 2: σ_lo with stage 1's σ_hi. Chosen (least FID, in bold): "
        f"{interval_text(chosen['lo'], chosen['hi'])} at scale {float(chosen['scale']):g}.",
        "",
        "| stage | interval | " + " | ".join(f"{s:g}" for s in scales) + " |",
        "|:---|:---|" + "---:|" * len(scales),
    ]
    for r in rows:
        cells = []
        for s in scales:
            text = _fmt(r["values"].get(s))
            is_chosen = (r["lo"], r["hi"], s) == (float(chosen["lo"]), float(chosen["hi"]), float(chosen["scale"]))
            cells.append(f"**{text}**" if is_chosen else text)
        lines.append(f"| {r['stage']} | {interval_text(r['lo'], r['hi'])} | " + " | ".join(cells) + " |")
    Path(out_md).write_text("\n".join(lines) + "\n")


def write_heatmap(points: list[dict], chosen: Mapping, out_png: str | Path, title: str = "") -> None:
    """FID per (interval, scale) as a heatmap, values written in the cells, the chosen cell boxed."""
    scales, rows = table_rows(points)
    grid = [[r["values"].get(s) for s in scales] for r in rows]
    data = [[math.nan if v is None else float(v) for v in line] for line in grid]
    fig, ax = plt.subplots(figsize=(max(4.8, 2.8 + 0.9 * len(scales)), 1.6 + 0.32 * len(rows)), dpi=110)
    image = ax.imshow(data, cmap="viridis_r", aspect="auto")
    for i, line in enumerate(grid):
        for j, v in enumerate(line):
            # dark text on the light (low-FID) end of viridis_r, white on the dark end
            light = v is not None and image.norm(float(v)) < 0.5
            ax.text(j, i, _fmt(v), ha="center", va="center", fontsize=7, color="black" if light else "white")
    for i, r in enumerate(rows):
        for j, s in enumerate(scales):
            if (r["lo"], r["hi"], s) == (float(chosen["lo"]), float(chosen["hi"]), float(chosen["scale"])):
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xticks(range(len(scales)), [f"{s:g}" for s in scales])
    ax.set_yticks(range(len(rows)), [f"{r['stage']} {interval_text(r['lo'], r['hi'])}" for r in rows], fontsize=7)
    ax.set_xlabel("guidance scale")
    ax.set_ylabel("interval (σ_lo, σ_hi]")
    ax.set_title(title or "FID per guidance interval and scale\n(red box: the chosen point)", fontsize=8)
    fig.colorbar(image, ax=ax, label="FID", format="%.2f")  # plain numbers, no offset
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def chosen_arm(chosen: Mapping, base: Mapping, name: str, scales: Iterable[float]) -> dict:
    """The `guidance_arms` entry of the chosen interval: the searched arm's method (and guide), the
    interval [lo, hi] at full float precision (the exact step sigmas), the search's scale grid."""
    arm = {k: v for k, v in base.items() if k not in ("name", "interval", "scales")}
    return {"name": name, **arm, "interval": [float(chosen["lo"]), float(chosen["hi"])], "scales": list(scales)}


def write_chosen(chosen: Mapping, arm: Mapping, path: str | Path) -> None:
    """chosen.yaml: the chosen point and the arm to paste into the config's guidance_arms."""
    doc = {
        "chosen": {k: chosen[k] for k in ("lo", "hi", "scale", METRIC) if k in chosen},
        "guidance_arms": [dict(arm)],
    }
    header = (
        "# The guidance interval chosen by `snakemake interval_search` (least FID at a small N):\n"
        "# paste the guidance_arms entry below into the config's guidance_arms list.\n"
    )
    Path(path).write_text(header + yaml.safe_dump(doc, sort_keys=False))


def load_points(entries: Iterable[Mapping]) -> list[dict]:
    """{"stage", "lo", "hi", "scale", "path"} entries -> points with the metrics of their JSON."""
    points = []
    for e in entries:
        with open(e["path"]) as f:
            metrics = json.load(f)["metrics"]
        points.append({k: e[k] for k in ("stage", "lo", "hi", "scale")} | dict(metrics))
    return points


def read_points(path: str | Path) -> list[dict]:
    """interval_search.csv back as points (numbers as floats)."""
    with open(path, newline="") as f:
        return [{k: v if k == "stage" else float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def render_section(table: str | Path, chosen: str | Path, heatmap: str | Path, data_uri) -> str:
    """The report's "Guidance interval search" section: the heatmap, the table and the chosen arm.
    `data_uri` embeds a PNG (adm.report.html.data_uri, passed in as compare.render_section's)."""
    points = read_points(table)
    doc = yaml.safe_load(Path(chosen).read_text())
    best = doc["chosen"]
    scales, rows = table_rows(points)
    head = "".join(f"<th>{s:g}</th>" for s in scales)
    body = []
    for r in rows:
        cells = []
        for s in scales:
            text = html.escape(_fmt(r["values"].get(s)))
            is_best = (r["lo"], r["hi"], s) == (float(best["lo"]), float(best["hi"]), float(best["scale"]))
            cells.append(f"<td><b>{text}</b></td>" if is_best else f"<td>{text}</td>")
        label = html.escape(f"{r['stage']} {interval_text(r['lo'], r['hi'])}")
        body.append(f"<tr><td>{label}</td>{''.join(cells)}</tr>")
    arm = html.escape(yaml.safe_dump(doc["guidance_arms"], sort_keys=False))
    return "\n".join(
        [
            "<h2>Guidance interval search</h2>",
            "<p>Kynkäänniemi et al. 2024's procedure: σ_hi over the sampling steps' σ with σ_lo = 0 (stage hi), "
            "then σ_lo below the chosen σ_hi (stage lo); FID at a small N per (interval, scale), columns: scale. "
            f"Chosen (least FID, bold): {html.escape(interval_text(best['lo'], best['hi']))} at scale "
            f"{float(best['scale']):g}.</p>",
            f'<img class="plot" alt="interval search heatmap" src="{data_uri(heatmap)}">',
            f'<table class="compare"><thead><tr><th>interval</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>',
            f"<p>The arm to paste into guidance_arms (chosen.yaml):</p><pre>{arm}</pre>",
        ]
    )
