"""adm/report: Table 1, trend plots, sample grids and report.html from small hand-written inputs.

The metrics JSONs below are plainly test fixtures (made-up numbers in the evaluator's format of
docs/interfaces.md), not results.
"""

from __future__ import annotations

import base64
import csv
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from adm.report import grids, plots, runinfo, table
from adm.report import html as report_html
from adm.report.paper import DEMO_BANNER, PAPER_TABLE1, paper_metrics

SCALES = [0.0, 1.0, 10.0]


def fake_metrics(scale: float, feature_network: str) -> dict:
    """A metrics JSON shaped like the evaluator's output; values are arbitrary fixtures."""
    fid = 6.0 + scale
    values = {
        "fid": fid,
        "sfid": 5.0 + scale,
        "inception_score": 150.0 + 15 * scale,
        "precision": 0.70 + 0.02 * scale,
        "recall": 0.65 - 0.03 * scale,
    }
    return {
        "metrics": values,
        "ci": {k: [v * 0.95, v * 1.05] for k, v in values.items()},
        "n_samples": 16,
        "n_ref": 32,
        "graph_sha256": "0" * 64,
        "feature_network": feature_network,
        "timings": {"features_s": 0.1},
    }


def write_metrics(tmp_path: Path, feature_network: str) -> list[Path]:
    paths = []
    for s in SCALES:
        p = tmp_path / "metrics" / f"scale{s:g}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(fake_metrics(s, feature_network)))
        paths.append(p)
    return paths


def test_paper_table_matches_the_issue():
    assert sorted(PAPER_TABLE1) == [0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0]
    assert paper_metrics(1.0) == {
        "fid": 3.01,
        "sfid": 5.11,
        "inception_score": 253.01,
        "precision": 0.82,
        "recall": 0.59,
    }
    assert paper_metrics(10) == {
        "fid": 12.14,
        "sfid": 15.36,
        "inception_score": 300.28,
        "precision": 0.90,
        "recall": 0.28,
    }
    assert paper_metrics(4.0) is None


def test_scale_from_path():
    assert table.scale_from_path("results/x/metrics/scale7.5.json") == 7.5
    assert table.scale_from_path("scale0.json") == 0.0
    with pytest.raises(ValueError, match="scale"):
        table.scale_from_path("metrics.json")


def test_imagenet_table_compares_with_paper(tmp_path):
    results = table.load_metrics(write_metrics(tmp_path, "inception-v3-2015"))
    assert list(results) == SCALES
    out = [tmp_path / f"table1.{e}" for e in ("csv", "md", "tex")]
    rows = table.write_table1(results, *out, compare_paper=True)
    assert [r["scale"] for r in rows] == SCALES
    assert rows[1]["paper_fid"] == 3.01
    assert rows[1]["diff_fid"] == pytest.approx(7.0 - 3.01)
    with open(out[0]) as f:
        data = list(csv.DictReader(line for line in f if not line.startswith("#")))
    assert [float(r["scale"]) for r in data] == SCALES
    assert float(data[2]["fid_ci_hi"]) == pytest.approx(16.0 * 1.05)
    md = out[1].read_text()
    assert "FID (paper)" in md and "ΔFID" in md and "3.01" in md and "+3.99" in md
    assert "[6.65, 7.35]" in md  # CI of scale 1 FID
    assert DEMO_BANNER not in md
    tex = out[2].read_text()
    assert r"\begin{tabular}" in tex and tex.count(r"\\") >= len(SCALES) + 1


def test_demo_table_has_banner_and_no_paper_columns(tmp_path):
    results = table.load_metrics(write_metrics(tmp_path, "demo"))
    out = [tmp_path / f"table1.{e}" for e in ("csv", "md", "tex")]
    rows = table.write_table1(results, *out, compare_paper=True)  # demo wins over compare_paper
    assert "paper_fid" not in rows[0]
    for path in out:
        text = path.read_text()
        assert DEMO_BANNER in text.replace("---", "—"), path
        assert "paper)" not in text
    assert "no comparison" in out[1].read_text()


def test_load_metrics_rejects_non_evaluator_json(tmp_path):
    p = tmp_path / "scale1.json"
    p.write_text("{}")
    with pytest.raises(ValueError, match="metrics"):
        table.load_metrics([p])


@pytest.mark.parametrize("feature_network,compare", [("demo", False), ("inception-v3-2015", True)])
def test_trend_plots_written(tmp_path, feature_network, compare):
    results = table.load_metrics(write_metrics(tmp_path, feature_network))
    written = plots.write_trend_plots(results, tmp_path / "plots", compare_paper=compare)
    names = sorted(p.name for p in written)
    assert names == sorted(
        f"{n}.{e}" for n in ("fid_sfid", "inception_score", "precision_recall") for e in ("png", "svg")
    )
    for p in written:
        assert p.stat().st_size > 1000
    svg = (tmp_path / "plots" / "fid_sfid.svg").read_text()
    assert ("demo feature network" in svg) == (feature_network == "demo")
    assert ("Dhariwal" in svg) == compare  # the overlay's title


