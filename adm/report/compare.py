"""Guidance arms side by side (issue 11): each metric's mean and spread across seed sets, beside the
first seed's bootstrap interval, per (arm, scale); trade-off curves; the report's HTML section.

An entry is what the workflow's `comparison` rule passes (workflow/rules/arms.smk):
{"arm", "method" ("classifier" | "cfg"), "interval" ([lo, hi] sigma bounds or None), "seed",
"scale", "path" (a metrics JSON of the evaluator)}. Entries come in the workflow's order, the first
seed of sampling.seeds first, so "first seed" below is the Table 1 seed.

Spread: the sample standard deviation across seeds (n - 1 in the denominator), and the min-max
range beside it. With one seed there is no spread ("–"), never a zero.
"""

from __future__ import annotations

import csv
import html
import json
import statistics
from pathlib import Path
from typing import Iterable, Mapping

from adm.fileio import atomic_write, write_text

from .paper import DEMO_BANNER, METRIC_LABELS, METRICS
from .table import _digits, _fmt  # the number formatting of Table 1, shared

SPREAD_NOTE = (
    "mean ± sd across seed sets (sample standard deviation, n − 1), with the min–max range; "
    "in brackets the first seed's value and its 95% bootstrap interval"
)


def arm_label(arm: str, method: str, interval) -> str:
    """Legend / table name of an arm: the method in words, the interval in sigma units."""
    name = "classifier-free guidance (w)" if method == "cfg" else "classifier guidance"
    if not interval:
        return f"{arm}: {name}" + ("" if method == "cfg" else " (full interval)")
    lo, hi = (float(v) for v in interval)
    return f"{arm}: {name}, σ ∈ ({lo:g}, {hi:g}]"


def load_entries(entries: Iterable[Mapping]) -> list[dict]:
    """Each entry with its metrics JSON under "doc"; a file that is no evaluator output is an error."""
    loaded = []
    for e in entries:
        with open(e["path"]) as f:
            doc = json.load(f)
        if "metrics" not in doc:
            raise ValueError(f"{e['path']}: no 'metrics' object (not an evaluator output?)")
        loaded.append({**e, "scale": float(e["scale"]), "doc": doc})
    return loaded


