"""Table 1 gains an FD_DINOv2 column only where every scale has an FD_DINOv2 record, labelled
"unverified DINOv2 weights" in every rendering unless the records' weights are pinned.

Mutants tried: notes() without the unverified-weights line fails
test_unpinned_weights_are_labelled_in_every_rendering."""

from __future__ import annotations

import json

import pytest

from adm.report.table import add_fd_dinov2, write_table1


def _metrics(scale):
    return {
        "metrics": {"fid": 5.0 + scale, "sfid": 5.0, "inception_score": 100.0, "precision": 0.7, "recall": 0.6},
        "ci": {"fid": [4.9, 5.1]},
        "feature_network": "inception-v3-2015",
        "settings": {"bootstrap": 10},
    }


def test_column_only_when_present(tmp_path):
    outs = [tmp_path / f"t.{ext}" for ext in ("csv", "md", "tex")]
    rows = write_table1({0.0: _metrics(0), 1.0: _metrics(1)}, *outs, compare_paper=True)
    assert "fd_dinov2" not in rows[0] and "FD_DINOv2" not in outs[1].read_text()
    fd = []
    for s, v in ((0.0, 210.5), (1.0, 150.25)):
        fd.append(tmp_path / f"fd_dinov2_scale{s:g}.json")
        fd[-1].write_text(json.dumps({"metrics": {"fd_dinov2": v}, "ci": {"fd_dinov2": [v - 1, v + 1]}}))
    results = add_fd_dinov2({0.0: _metrics(0), 1.0: _metrics(1)}, fd)
    rows = write_table1(results, *outs, compare_paper=True)
    md = outs[1].read_text()
    assert rows[1]["fd_dinov2"] == 150.25 and rows[1]["fd_dinov2_ci_lo"] == 149.25
    header = next(line for line in md.splitlines() if line.startswith("| Scale"))
    assert header.endswith("| FD_DINOv2 |") and "150.25 [149.25, 151.25] |" in md
    assert "FD_DINOv2" in outs[2].read_text() and "fd_dinov2" in outs[0].read_text()
    with pytest.raises(ValueError, match="no metrics file"):
        add_fd_dinov2({0.0: _metrics(0)}, fd)


def _fd_records(tmp_path, pinned):
    paths = []
    for s, v in ((0.0, 210.5), (1.0, 150.25)):
        paths.append(tmp_path / f"fd_dinov2_scale{s:g}.json")
        record = {"metrics": {"fd_dinov2": v}, "ci": {"fd_dinov2": [v - 1, v + 1]}, "weights_pinned": pinned}
        paths[-1].write_text(json.dumps(record))
    return paths


@pytest.mark.parametrize("pinned", [True, False])
def test_unpinned_weights_are_labelled_in_every_rendering(tmp_path, pinned):
    """Records of weights with the config's pinned sha256: no label; unpinned: the reason line in
    the CSV's notes, the Markdown's and the LaTeX caption (report.html shows the same notes)."""
    from adm.report.paper import DINOV2_UNVERIFIED_REASON
    from adm.report.table import _tex_escape, notes

    outs = [tmp_path / f"t.{ext}" for ext in ("csv", "md", "tex")]
    results = add_fd_dinov2({0.0: _metrics(0), 1.0: _metrics(1)}, _fd_records(tmp_path, pinned))
    write_table1(results, *outs, compare_paper=True)
    assert (DINOV2_UNVERIFIED_REASON in notes(results, True)) != pinned
    assert (f"# {DINOV2_UNVERIFIED_REASON}" in outs[0].read_text()) != pinned
    assert (f"> {DINOV2_UNVERIFIED_REASON}" in outs[1].read_text()) != pinned
    caption = next(line for line in outs[2].read_text().splitlines() if line.startswith(r"\caption"))
    assert (_tex_escape(DINOV2_UNVERIFIED_REASON) in caption) != pinned
