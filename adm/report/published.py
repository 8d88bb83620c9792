"""OpenAI's published sample batches beside our evaluation of them: is our evaluator OpenAI's?

OpenAI released the sample batches behind the paper's tables next to the reference batches
(guided-diffusion `evaluations/README.md`, files under `.../jul-2021/ref_batches/imagenet/<res>/`).
For each batch this module holds every published value with its source — the paper's Table 1
scale sweep, the paper's summary table, OpenAI's README table and, for the 256x256 batch, the
README's printed evaluator output — and compares our metrics with each at the digits it was
published with. Sources disagree in places (ADM-G 128 is sFID 4.69 / recall 0.61 in the sweep,
5.09 / 0.59 in the summary table and the README), so the table says which source the released
batch matches.

Verdict at the published digits: a value printed with d decimals matches when ours rounds to it,
i.e. |ours − published| ≤ ½·10^−d (plus float slack). The README's printed output has 16-digit
values that another CPU's float kernels cannot reproduce to the last digit, so those are judged
at `PRINTED_SIGNIFICANT` significant digits and the table also states how many digits agree.
Values no one published (a batch without published numbers; FD_DINOv2, when measured) are rows of
their own with verdict "not published". published.csv carries each row's feature network, so
report.html's section (render_section) is built from the CSV alone, with the same label as the
Markdown. Torch-free (the report rules import it).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass

from adm.report.paper import (
    DEMO_BANNER,
    DINOV2_UNVERIFIED,
    DINOV2_UNVERIFIED_REASON,
    INCEPTION_FEATURES,
    METRIC_LABELS,
    METRICS,
    PAPER_TABLE1,
    UNVERIFIED_BANNER,
)

BASE_URL = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet/"
PRINTED_SIGNIFICANT = 4  # digits at which a 16-digit printed value must agree


@dataclass(frozen=True)
class Source:
    name: str  # where the numbers were published
    values: dict[str, str]  # metric -> the published text (its digits are the precision)
    printed: bool = False  # an evaluator's printed output (judged at PRINTED_SIGNIFICANT digits)


@dataclass(frozen=True)
class Batch:
    file: str  # path under BASE_URL
    reference: str  # the reference batch it is evaluated against, under BASE_URL
    resolution: int
    title: str
    sources: tuple[Source, ...]


def _table1_row(scale: float) -> dict[str, str]:
    return {m: f"{v:.2f}" for m, v in zip(METRICS, PAPER_TABLE1[scale])}


REF128 = "128/VIRTUAL_imagenet128_labeled.npz"
README = "OpenAI README (evaluations table)"
SUMMARY = "paper, ImageNet 128x128 summary table"

# name -> the batch and every published value for it. Values as published, as text.
CATALOGUE: dict[str, Batch] = {
    "admnet_imagenet128": Batch(
        "128/admnet_imagenet128.npz",
        REF128,
        128,
        "ADM (conditional, unguided) = Table 1 scale 0",
        (
            Source("paper Table 1, scale 0", _table1_row(0.0)),
            Source(README, {"fid": "5.91", "sfid": "5.09", "precision": "0.70", "recall": "0.65"}),
        ),
    ),
    "admnet_guided_imagenet128": Batch(
        "128/admnet_guided_imagenet128.npz",
        REF128,
        128,
        "ADM-G (classifier scale 0.5 per the sweep's best FID)",
        (
            Source("paper Table 1, scale 0.5", _table1_row(0.5)),
            Source("paper Table 1, scale 1.0", _table1_row(1.0)),
            Source(SUMMARY, {"fid": "2.97", "sfid": "5.09", "precision": "0.78", "recall": "0.59"}),
            Source(README, {"fid": "2.97", "sfid": "5.09", "precision": "0.78", "recall": "0.59"}),
        ),
    ),
    "admnet_guided_25step_imagenet128": Batch(
        "128/admnet_guided_25step_imagenet128.npz",
        REF128,
        128,
        "ADM-G, 25 DDIM steps",
        (Source(README, {"fid": "5.98", "sfid": "7.04", "precision": "0.78", "recall": "0.51"}),),
    ),
    "biggan_deep_trunc1_imagenet128": Batch(
        "128/biggan_deep_trunc1_imagenet128.npz",
        REF128,
        128,
        "BigGAN-deep, truncation 1.0 (the baseline; no published value restated here)",
        (),
    ),
    "admnet_guided_upsampled_imagenet256": Batch(
        "256/admnet_guided_upsampled_imagenet256.npz",
        "256/VIRTUAL_imagenet256_labeled.npz",
        256,
        "ADM-G + ADM-U, 256x256",
        (
            Source(
                "OpenAI README (printed evaluator output)",
                {
                    "inception_score": "215.8370361328125",
                    "fid": "3.9425574129223264",
                    "sfid": "6.140433703346162",
                    "precision": "0.8265",
                    "recall": "0.5309",
                },
                printed=True,
            ),
        ),
    ),
    "admnet_guided_upsampled_imagenet512": Batch(
        "512/admnet_guided_upsampled_imagenet512.npz",
        "512/VIRTUAL_imagenet512.npz",
        512,
        "ADM-G + ADM-U, 512x512",
        (Source("paper Table 4 (FID only)", {"fid": "3.85"}),),
    ),
}
DEFAULT_BATCHES = ("admnet_imagenet128", "admnet_guided_imagenet128")


class PublishedMismatch(ValueError):
    """Our value differs from a required published value beyond its published digits."""


def decimals(text: str) -> int:
    return len(text.split(".", 1)[1]) if "." in text else 0


def tolerance(text: str, printed: bool) -> float:
    """Half a unit of the last published digit (printed output: of the PRINTED_SIGNIFICANT-th)."""
    value = float(text)
    if printed and value != 0:
        exponent = math.floor(math.log10(abs(value))) - (PRINTED_SIGNIFICANT - 1)
        return 0.5 * 10.0**exponent
    return 0.5 * 10.0 ** -decimals(text)


def agreeing_digits(ours: float, published: float) -> int:
    """How many significant digits of `published` ours reproduces (0..17)."""
    if ours == published:
        return 17
    if published == 0:
        return 0
    lead = math.floor(math.log10(abs(published)))
    return max(0, min(17, lead - math.floor(math.log10(abs(ours - published)))))


def compare(name: str, ours: dict[str, float], sources: tuple[Source, ...]) -> list[dict]:
    """One row per (source, metric): published, ours, difference, verdict."""
    rows = []
    for source in sources:
        for metric in METRICS:
            if metric not in source.values:
                continue
            text = source.values[metric]
            diff = ours[metric] - float(text)
            ok = abs(diff) <= tolerance(text, source.printed) * (1 + 1e-9) + 1e-12
            rows.append(
                {
                    "batch": name,
                    "source": source.name,
                    "metric": metric,
                    "published": text,
                    "ours": ours[metric],
                    "difference": diff,
                    "digits": agreeing_digits(ours[metric], float(text)),
                    "verdict": "match" if ok else "differs",
                }
            )
    return rows


def sources_for(name: str, expected: dict[str, dict[str, float]] | None = None) -> tuple[Source, ...]:
    """The catalogue's sources for a batch, or — when the config gives `expected` values for it
    (a rehearsal on stand-in files, or a user's own numbers) — those alone, labelled so."""
    if expected and name in expected:
        return (Source("expected (config)", {k: str(v) for k, v in expected[name].items()}),)
    return CATALOGUE[name].sources if name in CATALOGUE else ()


def verdict_lines(rows: list[dict]) -> list[str]:
    """Per batch: the sources whose every value ours matches ('matches: ...'), or none."""
    out = []
    for batch in dict.fromkeys(r["batch"] for r in rows):
        by_source: dict[str, bool] = {}
        for r in rows:
            if r["batch"] == batch:
                by_source[r["source"]] = by_source.get(r["source"], True) and r["verdict"] == "match"
        matched = [s for s, ok in by_source.items() if ok]
        out.append(f"{batch}: matches {'; '.join(matched)}" if matched else f"{batch}: matches no published source")
    return out


def first_failure(rows: list[dict]) -> str | None:
    """The one-line error for a batch that matches none of its sources, or None.

    A batch passes when at least one source matches on every metric: the sources disagree with
    each other, so no batch can match all of them."""
    for batch in dict.fromkeys(r["batch"] for r in rows):
        mine = [r for r in rows if r["batch"] == batch]
        if any(all(r["verdict"] == "match" for r in mine if r["source"] == s) for s in {r["source"] for r in mine}):
            continue
        worst = max(mine, key=lambda r: abs(r["difference"]) / tolerance(r["published"], False))
        return (
            f"{batch}: {METRIC_LABELS[worst['metric']]} published {worst['published']} ({worst['source']}), "
            f"ours {worst['ours']:.6g}: outside the published digits"
        )
    return None


FIELDS = ["batch", "source", "metric", "published", "ours", "difference", "digits", "verdict", "feature_network"]
EXPECTED_NOTE = (
    "expected (config): values the run's config gives (published.expected), e.g. what a rehearsal on "
    "stand-in files computed before; not OpenAI's published numbers."
)
FD_DINOV2_NOTE = (
    "FD_DINOv2 (DINOv2 ViT-L/14 features, Stein et al. 2023): ours only; neither the paper nor OpenAI "
    "published it for these batches."
)


def label_for(networks: set) -> str:
    """The banner a table of these feature networks carries ("" for the pinned Inception-V3 alone)."""
    if networks == {INCEPTION_FEATURES}:
        return ""
    return DEMO_BANNER if networks == {"demo"} else UNVERIFIED_BANNER


def unpublished_rows(name: str, ours: dict[str, float], metrics, network) -> list[dict]:
    """Rows of our values with no published value beside them (verdict "not published")."""
    return [
        {
            "batch": name,
            "source": "",
            "metric": m,
            "published": "",
            "ours": ours[m],
            "difference": "",
            "digits": "",
            "verdict": "not published",
            "feature_network": network,
        }
        for m in metrics
    ]


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric) or {"fd_dinov2": "FD_DINOv2"}[metric]


