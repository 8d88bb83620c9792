"""The upsampling stage's table (upsample_table.{csv,md}) and its report section (ADM-G + ADM-U).

Each upsampled guidance scale gets rows built from the same metrics-JSON shape as Table 1: the
plain base samples at that scale (the Table 1 row), the upsampler's low-res inputs resized by
bicubic interpolation (the baseline, no network; when the run made it) and the same inputs after
the upsampler. For the ImageNet 128 -> 512 configuration the paper's ADM-G + ADM-U row is added.
"""

from __future__ import annotations

import csv
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from adm.fileio import atomic_write, write_text

from .paper import DEMO_BANNER, METRIC_LABELS, METRICS
from .table import interval_note, is_demo, is_unverified, row_cells, table_rows

# Dhariwal & Nichol (2021), arXiv:2105.05233, Table 4 (ImageNet 512x512, "ADM-G, ADM-U": guided
# 128x128 samples through the 128->512 upsampler). Only the FID is stated here: it is also in the
# abstract. The row's sFID, precision and recall were not checked against the paper text in this
# project, so they are left out rather than restated from memory.
PAPER_ADM_G_U_512 = {"fid": 3.85}
PAPER_LABEL = "paper: ADM-G + ADM-U, ImageNet 512x512 (Dhariwal & Nichol 2021, Table 4; FID only)"

CSV_COLUMNS = [
    "scale",
    "stage",
    "resolution",
    "n_samples",
    *[c for m in METRICS for c in (m, f"{m}_ci_lo", f"{m}_ci_hi")],
    "feature_network",
]


@dataclass(frozen=True)
class Arrangement:
    """Which sizes the stage chains: base samples (base_size) -> low-res input -> upsampled."""

    base_size: int  # the base model's samples (Table 1)
    low_size: int  # what the upsampler reads (= base_size unless the demo downsamples)
    high_size: int  # what it writes and is evaluated at
    compare_paper: bool = False  # the ImageNet 128 -> 512 configuration: add the paper's row

    @property
    def downsampled(self) -> bool:
        return self.low_size != self.base_size

    def label(self) -> str:
        """One line saying what the stage shows (the demo is not the paper's arrangement)."""
        if self.downsampled:
            return (
                f"demo arrangement: base samples downsampled {self.base_size}→{self.low_size} then upsampled "
                f"{self.low_size}→{self.high_size}; not the paper's 128→512"
            )
        return f"base samples ({self.base_size}x{self.base_size}) upsampled {self.low_size}→{self.high_size}"


def baseline_label(arr: Arrangement) -> str:
    return f"bicubic {arr.low_size}→{arr.high_size} (baseline, no network)"


def upsample_rows(
    base: Mapping[float, dict],
    upsampled: Mapping[float, dict],
    arr: Arrangement,
    interpolated: Mapping[float, dict] | None = None,
) -> list[dict]:
    """Per upsampled scale: the base row, the bicubic baseline's (if given), the upsampled row;
    the paper's row last when comparing."""
    rows = []
    base_rows = {r["scale"]: r for r in table_rows({s: base[s] for s in upsampled if s in base}, False)}
    interpolated = interpolated or {}
    bicubic_rows = {
        r["scale"]: r for r in table_rows({s: interpolated[s] for s in upsampled if s in interpolated}, False)
    }
    for row in table_rows(upsampled, False):
        s = row["scale"]
        if s in base_rows:
            rows.append({**base_rows[s], "stage": "base", "resolution": arr.base_size})
        if s in bicubic_rows:
            rows.append({**bicubic_rows[s], "stage": baseline_label(arr), "resolution": arr.high_size})
        rows.append({**row, "stage": f"upsampled {arr.low_size}→{arr.high_size}", "resolution": arr.high_size})
    if arr.compare_paper:
        paper = {"scale": None, "stage": PAPER_LABEL, "resolution": 512, "n_samples": 50000, "feature_network": None}
        for m in METRICS:
            paper.update({m: PAPER_ADM_G_U_512.get(m), f"{m}_ci_lo": None, f"{m}_ci_hi": None})
        rows.append(paper)
    return rows


def header() -> list[str]:
    return ["Scale", "Stage", "Size", *[METRIC_LABELS[m] for m in METRICS]]


def cells(row: dict) -> list[str]:
    metric_cells = row_cells({**row, "scale": 0.0}, False)[1:]  # ours with intervals; "–" where absent
    scale = "–" if row["scale"] is None else f"{row['scale']:g}"
    return [scale, row["stage"], f"{row['resolution']}x{row['resolution']}", *metric_cells]


