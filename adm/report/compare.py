"""Guidance arms side by side: each metric's mean ± sd, min and median across seed
sets per (arm, scale), the first seed's bootstrap interval in the CSV; trade-off curves; the
report's HTML section.

An entry is what the workflow's `comparison` rule passes (workflow/rules/arms.smk):
{"arm", "method" ("classifier" | "cfg" | "autoguidance"), "interval" ([lo, hi] sigma bounds or
None), "seed", "scale", "path" (a metrics JSON of the evaluator), optionally "fd_dinov2" (that
point's FD_DINOv2 record, evaluations/fd_features.py)}. Entries come in the workflow's
order, the first seed of sampling.seeds first, so "first seed" below is the Table 1 seed.

Statistics over seeds, each in its own column: mean ± sd (the sample standard deviation, n - 1 in
the denominator: this project's convention), min (EDM2's convention: Karras et al., CVPR 2024,
report each FID as the minimum over repeated evaluations) and median. With one seed there is no sd ("–"),
never a zero.
"""

from __future__ import annotations

import csv
import html
import statistics
from pathlib import Path
from typing import Iterable, Mapping

from adm.fileio import atomic_write, write_text

from .paper import DEMO_BANNER, DINOV2_UNVERIFIED, DINOV2_UNVERIFIED_REASON, METRIC_LABELS, METRICS
from .table import OPTIONAL_METRICS, _digits, _fmt, merge_fd_dinov2, read_metrics_doc  # Table 1's formatting, shared

STATISTICS = ("mean ± sd", "min", "median")
SPREAD_NOTE = (
    "per metric three columns over the seed sets: mean ± sd (sample standard deviation, n − 1; "
    "this project's convention), min (EDM2's convention, the minimum over repeated evaluations; "
    "for FID and sFID the best, for IS, precision and recall the worst) and median"
)
METHOD_NAMES = {"classifier": "classifier", "cfg": "CFG", "autoguidance": "autoguidance"}
FD_DINOV2_NOTE = (
    "FD_DINOv2: Fréchet distance of DINOv2 ViT-L/14 CLS features (Stein et al. 2023; lower is better, "
    "so its min is the best seed set); the paper has no such column"
)


def arm_label(method: str, interval) -> str:
    """Short legend / table name of an arm: the method, and its sigma interval if limited
    ("classifier", "classifier, interval (0.28, 5.42]", "CFG", "autoguidance")."""
    name = METHOD_NAMES.get(method, method)
    if not interval:
        return name
    lo, hi = (float(v) for v in interval)
    return f"{name}, interval ({lo:.3g}, {hi:.3g}]"


def method_details(method: str) -> str:
    """One caption line per method: what it is and what its scale means."""
    return {
        "classifier": "classifier guidance (Dhariwal & Nichol 2021), scale s",
        "cfg": "classifier-free guidance (Ho & Salimans 2021), scale w: ε = (1 + w) ε(x, y) − w ε(x, ∅), w = 0 the conditional model",
        "autoguidance": "autoguidance (Karras et al. 2024), scale w ≥ 1: D = D_guide + w (D_main − D_guide)",
    }.get(method, method)


def load_entries(entries: Iterable[Mapping]) -> list[dict]:
    """Each entry with its metrics JSON under "doc"; a file that is no evaluator output is an error."""
    loaded = []
    for e in entries:
        doc = read_metrics_doc(e["path"])
        if e.get("fd_dinov2"):
            merge_fd_dinov2(doc, e["fd_dinov2"])
        loaded.append({**e, "scale": float(e["scale"]), "doc": doc})
    return loaded