def fd_network(doc: dict) -> str | None:
    """An FD_DINOv2 row's feature_network: the features' network where the config pinned the
    weights' sha256 (the record's weights_pinned), else the unverified-weights label."""
    return doc.get("feature_network") if doc.get("weights_pinned") is True else DINOV2_UNVERIFIED


def notes(rows: list[dict]) -> tuple[str, list[str]]:
    """The table's label (its feature network's banner, or "") and the lines under it: how verdicts
    are judged, what the sources mean."""
    label = label_for({r["feature_network"] for r in rows if r["metric"] in METRICS})
    lines = [
        "Verdict at the published digits: a value with d decimals matches when ours is within ½·10^−d; "
        f"a printed evaluator output at {PRINTED_SIGNIFICANT} significant digits (`digits`: how many agree)."
    ]
    if any(r["source"] == "expected (config)" for r in rows):
        lines.append(EXPECTED_NOTE)
    if any(r["metric"] == "fd_dinov2" for r in rows):
        lines.append(FD_DINOV2_NOTE)
    if any(r["metric"] == "fd_dinov2" and r["feature_network"] == DINOV2_UNVERIFIED for r in rows):
        lines.append(DINOV2_UNVERIFIED_REASON)
    return label, lines


def display_cells(r: dict) -> list[str]:
    """One row as the Markdown and HTML tables show it (— where nothing was published)."""
    published = r["published"] != ""
    return [
        r["batch"],
        r["source"] or "—",
        metric_label(r["metric"]) + (f" ({DINOV2_UNVERIFIED})" if r["feature_network"] == DINOV2_UNVERIFIED else ""),
        r["published"] if published else "—",
        f"{float(r['ours']):.6g}",
        f"{float(r['difference']):+.3g}" if published else "–",
        str(r["digits"]) if published else "–",
        r["verdict"],
    ]