def fake_samples(path: Path, n: int, reverse: bool) -> None:
    """Shard-merged sample npz whose pixels encode the global index (so order is checkable)."""
    idx = np.arange(n)[::-1] if reverse else np.arange(n)
    images = np.broadcast_to(idx[:, None, None, None].astype(np.uint8), (n, 8, 8, 3)).copy()
    np.savez(path, arr_0=images, arr_1=idx % 10, indices=idx)


def test_grid_uses_the_smallest_global_indices(tmp_path):
    fake_samples(tmp_path / "a.npz", 20, reverse=True)
    images, labels, indices = grids.select_first(tmp_path / "a.npz", 6)
    assert indices.tolist() == [0, 1, 2, 3, 4, 5]
    assert images[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 5]
    out = grids.write_grid(tmp_path / "a.npz", tmp_path / "g.png", num=6, columns=3, tile_px=16)
    from PIL import Image

    img = Image.open(out)
    assert img.size == (3 * 16 + 4 * 2, 2 * 16 + 3 * 2)


def test_read_benchmarks_and_gpu_hours(tmp_path):
    head = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    (tmp_path / "sample").mkdir()
    for k, s in enumerate([30.0, 90.0]):
        (tmp_path / "sample" / f"scale0_shard{k}.tsv").write_text(
            head + f"{s}\t0:00:{int(s)}\t100\t1\t1\t1\t0\t0\t1\t1\n"
        )
    (tmp_path / "train_diffusion.tsv").write_text(head + "3600\t1:00:00\t-\t-\t-\t-\t-\t-\t-\t-\n")
    bench = runinfo.read_benchmarks(tmp_path)
    assert bench["sample"]["jobs"] == 2 and bench["sample"]["wall_s"] == 120.0
    assert bench["train_diffusion"]["wall_s"] == 3600.0
    assert runinfo.gpu_hours(bench, {"sample": 1, "train_diffusion": 8}) == pytest.approx(8 + 120 / 3600)
    assert runinfo.format_seconds(3725) == "1h 02m 05s"
    assert runinfo.elapsed_seconds(bench) >= 3600.0


def test_training_curves_are_read_by_the_trainers_column_names(tmp_path):
    """The report reads the columns adm.training.log defines, as the trainers write them."""
    from adm.training.log import (
        CLASSIFIER_COLUMNS,
        CLASSIFIER_CURVES,
        DIFFUSION_COLUMNS,
        DIFFUSION_CURVES,
        CSVLog,
    )

    log = CSVLog(tmp_path / "d.csv", DIFFUSION_COLUMNS, resume_step=None)
    log.write({"step": 50, "loss": 1.0, "mse": 0.9, "vb": 0.1, "loss_q0": 7.0, "lr": 0.1})
    log.write({"step": 100, "loss": 0.5, "mse": 0.45, "vb": 0.05, "loss_q0": 3.0, "lr": 0.1})
    cols = report_html.read_training_curves(tmp_path / "d.csv", DIFFUSION_CURVES)
    assert cols == {
        DIFFUSION_CURVES["loss"]: ([50.0, 100.0], [1.0, 0.5]),
        DIFFUSION_CURVES["mse"]: ([50.0, 100.0], [0.9, 0.45]),
        DIFFUSION_CURVES["vb"]: ([50.0, 100.0], [0.1, 0.05]),
    }
    log = CSVLog(tmp_path / "c.csv", CLASSIFIER_COLUMNS, resume_step=None)
    log.write({"step": 1, "acc@1": 0.1})
    log.write({"step": 2, "acc@1": 0.2, "heldout_acc@1": 0.3, "heldout_clean_acc@1": 0.4})
    cols = report_html.read_training_curves(tmp_path / "c.csv", CLASSIFIER_CURVES)
    assert cols[CLASSIFIER_CURVES["heldout_acc@1"]] == ([2.0], [0.3])  # empty cells skipped
    assert cols[CLASSIFIER_CURVES["acc@1"]] == ([1.0, 2.0], [0.1, 0.2])
    assert set(CLASSIFIER_CURVES) <= set(CLASSIFIER_COLUMNS) and set(DIFFUSION_CURVES) <= set(DIFFUSION_COLUMNS)