def _sd(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def metric_summary(docs: list[dict], metric: str) -> dict:
    """mean, sd, min, median, max over the seeds' docs; the first doc's value and bootstrap interval."""
    values = [d["metrics"][metric] for d in docs if d["metrics"].get(metric) is not None]
    first = docs[0]
    lo, hi = (first.get("ci") or {}).get(metric) or (None, None)
    return {
        "mean": statistics.fmean(values) if values else None,
        "sd": _sd(values),
        "min": min(values) if values else None,
        "median": statistics.median(values) if values else None,
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
    extra = [m for m in OPTIONAL_METRICS if entries and all(m in e["doc"]["metrics"] for e in entries)]
    rows = []
    for arm, scale in sorted(groups, key=lambda k: (arm_order.index(k[0]), k[1])):
        group = groups[(arm, scale)]
        head = group[0]
        row = {
            "arm": arm,
            "method": head["method"],
            "label": arm_label(head["method"], head.get("interval")),
            "interval_lo": (head.get("interval") or [None, None])[0],
            "interval_hi": (head.get("interval") or [None, None])[1],
            "scale": scale,
            "n_seeds": len(group),
            "seeds": " ".join(str(e["seed"]) for e in group),
            "n_samples": head["doc"].get("n_samples"),
            "feature_network": head["doc"].get("feature_network"),
        }
        if any(e.get("note") for e in entries):  # the column exists only where some arm has a note
            row["note"] = head.get("note") or ""
        for m in (*METRICS, *extra):
            summary = metric_summary([e["doc"] for e in group], m)
            row.update({f"{m}_{k}": v for k, v in summary.items()})
        if "fd_dinov2" in extra:  # "pinned" only where every seed's weights have the config's sha256
            pinned = all(e["doc"].get("fd_dinov2_pinned") for e in group)
            row["fd_dinov2_weights"] = "pinned" if pinned else DINOV2_UNVERIFIED
        rows.append(row)
    _unique_labels(rows)
    return rows


def _unique_labels(rows: list[dict]) -> None:
    """Two arms with the same short label (same method and interval, e.g. two guides) are told
    apart by their arm name."""
    arms_of: dict[str, set] = {}
    for r in rows:
        arms_of.setdefault(r["label"], set()).add(r["arm"])
    for r in rows:
        if len(arms_of[r["label"]]) > 1:
            r["label"] += f" ({r['arm']})"


def metric_cells(row: dict, m: str) -> list[str]:
    """[`5.91 ± 0.12`, `5.80`, `5.90`]: mean ± sd, min, median (no ± part with one seed)."""
    d = _digits(m)
    mean = _fmt(row[f"{m}_mean"], d)
    if row[f"{m}_sd"] is not None:
        mean += f" ± {_fmt(row[f'{m}_sd'], d)}"
    return [mean, _fmt(row[f"{m}_min"], d), _fmt(row[f"{m}_median"], d)]


def extra_metrics(rows: list[dict]) -> list[str]:
    """The optional metrics (Table 1's OPTIONAL_METRICS, e.g. FD_DINOv2) every row carries."""
    return [m for m in OPTIONAL_METRICS if rows and all(f"{m}_mean" in r for r in rows)]


def header_cells(extra: Iterable[str] = ()) -> list[str]:
    labels = {**METRIC_LABELS, **OPTIONAL_METRICS}
    return ["Method", "Scale", "Seeds"] + [f"{labels[m]} {st}" for m in (*METRICS, *extra) for st in STATISTICS]


def row_cells(row: dict, extra: Iterable[str] = ()) -> list[str]:
    metrics = (*METRICS, *extra)
    return [row["label"], f"{row['scale']:g}", row["seeds"]] + [c for m in metrics for c in metric_cells(row, m)]


def comparison_notes(rows: list[dict]) -> list[str]:
    """The table's caption: banner, the statistics, each method and arm."""
    lines = [DEMO_BANNER] if any(r["feature_network"] == "demo" for r in rows) else []
    lines.append(
        f"Columns: {SPREAD_NOTE}. Seeds: the seed sets of each point, the first one Table 1's; its value "
        "and 95% bootstrap interval are in comparison.csv (`*_first`, `*_first_ci_lo/hi`)."
    )
    methods = dict.fromkeys(r["method"] for r in rows)
    if "fd_dinov2" in extra_metrics(rows):
        lines.append(FD_DINOV2_NOTE + ".")
        if any(r.get("fd_dinov2_weights") != "pinned" for r in rows):
            lines.append(DINOV2_UNVERIFIED_REASON)
    lines.append("Methods: " + "; ".join(method_details(m) for m in methods) + ".")
    arms = {r["label"]: r for r in rows}
    lines.append(
        "Arms: "
        + "; ".join(
            f"{label} = arm `{r['arm']}`"
            + (f", σ ∈ ({_g(r['interval_lo'])}, {_g(r['interval_hi'])}]" if r["interval_lo"] is not None else "")
            + (f" ({r['note']})" if r.get("note") else "")
            for label, r in arms.items()
        )
        + ". An interval guides only where σ_lo < σ_t ≤ σ_hi (Kynkäänniemi et al. 2024)."
    )
    return lines


def _g(v) -> str:
    return f"{float(v):g}"


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
    extra = extra_metrics(rows)
    head = header_cells(extra)
    lines = [f"> {n}" for n in notes] + [
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(head))) + "|",
    ]
    lines += ["| " + " | ".join(row_cells(r, extra)) + " |" for r in rows]
    write_text(out_md, "\n".join(lines) + "\n")
    return rows