HEAD = ["batch", "source", "metric", "published", "ours", "difference", "digits", "verdict"]


def _render(rows: list[dict], unpublished: list[dict], extra: list[dict]) -> dict[str, str]:
    """published.csv (every row) and published.md (the label, the table, the verdicts) as text.
    `rows`: compared values; `unpublished`: the values of batches with no published value (one
    Markdown row per batch); `extra`: metrics no one published (FD_DINOv2), a row per batch."""
    import io

    every = rows + unpublished + extra
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in every:
        writer.writerow(
            {**r, "ours": repr(r["ours"]), "difference": "" if r["difference"] == "" else repr(r["difference"])}
        )
    label, head = notes(every)
    lines = ["# Our evaluator on OpenAI's published sample batches", ""]
    if label:
        lines += [f"**{label}**", ""]
    lines += [*head, "", "| " + " | ".join(HEAD) + " |", "|:---|:---|:---|---:|---:|---:|---:|:---|"]
    lines += ["| " + " | ".join(display_cells(r)) + " |" for r in rows]
    for name in dict.fromkeys(r["batch"] for r in unpublished):
        values = ", ".join(f"{METRIC_LABELS[r['metric']]} {r['ours']:.4g}" for r in unpublished if r["batch"] == name)
        lines.append(f"| {name} | (no published value restated here) | all | – | {values} | – | – | – |")
    lines += ["| " + " | ".join(display_cells(r)) + " |" for r in extra]
    lines += ["", *(f"- {v}" for v in verdict_lines(rows))]
    return {"md": "\n".join(lines) + "\n", "csv": buf.getvalue()}