class _Structure(HTMLParser):
    """Collects tables (as lists of cell texts) and <img> sources."""

    def __init__(self):
        super().__init__()
        self.tables, self.images, self._cell = [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append({"class": attrs.get("class"), "cells": []})
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.images.append(attrs["src"])

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["cells"].append(self._cell.strip())
            self._cell = None


def build_report(tmp_path: Path, feature_network: str, compare: bool, published=None) -> tuple[str, _Structure]:
    results = table.load_metrics(write_metrics(tmp_path, feature_network))
    plot_paths = [p for p in plots.write_trend_plots(results, tmp_path / "plots", compare) if p.suffix == ".png"]
    grid_paths = {}
    for s in SCALES:
        fake_samples(tmp_path / f"scale{s:g}.npz", 8, reverse=False)
        grid_paths[s] = grids.write_grid(
            tmp_path / f"scale{s:g}.npz", tmp_path / f"grids/scale{s:g}.png", num=4, columns=2
        )
    (tmp_path / "dlog.csv").write_text("step,loss,mse,vb\n0,1.0,0.9,0.1\n50,0.4,0.35,0.05\n")
    (tmp_path / "clog.csv").write_text("step,loss,acc@1,heldout_acc@1\n0,2.3,0.1,0.1\n50,1.0,0.6,0.55\n")
    inputs = report_html.ReportInputs(
        results=results,
        compare_paper=compare,
        plots=plot_paths,
        grids=grid_paths,
        config={"run": "t", "sampling": {"scales": SCALES}},
        title="test report",
        diffusion_log=tmp_path / "dlog.csv",
        classifier_log=tmp_path / "clog.csv",
        bench_dir=tmp_path / "no-benchmarks",
        repo=tmp_path,
        published=published,
    )
    out = report_html.write_report(inputs, tmp_path / "report.html")
    text = out.read_text()
    parser = _Structure()
    parser.feed(text)
    return text, parser


@pytest.mark.parametrize("feature_network,compare", [("demo", False), ("inception-v3-2015", True)])
def test_report_structure(tmp_path, feature_network, compare):
    text, parsed = build_report(tmp_path, feature_network, compare)
    table1 = next(t for t in parsed.tables if t["class"] == "table1")
    first_column = [c for c in table1["cells"] if re.fullmatch(r"\d+(\.\d+)?", c)]
    for s in SCALES:
        assert f"{s:g}" in first_column
    assert ("FID (paper)" in table1["cells"]) == compare
    assert (DEMO_BANNER in text) == (feature_network == "demo")
    # 3 trend plots + a grid per scale + training curves, all embedded: nothing is fetched
    assert len(parsed.images) == 3 + len(SCALES) + 1
    for src in parsed.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"""(src|href)=["']?(https?:|file:|/)""", text)
    for s in SCALES:
        assert f"scale {s:g}" in text
    assert "Run summary" in text and "git commit" in text and "Training curves" in text


def test_report_shows_the_published_check_only_when_given(tmp_path):
    """published.csv (the published-samples check, when in the report) becomes its own section,
    labelled by its feature graph; a run without it has no such section."""
    from adm.report import published
    from adm.report.paper import UNVERIFIED_BANNER

    text, _ = build_report(tmp_path, "inception-v3-2015", True)
    assert "published sample batches" not in text
    csv_path = tmp_path / "published.csv"
    row = published.unpublished_rows(
        "biggan_deep_trunc1_imagenet128", {"fid": 7.5}, ["fid"], "unverified feature graph"
    )
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=published.FIELDS)
        writer.writeheader()
        writer.writerows(row)
    text, parsed = build_report(tmp_path, "inception-v3-2015", True, published=csv_path)
    section = text.split("published sample batches</h2>", 1)[1]
    assert section.split("</table>", 1)[0].count(UNVERIFIED_BANNER) == 1
    cells = next(t for t in parsed.tables if t["class"] == "published")["cells"]
    assert cells[-8:] == ["biggan_deep_trunc1_imagenet128", "—", "FID", "—", "7.5", "–", "–", "not published"]


def test_report_library_imports_neither_torch_nor_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys, adm.report.html, adm.report.plots, adm.report.grids, adm.report.table; "
        "print(sorted(m for m in ('torch', 'tensorflow', 'snakemake') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("pinned", [True, False])
def test_report_labels_unpinned_fd_dinov2(tmp_path, pinned):
    """report.html's Table 1 section says "unverified DINOv2 weights" (with the reason) when the FD
    records' weights were not pinned by sha256 in the config, and says nothing more when they were."""
    import html

    from adm.report.paper import DINOV2_UNVERIFIED_REASON

    results = table.load_metrics(write_metrics(tmp_path, "inception-v3-2015"))
    paths = []
    for s in results:
        paths.append(tmp_path / f"fd_dinov2_scale{s:g}.json")
        record = {"metrics": {"fd_dinov2": 100.0 + s}, "ci": {"fd_dinov2": None}, "weights_pinned": pinned}
        paths[-1].write_text(json.dumps(record))
    table.add_fd_dinov2(results, paths)
    page = report_html.render_report(
        report_html.ReportInputs(results=results, compare_paper=True, plots=[], grids={}, config={}, repo=tmp_path)
    )
    assert "FD_DINOv2" in page
    assert (html.escape(DINOV2_UNVERIFIED_REASON) in page) != pinned