def notes(upsampled: Mapping[float, dict], arr: Arrangement, baseline: bool = False) -> list[str]:
    lines = [arr.label()]
    if baseline:
        lines.append(
            f"{baseline_label(arr)}: the upsampler's own {arr.low_size}x{arr.low_size} inputs resized by "
            f"bicubic interpolation and evaluated the same way; the learned upsampler adds something "
            f"only where it scores better than this row"
        )
    if is_demo(upsampled):
        lines.append(DEMO_BANNER)
    elif is_unverified(upsampled):
        lines.append("unverified feature graph — not Inception-V3: the paper's row is shown for layout only")
    lines.append(interval_note(upsampled))
    return lines


def write_upsample_table(
    base: Mapping[float, dict],
    upsampled: Mapping[float, dict],
    arr: Arrangement,
    csv_path,
    md_path,
    interpolated: Mapping[float, dict] | None = None,
) -> list[dict]:
    """upsample_table.csv (one row per line of the table, raw values) and .md (notes + table)."""
    rows = upsample_rows(base, upsampled, arr, interpolated)

    def write_csv(f) -> None:
        w = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)

    atomic_write(csv_path, write_csv, binary=False)  # a full disk: one line naming the file (adm.fileio)
    md = [f"_{n}_\n" for n in notes(upsampled, arr, bool(interpolated))]
    md.append("| " + " | ".join(header()) + " |")
    md.append("|" + "|".join(["---:"] + [":---"] + ["---:"] * (len(header()) - 2)) + "|")
    md += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    write_text(md_path, "\n".join(md) + "\n")
    return rows


def section_html(
    base: Mapping[float, dict],
    upsampled: Mapping[float, dict],
    arr: Arrangement,
    grids: list[tuple[str, Path]],
    data_uri,
    interpolated: Mapping[float, dict] | None = None,
) -> str:
    """The report's upsampling section: what it shows, the table, and grids at both resolutions."""
    rows = upsample_rows(base, upsampled, arr, interpolated)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header())
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells(r)) + "</tr>" for r in rows)
    figs = "".join(
        f'<figure><img alt="{html.escape(c)}" src="{data_uri(p)}"><figcaption>{html.escape(c)}</figcaption></figure>'
        for c, p in grids
    )
    text = "".join(f"<p>{html.escape(n)}</p>" for n in notes(upsampled, arr, bool(interpolated)))
    return (
        f"<h2>Upsampling stage (ADM-G + ADM-U)</h2>"
        f'<div class="banner">{html.escape(arr.label())}</div>{text}'
        f'<table class="table1"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
        f"<p>The same global sample indices in every grid.</p>"
        f'<div class="grid">{figs}</div>'
    )


def arrangement_of(config: Mapping) -> Arrangement:
    """The sizes of a run's stage from its resolved workflow config (presets: adm.nets.presets)."""
    from adm.nets.presets import UPSAMPLER_LOW_RES, get_preset

    preset = config["upsample"]["model"]["preset"]
    high = get_preset(preset).image_size
    base = config["image_size"]
    return Arrangement(
        base_size=base,
        low_size=UPSAMPLER_LOW_RES[preset],
        high_size=high,
        compare_paper=config["dataset"] == "imagenet" and base == 128 and high == 512,
    )


def upsample_files(inputs, config: Mapping) -> dict | None:
    """report_html's upsample inputs as section_from_files' arguments; None when the stage is off."""
    if not inputs.get("upsample_table"):
        return None
    return {
        "base_metrics": list(inputs.get("upsample_base")),
        "upsampled_metrics": list(inputs.get("upsample_metrics")),
        "base_grids": list(inputs.get("upsample_base_grids")),
        "grids": list(inputs.get("upsample_grids")),
        "arrangement": arrangement_of(config),
        "interpolated_metrics": list(inputs.get("upsample_interpolated") or []),
    }


def _grid_list(base_grids, grids, arr: Arrangement) -> list[tuple[str, Path]]:
    """(caption, png) per scale: base samples, the low-res input (demo), the upsampled output."""
    from .table import scale_from_path

    by_scale: dict[float, list[tuple[int, str, Path]]] = {}  # (order in the row, caption, png)
    for p in base_grids:
        by_scale.setdefault(scale_from_path(p), []).append((0, f"base {arr.base_size}x{arr.base_size}", Path(p)))
    for p in grids:
        low = Path(p).name.startswith("lowres_")
        caption = (
            f"downsampled {arr.low_size}x{arr.low_size} (input)"
            if low
            else f"upsampled {arr.high_size}x{arr.high_size}"
        )
        by_scale.setdefault(scale_from_path(p), []).append((1 if low else 2, caption, Path(p)))
    return [(f"{caption}, scale {s:g}", p) for s in sorted(by_scale) for _, caption, p in sorted(by_scale[s])]


def section_from_files(
    base_metrics, upsampled_metrics, base_grids, grids, arrangement: Arrangement, data_uri, interpolated_metrics=()
) -> str:
    from .table import load_metrics

    return section_html(
        load_metrics(base_metrics),
        load_metrics(upsampled_metrics),
        arrangement,
        _grid_list(base_grids, grids, arrangement),
        data_uri,
        load_metrics(interpolated_metrics),
    )
