"""results/report.html: one self-contained, offline page (every image base64-embedded)."""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from adm.fileio import write_text
from adm.training.log import CLASSIFIER_CURVES, DIFFUSION_CURVES, read_log

from .paper import DEMO_BANNER, METRIC_LABELS, METRICS, UNVERIFIED_BANNER
from .runinfo import elapsed_seconds, format_seconds, git_commit, gpu_hours, hardware, package_versions, read_benchmarks
from .table import header_cells, is_demo, is_unverified, notes, optional_columns, row_cells, table_rows


@dataclass
class ReportInputs:
    """Everything the page shows; paths are produced by the workflow."""

    results: Mapping[float, dict]  # scale -> metrics JSON
    compare_paper: bool  # ImageNet 128 run: show the paper's numbers beside ours
    plots: list[Path]  # PNG trend plots
    grids: Mapping[float, Path]  # scale -> PNG sample grid
    config: dict  # the resolved workflow config
    title: str = "ADM classifier-guidance benchmark"
    diffusion_log: Path | None = None  # diffusion/log.csv (absent for released checkpoints)
    classifier_log: Path | None = None  # classifier/log.csv
    bench_dir: Path | None = None  # snakemake benchmark TSVs
    repo: Path = Path(".")
    gpus_per_rule: dict[str, int] = field(default_factory=dict)
    on_gpu: bool = False
    comparison: Path | None = None  # comparison.csv of the guidance arms (absent when off)
    tradeoff_plots: list[Path] = field(default_factory=list)  # their PNG trade-off plots
    upsample: dict | None = None  # the upsampling stage's files (adm.report.upsample_table.section_from_files)
    interval_search: dict | None = (
        None  # {"table" (csv), "chosen", "heatmap"} of the interval search, when in the report
    )
    published: Path | None = None  # published.csv of the published-samples check, when in the report


def data_uri(path: str | Path, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def figure_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def read_training_curves(path: str | Path, curves: Mapping[str, str]) -> dict[str, tuple[list[float], list[float]]]:
    """{legend label: (steps, values)} for the columns `curves` names (adm.training.log defines both)."""
    return {curves[c]: series for c, series in read_log(path, curves).items()}


def _curve_section(inputs: ReportInputs) -> str:
    import matplotlib.pyplot as plt

    from .plots import plot_training_curves

    curves = {}
    for name, path, wanted in (
        ("diffusion loss", inputs.diffusion_log, DIFFUSION_CURVES),
        ("classifier accuracy", inputs.classifier_log, CLASSIFIER_CURVES),
    ):
        if path and Path(path).is_file():
            columns = read_training_curves(path, wanted)
            if columns:
                curves[name] = columns
    if not curves:
        return "<p>No training logs in this run (released checkpoints were used).</p>"
    fig = plot_training_curves(curves, "training curves")
    uri = figure_uri(fig)
    plt.close(fig)
    return f'<img class="wide" alt="training curves" src="{uri}">'


def _table_html(head: list[str] | None, rows: list[list[str]], cls: str = "") -> str:
    out = [f'<table class="{cls}">']
    if head:
        out.append("<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead>")
    out.append("<tbody>")
    out += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows]
    return "\n".join(out + ["</tbody></table>"])


