"""Trade-off plots (adm/report/tradeoff.py) from small synthetic metrics docs: the four files,
points joined in scale order and labelled by scale, error bars only where a spread is given, the
paper's curve only when asked (and never on the demo feature network)."""

import subprocess
import sys
from pathlib import Path

import pytest

from adm.report.paper import DEMO_BANNER, PAPER_TABLE1, UNVERIFIED_BANNER
from adm.report.tradeoff import PAPER_LABEL, curve_points, tradeoff_figure, write_tradeoff_plots

REPO = Path(__file__).resolve().parents[2]


def _doc(fid, is_, prec, rec, net="inception-v3-2015", spread=None):
    d = {
        "metrics": {"fid": fid, "sfid": fid + 1, "inception_score": is_, "precision": prec, "recall": rec},
        "feature_network": net,
    }
    if spread:
        d["spread"] = spread
    return d


def _curves(net="inception-v3-2015"):
    # scales given out of order on purpose: the curve must still run 0 -> 1 -> 4
    return {
        "classifier": {
            4.0: _doc(9.0, 290.0, 0.90, 0.40, net),
            0.0: _doc(6.0, 160.0, 0.70, 0.65, net),
            1.0: _doc(3.0, 250.0, 0.82, 0.59, net),
        },
        "classifier-free": {
            0.5: _doc(2.5, 230.0, 0.80, 0.60, net, spread={"precision": 0.01, "recall": 0.02}),
            2.0: _doc(4.0, 270.0, 0.86, 0.52, net, spread={"precision": 0.015, "recall": 0.01}),
        },
    }


def test_four_files_are_written_and_returned(tmp_path):
    paths = write_tradeoff_plots(_curves(), tmp_path / "plots", compare_paper=False)
    names = sorted(p.name for p in paths)
    assert names == ["tradeoff_fid_is.png", "tradeoff_fid_is.svg", "tradeoff_pr.png", "tradeoff_pr.svg"]
    for p in paths:
        assert p.is_file() and p.stat().st_size > 1000
        head = p.read_bytes()[:8]
        assert head.startswith(b"\x89PNG") if p.suffix == ".png" else b"<svg" in p.read_bytes()[:2000]


def test_points_run_in_scale_order_with_their_scale_labels():
    rows = curve_points(_curves()["classifier"], "recall", "precision")
    assert [r[0] for r in rows] == [0.0, 1.0, 4.0]
    fig = tradeoff_figure(_curves(), "recall", "precision", "t", overlay_paper=False)
    ax = fig.axes[0]
    data = {c.get_label(): c.lines[0] for c in ax.containers}["classifier"]  # the errorbar's data line
    assert list(data.get_xdata()) == [0.65, 0.59, 0.40]  # recall at s = 0, 1, 4
    assert list(data.get_ydata()) == [0.70, 0.82, 0.90]
    labels = [t.get_text() for t in ax.texts]
    assert labels == ["0", "1", "4", "0.5", "2"]  # every point carries its scale, per arm in order


def test_error_bars_only_where_a_spread_is_given():
    fig = tradeoff_figure(_curves(), "recall", "precision", "t", overlay_paper=False)
    bars = {c.get_label(): c for c in fig.axes[0].containers}
    assert not bars["classifier"].has_yerr and not bars["classifier"].has_xerr
    assert bars["classifier-free"].has_yerr and bars["classifier-free"].has_xerr
    # the bar half-length is the sd: the y bar of the first cfg point spans precision +- 0.01
    segments = bars["classifier-free"].lines[2][-1].get_segments()
    assert abs(segments[0][1][1] - segments[0][0][1] - 0.02) < 1e-9


def test_paper_overlay_only_when_asked(tmp_path):
    write_tradeoff_plots(_curves(), tmp_path / "no", compare_paper=False)
    write_tradeoff_plots(_curves(), tmp_path / "yes", compare_paper=True)
    assert PAPER_LABEL not in (tmp_path / "no" / "tradeoff_pr.svg").read_text()
    assert PAPER_LABEL in (tmp_path / "yes" / "tradeoff_pr.svg").read_text()
    fig = tradeoff_figure(_curves(), "inception_score", "fid", "t", overlay_paper=True)
    paper = [line for line in fig.axes[0].lines if line.get_label() == PAPER_LABEL][0]
    assert list(paper.get_xdata()) == [row[2] for _, row in sorted(PAPER_TABLE1.items())]  # IS, scale order
    assert list(paper.get_ydata()) == [row[0] for _, row in sorted(PAPER_TABLE1.items())]  # FID


def test_demo_network_gets_its_banner_and_no_overlay(tmp_path):
    write_tradeoff_plots(_curves(net="demo"), tmp_path, compare_paper=True)
    svg = (tmp_path / "tradeoff_fid_is.svg").read_text()
    assert DEMO_BANNER in svg and PAPER_LABEL not in svg


def test_unverified_graph_is_named(tmp_path):
    write_tradeoff_plots(_curves(net="unverified feature graph"), tmp_path, compare_paper=False)
    assert UNVERIFIED_BANNER in (tmp_path / "tradeoff_pr.svg").read_text()


def test_svg_bytes_are_reproducible(tmp_path):
    write_tradeoff_plots(_curves(), tmp_path / "a", compare_paper=True)
    write_tradeoff_plots(_curves(), tmp_path / "b", compare_paper=True)
    assert (tmp_path / "a" / "tradeoff_pr.svg").read_bytes() == (tmp_path / "b" / "tradeoff_pr.svg").read_bytes()


def test_missing_metrics_are_skipped_and_no_points_is_an_error(tmp_path):
    curves = _curves()
    curves["classifier"][1.0]["metrics"]["precision"] = None
    assert [r[0] for r in curve_points(curves["classifier"], "recall", "precision")] == [0.0, 4.0]
    write_tradeoff_plots(curves, tmp_path, compare_paper=False)
    with pytest.raises(ValueError, match="no trade-off points"):
        write_tradeoff_plots({"classifier": {}}, tmp_path, compare_paper=False)


def test_module_imports_no_torch():
    code = "import sys, adm.report.tradeoff; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
