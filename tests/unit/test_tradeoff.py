"""Trade-off plots (adm/report/tradeoff.py) from small synthetic metrics docs: the four files,
points joined in scale order and labelled by scale, error bars only where a spread is given, the
paper's curve only when asked (and never on the demo feature network); with FD_DINOv2, the FID and
FD_DINOv2 vs scale figure as two more files, the four others unchanged, its title naming unpinned
DINOv2 weights.

Mutants tried: the FD_DINOv2 plot's title without the unverified-weights label fails
test_fd_dinov2_plot_names_unpinned_weights."""

import subprocess
import sys
from pathlib import Path

import pytest

from adm.report.paper import DEMO_BANNER, DINOV2_UNVERIFIED, PAPER_TABLE1, UNVERIFIED_BANNER
from adm.report.tradeoff import PAPER_LABEL, curve_points, scale_figure, tradeoff_figure, write_tradeoff_plots

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


# FD_DINOv2 per point (arm, scale), in the order of _curves(): classifier 4, 0, 1; classifier-free 0.5, 2
FD = {"classifier": {4.0: 300.0, 0.0: 250.0, 1.0: 180.0}, "classifier-free": {0.5: 150.0, 2.0: 170.0}}


def _fd_curves(net="inception-v3-2015", pinned=True):
    curves = _curves(net)
    for arm, points in curves.items():
        for scale, doc in points.items():
            doc["metrics"]["fd_dinov2"] = FD[arm][scale]
            doc["fd_dinov2_pinned"] = pinned  # the config pinned the weights' sha256 and they match
    curves["classifier-free"][2.0]["spread"]["fd_dinov2"] = 4.0
    return curves


def test_fd_dinov2_plot_is_written_only_with_the_metric(tmp_path):
    plain = write_tradeoff_plots(_curves(), tmp_path / "plain", compare_paper=True)
    paths = write_tradeoff_plots(_fd_curves(), tmp_path / "fd", compare_paper=True)
    assert [p.name for p in paths] == [p.name for p in plain] + ["tradeoff_fd_dinov2.png", "tradeoff_fd_dinov2.svg"]
    assert not (tmp_path / "plain" / "tradeoff_fd_dinov2.svg").exists()
    for p in plain:  # the two trade-off plots are the same bytes with or without FD_DINOv2
        assert (tmp_path / "fd" / p.name).read_bytes() == p.read_bytes(), p.name
    svg = (tmp_path / "fd" / "tradeoff_fd_dinov2.svg").read_text()
    assert "FD_DINOv2" in svg and "guidance scale" in svg and PAPER_LABEL in svg


@pytest.mark.parametrize("pinned", [True, False])
def test_fd_dinov2_plot_names_unpinned_weights(tmp_path, pinned):
    """Only the FD_DINOv2 plot's title says "unverified DINOv2 weights", and only when unpinned."""
    write_tradeoff_plots(_fd_curves(pinned=pinned), tmp_path, compare_paper=True)
    assert (DINOV2_UNVERIFIED in (tmp_path / "tradeoff_fd_dinov2.svg").read_text()) != pinned
    assert DINOV2_UNVERIFIED not in (tmp_path / "tradeoff_fid_is.svg").read_text()


def test_fd_dinov2_figure_has_a_line_per_arm_against_the_scale():
    """Two panels, FID and FD_DINOv2 against the scale; in each a line per arm through its points in
    scale order, an sd bar where the point has a spread; the paper's FID only in the FID panel."""
    fig = scale_figure(_fd_curves(), ("fid", "fd_dinov2"), "t", overlay_paper=True)
    fid_ax, fd_ax = fig.axes
    assert fid_ax.get_ylabel() == "FID" and fd_ax.get_ylabel() == "FD_DINOv2"
    for ax, metric in ((fid_ax, "fid"), (fd_ax, "fd_dinov2")):
        lines = {c.get_label(): c.lines[0] for c in ax.containers}
        assert list(lines) == ["classifier", "classifier-free"]
        for arm, points in _fd_curves().items():
            assert list(lines[arm].get_xdata()) == sorted(points)
            assert list(lines[arm].get_ydata()) == [points[s]["metrics"][metric] for s in sorted(points)]
    bars = {c.get_label(): c for c in fd_ax.containers}
    assert bars["classifier-free"].has_yerr and not bars["classifier"].has_yerr
    paper = [line for line in fid_ax.lines if line.get_label() == PAPER_LABEL]
    assert len(paper) == 1 and list(paper[0].get_xdata()) == sorted(PAPER_TABLE1)
    assert list(paper[0].get_ydata()) == [row[0] for _, row in sorted(PAPER_TABLE1.items())]
    assert not [line for line in fd_ax.lines if line.get_label() == PAPER_LABEL]


def test_fd_dinov2_plot_names_an_unverified_graph(tmp_path):
    write_tradeoff_plots(_fd_curves(net="unverified feature graph"), tmp_path, compare_paper=False)
    assert UNVERIFIED_BANNER in (tmp_path / "tradeoff_fd_dinov2.svg").read_text()