def _summary_section(inputs: ReportInputs) -> str:
    benchmarks = read_benchmarks(inputs.bench_dir) if inputs.bench_dir else {}
    total = sum(b["wall_s"] for b in benchmarks.values())
    facts = [("git commit", git_commit(inputs.repo))]
    facts += [(k, v) for k, v in hardware().items()]
    facts.append(("total wall time (sum over jobs)", format_seconds(total) if benchmarks else "n/a"))
    if benchmarks:
        facts.append(("elapsed (first job start to last job end)", format_seconds(elapsed_seconds(benchmarks))))
    if inputs.on_gpu:
        facts.append(("GPU-hours", f"{gpu_hours(benchmarks, inputs.gpus_per_rule):.2f}"))
    parts = ["<h2>Run summary</h2>", _table_html(None, facts, "facts")]
    if benchmarks:
        rows = [
            [rule, int(b["jobs"]), format_seconds(b["wall_s"]), f"{b['max_rss_mb']:.0f}"]
            for rule, b in sorted(benchmarks.items(), key=lambda kv: -kv[1]["wall_s"])
        ]
        parts += [
            "<h3>Wall time per rule</h3>",
            _table_html(["rule", "jobs", "wall time", "max RSS (MB)"], rows, "bench"),
        ]
    versions = package_versions()
    parts += ["<h3>Package versions</h3>", _table_html(["package", "version"], list(versions.items()), "versions")]
    parts += ["<h3>Configuration</h3>", f"<pre>{html.escape(json.dumps(inputs.config, indent=2, default=str))}</pre>"]
    return "\n".join(parts)


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1300px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
table.table1 td{white-space:nowrap}
table.facts td:first-child,table.versions td:first-child,table.bench td:first-child{text-align:left;font-weight:600}
.banner{background:#fff3cd;border:2px solid #d39e00;padding:.7em 1em;font-weight:700;font-size:1.1em}
.plot{max-width:32%;min-width:380px;margin:.3em}
.wide{max-width:100%;width:1100px}
.grid figure{display:inline-block;margin:.4em;text-align:center}
.grid img{image-rendering:pixelated;width:256px}
pre{background:#f6f6f6;padding:.8em;font-size:.8em;max-height:30em;overflow:auto}
"""


def _comparison_section(inputs: ReportInputs) -> list[str]:
    """Guidance arms and seed spreads (adm/report/compare.py); nothing when the run has none."""
    if not inputs.comparison:
        return []
    from .compare import render_section

    return [render_section(inputs.comparison, inputs.tradeoff_plots, data_uri)]


def _interval_search_section(inputs: ReportInputs) -> list[str]:
    """The guidance-interval search (adm/report/interval_search.py); nothing unless in the report."""
    if not inputs.interval_search:
        return []
    from .interval_search import render_section

    return [render_section(**inputs.interval_search, data_uri=data_uri)]


def _upsample_section(inputs: ReportInputs) -> list[str]:
    """ADM-G + ADM-U: the upsampled scales beside their base rows (nothing when the stage is off)."""
    if not inputs.upsample:
        return []
    from .upsample_table import section_from_files

    return [section_from_files(**inputs.upsample, data_uri=data_uri)]


def _published_section(inputs: ReportInputs) -> list[str]:
    """Our evaluator on OpenAI's published batches (adm/report/published.py); nothing unless in the report."""
    if not inputs.published:
        return []
    from .published import render_section

    return [render_section(inputs.published)]


def render_report(inputs: ReportInputs) -> str:
    demo = is_demo(inputs.results)
    compare = inputs.compare_paper and not demo
    label = DEMO_BANNER if demo else UNVERIFIED_BANNER if is_unverified(inputs.results) else None
    banner = f'<div class="banner">{html.escape(label)}</div>' if label else ""
    rows = table_rows(inputs.results, compare)
    extra = optional_columns(rows) if rows else []  # FD_DINOv2 where it was measured
    metrics_table = _table_html(header_cells(compare, extra), [row_cells(r, compare, extra) for r in rows], "table1")
    note_html = "".join(f"<p>{html.escape(n)}</p>" for n in notes(inputs.results, compare))
    plots = "\n".join(f'<img class="plot" alt="{html.escape(Path(p).stem)}" src="{data_uri(p)}">' for p in inputs.plots)
    grids = "\n".join(
        f'<figure><img alt="samples at scale {s:g}" src="{data_uri(p)}"><figcaption>scale {s:g}</figcaption></figure>'
        for s, p in sorted(inputs.grids.items())
    )
    metric_names = ", ".join(METRIC_LABELS[m] for m in METRICS)
    body = [
        f"<h1>{html.escape(inputs.title)}</h1>",
        banner,
        "<h2>Table 1: classifier scale sweep</h2>",
        note_html,
        metrics_table,
        f"<h2>Metrics vs scale</h2>{banner}<p>{metric_names} against the classifier scale.</p>",
        plots,
        *_published_section(inputs),
        *_comparison_section(inputs),
        *_interval_search_section(inputs),
        "<h2>Samples per scale</h2><p>The same global sample indices (same seeds and labels) at every scale.</p>",
        f'<div class="grid">{grids}</div>',
        *_upsample_section(inputs),
        "<h2>Training curves</h2>",
        _curve_section(inputs),
        _summary_section(inputs),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(inputs.title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_report(inputs: ReportInputs, out_html: str | Path) -> Path:
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    write_text(out_html, render_report(inputs))  # atomic; a full disk is one line (adm.fileio)
    return out_html