def read_comparison_csv(path: str | Path) -> list[dict]:
    """Rows of comparison.csv back as strings (the report shows them; `#` note lines skipped)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def tradeoff_curves(rows: list[dict]) -> dict[str, dict[float, dict]]:
    """{arm label: {scale: {"metrics": seed means, "spread": {metric: sd}, "n_seeds"}}} for
    adm.report.tradeoff.write_tradeoff_plots (sd only where there are two or more seeds); the
    optional metrics every row carries (FD_DINOv2) too."""
    metrics = (*METRICS, *extra_metrics(rows))
    curves: dict[str, dict[float, dict]] = {}
    for r in rows:
        point = {
            "metrics": {m: r[f"{m}_mean"] for m in metrics},
            "n_seeds": r["n_seeds"],
            "feature_network": r["feature_network"],
        }
        if "fd_dinov2" in metrics:
            point["fd_dinov2_pinned"] = r.get("fd_dinov2_weights") == "pinned"
        spread = {m: r[f"{m}_sd"] for m in metrics if r[f"{m}_sd"] is not None}
        if spread:
            point["spread"] = spread
        curves.setdefault(r["label"], {})[r["scale"]] = point
    return curves


def render_section(comparison_csv: str | Path, plots: Iterable[str | Path], data_uri) -> str:
    """The report's "Guidance methods compared" section: the trade-off plots and the table.
    `data_uri` embeds a PNG (adm.report.html.data_uri; passed in so this module imports no HTML code)."""
    rows = read_comparison_csv(comparison_csv)
    extra = extra_metrics(rows)
    head = header_cells(extra)
    table = [
        '<table class="compare"><thead><tr>'
        + "".join(f"<th>{html.escape(h)}</th>" for h in head)
        + "</tr></thead><tbody>"
    ]
    for r in rows:
        typed = {k: _number(v) for k, v in r.items()}
        cells = row_cells({**typed, "label": r["label"], "seeds": r["seeds"], "arm": r["arm"]}, extra)
        table.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    table.append("</tbody></table>")
    imgs = "\n".join(f'<img class="plot" alt="{html.escape(Path(p).stem)}" src="{data_uri(p)}">' for p in plots)
    n_seeds = max((int(r["n_seeds"]) for r in rows), default=1)
    caption = comparison_notes(
        [{**r, "interval_lo": _number(r["interval_lo"]), "interval_hi": _number(r["interval_hi"])} for r in rows]
    )
    intro = (
        f"<p>Every guidance method of the run on the same axes (classifier guidance over the full interval "
        f"and in a limited sigma interval, classifier-free guidance, autoguidance, as configured); up to "
        f"{n_seeds} independent seed sets per point. Error bars: ± one sd across seeds.</p>"
    )
    notes = '<p class="caption">' + "<br>".join(html.escape(c) for c in caption) + "</p>"
    return "\n".join(["<h2>Guidance methods compared</h2>", intro, imgs, "\n".join(table), notes])


def _number(text: str):
    """A CSV cell back as a float (None for empty); other text unchanged."""
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text