def _sd(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def metric_summary(docs: list[dict], metric: str) -> dict:
    """mean, sd, min, max over the seeds' docs; the first doc's value and bootstrap interval."""
    values = [d["metrics"][metric] for d in docs if d["metrics"].get(metric) is not None]
    first = docs[0]
    lo, hi = (first.get("ci") or {}).get(metric) or (None, None)
    return {
        "mean": statistics.fmean(values) if values else None,
        "sd": _sd(values),
        "min": min(values) if values else None,
        "max": max(values) if values else None,
        "first": first["metrics"].get(metric),
        "first_ci_lo": lo,
        "first_ci_hi": hi,
    }


def comparison_rows(entries: list[dict]) -> list[dict]:
    """One row per (arm, scale), arms in entry order, scales ascending; flat keys `fid_mean`, ..."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for e in entries:
        groups.setdefault((e["arm"], e["scale"]), []).append(e)
    arm_order = list(dict.fromkeys(e["arm"] for e in entries))
    rows = []
    for arm, scale in sorted(groups, key=lambda k: (arm_order.index(k[0]), k[1])):
        group = groups[(arm, scale)]
        head = group[0]
        row = {
            "arm": arm,
            "method": head["method"],
            "label": arm_label(arm, head["method"], head.get("interval")),
            "interval_lo": (head.get("interval") or [None, None])[0],
            "interval_hi": (head.get("interval") or [None, None])[1],
            "scale": scale,
            "n_seeds": len(group),
            "seeds": " ".join(str(e["seed"]) for e in group),
            "n_samples": head["doc"].get("n_samples"),
            "feature_network": head["doc"].get("feature_network"),
        }
        for m in METRICS:
            summary = metric_summary([e["doc"] for e in group], m)
            row.update({f"{m}_{k}": v for k, v in summary.items()})
        rows.append(row)
    return rows


def metric_cell(row: dict, m: str) -> str:
    """`5.91 ± 0.12 (5.80–6.05) [s0: 5.80 [5.70, 6.02]]`; no ± part with one seed."""
    d = _digits(m)
    text = _fmt(row[f"{m}_mean"], d)
    if row[f"{m}_sd"] is not None:
        text += f" ± {_fmt(row[f'{m}_sd'], d)} ({_fmt(row[f'{m}_min'], d)}–{_fmt(row[f'{m}_max'], d)})"
    first = _fmt(row[f"{m}_first"], d)
    if row[f"{m}_first_ci_lo"] is not None:
        first += f" [{_fmt(row[f'{m}_first_ci_lo'], d)}, {_fmt(row[f'{m}_first_ci_hi'], d)}]"
    return f"{text} [first seed: {first}]"


def header_cells() -> list[str]:
    return ["Arm", "Scale", "Seeds"] + [METRIC_LABELS[m] for m in METRICS]


def row_cells(row: dict) -> list[str]:
    return [row["label"], f"{row['scale']:g}", row["seeds"]] + [metric_cell(row, m) for m in METRICS]


def comparison_notes(rows: list[dict]) -> list[str]:
    lines = [DEMO_BANNER] if any(r["feature_network"] == "demo" for r in rows) else []
    lines.append(
        f"Cells: {SPREAD_NOTE}. Scale: classifier scale s, or the CFG paper's w "
        "(eps = (1 + w) eps(x, y) − w eps(x, ∅); w = 0 is the plain conditional model)."
    )
    return lines


def write_comparison(entries: list[dict], out_csv: str | Path, out_md: str | Path) -> list[dict]:
    """comparison.csv (every number, notes as `#` lines) and comparison.md (readable cells)."""
    if not entries:
        raise ValueError("no metrics to compare")
    rows = comparison_rows(load_entries(entries))
    notes = comparison_notes(rows)
    for path in (out_csv, out_md):
        Path(path).parent.mkdir(parents=True, exist_ok=True)

    def write_csv(f) -> None:
        f.writelines(f"# {line}\n" for line in notes)
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    atomic_write(out_csv, write_csv, binary=False)  # a full disk: one line naming the file (adm.fileio)
    head = header_cells()
    lines = [f"> {n}" for n in notes] + [
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(head))) + "|",
    ]
    lines += ["| " + " | ".join(row_cells(r)) + " |" for r in rows]
    write_text(out_md, "\n".join(lines) + "\n")
    return rows


def read_comparison_csv(path: str | Path) -> list[dict]:
    """Rows of comparison.csv back as strings (the report shows them; `#` note lines skipped)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def tradeoff_curves(rows: list[dict]) -> dict[str, dict[float, dict]]:
    """{arm label: {scale: {"metrics": seed means, "spread": {metric: sd}, "n_seeds"}}} for
    adm.report.tradeoff.write_tradeoff_plots (sd only where there are two or more seeds)."""
    curves: dict[str, dict[float, dict]] = {}
    for r in rows:
        point = {
            "metrics": {m: r[f"{m}_mean"] for m in METRICS},
            "n_seeds": r["n_seeds"],
            "feature_network": r["feature_network"],
        }
        spread = {m: r[f"{m}_sd"] for m in METRICS if r[f"{m}_sd"] is not None}
        if spread:
            point["spread"] = spread
        curves.setdefault(r["label"], {})[r["scale"]] = point
    return curves


def render_section(comparison_csv: str | Path, plots: Iterable[str | Path], data_uri) -> str:
    """The report's "Guidance methods compared" section: the trade-off plots and the table.
    `data_uri` embeds a PNG (adm.report.html.data_uri; passed in so this module imports no HTML code)."""
    rows = read_comparison_csv(comparison_csv)
    head = header_cells()
    table = [
        '<table class="compare"><thead><tr>'
        + "".join(f"<th>{html.escape(h)}</th>" for h in head)
        + "</tr></thead><tbody>"
    ]
    for r in rows:
        typed = {k: _number(v) for k, v in r.items()}
        cells = row_cells({**typed, "label": r["label"], "seeds": r["seeds"]})
        table.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    table.append("</tbody></table>")
    imgs = "\n".join(f'<img class="plot" alt="{html.escape(Path(p).stem)}" src="{data_uri(p)}">' for p in plots)
    n_seeds = max((int(r["n_seeds"]) for r in rows), default=1)
    intro = (
        f"<p>Classifier guidance over the full interval and in a limited sigma interval, and "
        f"classifier-free guidance, on the same axes; up to {n_seeds} independent seed sets per "
        f"point. {html.escape(SPREAD_NOTE)}. Error bars: ± one sd across seeds.</p>"
    )
    return "\n".join(["<h2>Guidance methods compared</h2>", intro, imgs, "\n".join(table)])


def _number(text: str):
    """A CSV cell back as a float (None for empty); other text unchanged."""
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text