def read_fd_dinov2(paths) -> dict[str, dict]:
    """{batch: FD_DINOv2 record} from published/fd_dinov2/<batch>.json files."""
    import json
    from pathlib import Path

    records = {}
    for path in paths:
        with open(path) as f:
            records[Path(path).stem] = json.load(f)
    return records


def check_published(metrics_files, batches, expected, fail: bool, md_path, csv_path, fd_dinov2_files=()) -> int:
    """The table job: read each batch's metrics JSON (and FD_DINOv2 record, when measured),
    compare, write both files (atomically), and return 1 with one line on stderr when a batch
    matches none of its sources (and `fail`)."""
    import json
    import sys
    from pathlib import Path

    from adm.fileio import atomic_write

    fd = read_fd_dinov2(fd_dinov2_files)
    rows, unpublished, extra = [], [], []
    for name, path in zip(batches, metrics_files):
        with open(path) as f:
            record = json.load(f)
        network = record.get("feature_network")
        sources = sources_for(name, expected)
        if sources:
            rows += [{**r, "feature_network": network} for r in compare(name, record["metrics"], sources)]
        else:
            unpublished += unpublished_rows(name, record["metrics"], METRICS, network)
        if name in fd:
            doc = fd[name]
            extra += unpublished_rows(name, doc["metrics"], ["fd_dinov2"], fd_network(doc))
    text = _render(rows, unpublished, extra)
    for path, kind in ((md_path, "md"), (csv_path, "csv")):
        atomic_write(path, lambda f, t=text[kind]: f.write(t), binary=False)
    problem = first_failure(rows)
    if problem and fail:
        print(f"error: {problem}", file=sys.stderr)
        for path in (md_path, csv_path):  # no half-published verdict behind a failed job
            Path(path).unlink(missing_ok=True)
        return 1
    return 0


def read_published_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def render_section(published_csv) -> str:
    """report.html's section: published.csv as a table, its label, notes and per-batch verdicts."""
    import html

    rows = read_published_csv(published_csv)
    label, lines = notes(rows)
    banner = f'<div class="banner">{html.escape(label)}</div>' if label else ""
    compared = [r for r in rows if r["verdict"] in ("match", "differs")]
    table = ['<table class="published"><thead><tr>' + "".join(f"<th>{h}</th>" for h in HEAD) + "</tr></thead><tbody>"]
    table += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in display_cells(r)) + "</tr>" for r in rows]
    table.append("</tbody></table>")
    verdicts = "".join(f"<li>{html.escape(v)}</li>" for v in verdict_lines(compared))
    return "\n".join(
        [
            "<h2>Our evaluator on OpenAI's published sample batches</h2>",
            banner,
            '<p class="caption">' + "<br>".join(html.escape(n) for n in lines) + "</p>",
            "\n".join(table),
            f"<ul>{verdicts}</ul>",
        ]
    )
