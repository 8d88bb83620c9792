"""Reproduced Table 1 from per-scale metrics JSONs: CSV, Markdown and LaTeX.

A metrics JSON is what `python -m evaluations.evaluator --out` writes (docs/interfaces.md):
{"metrics": {fid, sfid, inception_score, precision, recall}, "ci": {metric: [lo, hi]},
 "n_samples", "n_ref", "graph_sha256", "feature_network", "timings"}.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Iterable, Mapping

from adm.fileio import atomic_write, write_text

from .paper import (
    DEMO_BANNER,
    DEMO_REASON,
    DINOV2_UNVERIFIED_REASON,
    INCEPTION_FEATURES,
    METRIC_LABELS,
    METRICS,
    PAPER_SETTING,
    UNVERIFIED_BANNER,
    UNVERIFIED_REASON,
    paper_metrics,
)

_SCALE_RE = re.compile(r"scale(\d+(?:\.\d+)?)")
# Metrics beside the paper's five, as their own column where every scale has them (no paper value):
# FD_DINOv2 (Stein et al. 2023) from `metrics/fd_dinov2_scale<s>.json` (evaluations/fd_features.py).
OPTIONAL_METRICS = {"fd_dinov2": "FD_DINOv2"}


def scale_from_path(path: str | Path) -> float:
    """`.../metrics/scale7.5.json` -> 7.5 (the workflow's naming of per-scale files)."""
    match = _SCALE_RE.search(Path(path).name)
    if match is None:
        raise ValueError(f"cannot read the guidance scale from file name {str(path)!r}")
    return float(match.group(1))


def read_metrics_doc(path: str | Path) -> dict:
    """One evaluator metrics JSON; a file without a 'metrics' object is refused (ValueError)."""
    with open(path) as f:
        doc = json.load(f)
    if "metrics" not in doc:
        raise ValueError(f"{path}: no 'metrics' object (not an evaluator output?)")
    return doc


def load_metrics(paths: Iterable[str | Path], scales: Iterable[float] | None = None) -> dict[float, dict]:
    """Read metrics JSONs into {scale: json}; scales from the file names unless given."""
    paths = list(paths)
    scales = [scale_from_path(p) for p in paths] if scales is None else [float(s) for s in scales]
    if len(scales) != len(paths):
        raise ValueError(f"{len(paths)} metrics files but {len(scales)} scales")
    out = {}
    for scale, path in zip(scales, paths):
        out[scale] = read_metrics_doc(path)
    return dict(sorted(out.items()))


def add_fd_dinov2(results: dict[float, dict], paths: Iterable[str | Path]) -> dict[float, dict]:
    """Each FD_DINOv2 record's value and interval merged into its scale's metrics (in place)."""
    for path in paths:
        scale = scale_from_path(path)
        if scale not in results:
            raise ValueError(f"{path}: FD_DINOv2 of scale {scale:g}, which has no metrics file")
        merge_fd_dinov2(results[scale], path)
    return results


def merge_fd_dinov2(doc: dict, path: str | Path) -> dict:
    """An FD_DINOv2 record's value and interval merged into one metrics JSON (in place)."""
    with open(path) as f:
        fd = json.load(f)
    doc["metrics"]["fd_dinov2"] = fd["metrics"]["fd_dinov2"]
    doc.setdefault("ci", {})["fd_dinov2"] = (fd.get("ci") or {}).get("fd_dinov2")
    doc["fd_dinov2_pinned"] = fd.get("weights_pinned") is True  # else labelled (paper.DINOV2_UNVERIFIED)
    return doc


def dinov2_unverified(docs: Iterable[dict]) -> bool:
    """True when any doc's FD_DINOv2 came from weights whose sha256 the config did not pin."""
    return any("fd_dinov2" in d["metrics"] and not d.get("fd_dinov2_pinned") for d in docs)


def optional_metrics(results: Mapping[float, dict]) -> list[str]:
    """The optional metrics every scale has (their columns are shown), in OPTIONAL_METRICS' order."""
    return [m for m in OPTIONAL_METRICS if results and all(m in doc["metrics"] for doc in results.values())]


def is_demo(results: Mapping[float, dict]) -> bool:
    """True when any scale was measured with the demo feature network."""
    return any(doc.get("feature_network") == "demo" for doc in results.values())


def is_unverified(results: Mapping[float, dict]) -> bool:
    """True when a non-demo scale was measured with a graph not verified as Inception-V3."""
    return not is_demo(results) and any(doc.get("feature_network") != INCEPTION_FEATURES for doc in results.values())


def table_rows(results: Mapping[float, dict], compare_paper: bool) -> list[dict]:
    """One flat dict per scale: ours, CI bounds and, when comparing, the paper's value and our - paper."""
    rows = []
    for scale, doc in sorted(results.items()):
        row: dict = {"scale": scale, "n_samples": doc.get("n_samples"), "n_ref": doc.get("n_ref")}
        paper = paper_metrics(scale) if compare_paper else None
        for m in METRICS:
            value = doc["metrics"].get(m)
            lo, hi = (doc.get("ci") or {}).get(m) or (None, None)
            row.update({m: value, f"{m}_ci_lo": lo, f"{m}_ci_hi": hi})
            if compare_paper:
                ref = None if paper is None else paper[m]
                row[f"paper_{m}"] = ref
                row[f"diff_{m}"] = None if ref is None or value is None else value - ref
        for m in optional_metrics(results):
            lo, hi = (doc.get("ci") or {}).get(m) or (None, None)
            row.update({m: doc["metrics"][m], f"{m}_ci_lo": lo, f"{m}_ci_hi": hi})
        row["feature_network"] = doc.get("feature_network")
        rows.append(row)
    return rows


def _fmt(x, digits: int) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


def _digits(metric: str) -> int:
    return 2 if metric in ("fid", "sfid", "inception_score", *OPTIONAL_METRICS) else 3


def _cell(row: dict, m: str) -> str:
    """`5.91 [5.80, 6.02]`: our value with its confidence interval."""
    d = _digits(m)
    value = _fmt(row[m], d)
    if row[f"{m}_ci_lo"] is None:
        return value
    return f"{value} [{_fmt(row[f'{m}_ci_lo'], d)}, {_fmt(row[f'{m}_ci_hi'], d)}]"


def _signed(x, digits: int) -> str:
    return "–" if x is None else f"{round(x, digits) + 0.0:+.{digits}f}"  # + 0.0: no "-0.000"


def header_cells(compare_paper: bool, extra: Iterable[str] = ()) -> list[str]:
    """Column names; `extra`: optional metrics (OPTIONAL_METRICS) shown after the paper's, ours only."""
    cells = ["Scale"]
    for m in METRICS:
        label = METRIC_LABELS[m]
        cells += [f"{label} (ours)", f"{label} (paper)", f"Δ{label}"] if compare_paper else [label]
    return cells + [OPTIONAL_METRICS[m] for m in extra]


def row_cells(row: dict, compare_paper: bool, extra: Iterable[str] = ()) -> list[str]:
    cells = [f"{row['scale']:g}"]
    for m in METRICS:
        cells.append(_cell(row, m))
        if compare_paper:
            cells += [_fmt(row[f"paper_{m}"], 2), _signed(row[f"diff_{m}"], _digits(m))]
    return cells + [_cell(row, m) for m in extra]


def optional_columns(rows: list[dict]) -> list[str]:
    """The optional metrics the rows carry (table_rows adds them where every scale has them)."""
    return [m for m in OPTIONAL_METRICS if m in rows[0]]


def notes(results: Mapping[float, dict], compare_paper: bool) -> list[str]:
    """Lines printed above every rendering of the table."""
    if is_demo(results):
        lines = [DEMO_BANNER, DEMO_REASON]
    else:
        lines = [UNVERIFIED_BANNER, UNVERIFIED_REASON] if is_unverified(results) else []
        lines.append(
            f"Paper: {PAPER_SETTING}. Δ = ours − paper."
            if compare_paper
            else "Ours only: this configuration does not match the paper's setting."
        )
    if "fd_dinov2" in optional_metrics(results):
        lines.append(
            "FD_DINOv2: Fréchet distance of DINOv2 ViT-L/14 CLS features (dgm-eval's preprocessing, "
            "Stein et al. 2023); the paper has no such column. Its brackets are FID's bootstrap."
        )
        if dinov2_unverified(results.values()):
            lines.append(DINOV2_UNVERIFIED_REASON)
    lines.append(interval_note(results))
    return lines


def interval_note(results: Mapping[float, dict]) -> str:
    """What the brackets are, in words, from the evaluator's settings in the metrics files
    (evaluations/metrics.py: point ± 1.96 × bootstrap standard error)."""
    counts = sorted({int((doc.get("settings") or {}).get("bootstrap", 0)) for doc in results.values()})
    if counts[-1] < 2:
        return "No intervals: the evaluation ran without bootstrap resamples."
    fid = "/".join(str(c) for c in counts)
    pr = "/".join(str(max(c, 200)) for c in counts)
    return (
        f"Brackets: 95% bootstrap intervals (value ± 1.96 standard errors). FID, sFID and IS: "
        f"{fid} resamples, with replacement, of the generated images, the reference batch "
        f"held fixed; precision and recall: {pr} resamples of which images fall inside the "
        f"other set's manifold (generated images for precision, reference images for recall), "
        f"the nearest-neighbour radii held fixed."
    )


def write_csv(rows: list[dict], path: str | Path, note_lines: list[str]) -> None:
    """Machine-readable table; notes as leading `#` lines (read with pandas `comment='#'`)."""

    def write(f) -> None:
        for line in note_lines:
            f.write(f"# {line}\n")
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    atomic_write(path, write, binary=False)  # a full disk: one line naming the file (adm.fileio)


def write_markdown(rows: list[dict], path: str | Path, note_lines: list[str], compare_paper: bool) -> None:
    head = header_cells(compare_paper, optional_columns(rows))
    lines = [f"> **{note_lines[0]}**"] + [f"> {n}" for n in note_lines[1:]] + [""]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---:" for _ in head) + "|")
    lines += ["| " + " | ".join(row_cells(r, compare_paper, optional_columns(rows))) + " |" for r in rows]
    write_text(path, "\n".join(lines) + "\n")


def _tex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(a, b)
    return text.replace("Δ", r"$\Delta$").replace("−", "$-$").replace("—", "---").replace("–", "--")


def write_latex(rows: list[dict], path: str | Path, note_lines: list[str], compare_paper: bool) -> None:
    head = header_cells(compare_paper, optional_columns(rows))
    lines = [f"% {n}" for n in note_lines]
    lines += [r"\begin{table}[t]", r"\centering", r"\small"]
    lines.append(r"\begin{tabular}{" + "r" * len(head) + "}")
    lines.append(r"\toprule")
    lines.append(" & ".join(_tex_escape(h) for h in head) + r" \\")
    lines.append(r"\midrule")
    lines += [
        " & ".join(_tex_escape(c) for c in row_cells(r, compare_paper, optional_columns(rows))) + r" \\" for r in rows
    ]
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines.append(r"\caption{" + _tex_escape(" ".join(note_lines)) + "}")
    lines += [r"\label{tab:guidance-scales}", r"\end{table}"]
    write_text(path, "\n".join(lines) + "\n")


def write_table1(results: Mapping[float, dict], out_csv, out_md, out_tex, compare_paper: bool) -> list[dict]:
    """Write Table 1 in three formats; the paper's columns only when `compare_paper` and not demo."""
    if not results:
        raise ValueError("no metrics to tabulate")
    compare_paper = compare_paper and not is_demo(results)
    rows = table_rows(results, compare_paper)
    note_lines = notes(results, compare_paper)
    for out in (out_csv, out_md, out_tex):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out_csv, note_lines)
    write_markdown(rows, out_md, note_lines, compare_paper)
    write_latex(rows, out_tex, note_lines, compare_paper)
    return rows
