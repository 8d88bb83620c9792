"""adm/report/compare.py: mean ± sd, min and median across seed sets per (arm, scale), the first
seed's bootstrap interval in the CSV, short method labels, trade-off curves, and the report
section.

Mutants tried: comparison_rows marking every FD_DINOv2 point "pinned" whatever its records say
fails test_fd_dinov2_label_follows_the_pin.
"""

from __future__ import annotations

import json
import statistics

import pytest

from adm.report import compare
from adm.report.paper import METRICS


def metrics_doc(fid, seed_offset=0.0, ci=True, network="demo"):
    """An evaluator-shaped JSON: fid given, the other metrics derived so each differs per seed."""
    m = {
        "fid": fid,
        "sfid": fid + 1.0,
        "inception_score": 5.0 + seed_offset,
        "precision": 0.5 + seed_offset / 100,
        "recall": 0.4 - seed_offset / 100,
    }
    doc = {"metrics": m, "n_samples": 16, "n_ref": 16, "feature_network": network}
    if ci:
        doc["ci"] = {k: [v - 0.5, v + 0.5] for k, v in m.items()}
    return doc


def write_entries(tmp_path, spec):
    """spec: [(arm, method, interval, seed, scale, doc)] -> entries as the workflow passes them."""
    entries = []
    for arm, method, interval, seed, scale, doc in spec:
        path = tmp_path / f"{arm}_{seed}_{scale}.json"
        path.write_text(json.dumps(doc))
        entries.append(
            {"arm": arm, "method": method, "interval": interval, "seed": seed, "scale": scale, "path": str(path)}
        )
    return entries


@pytest.fixture
def entries(tmp_path):
    spec = [
        ("classifier", "classifier", None, 0, 1.0, metrics_doc(10.0, 0)),
        ("classifier", "classifier", None, 0, 0.0, metrics_doc(20.0, 0)),
        ("classifier", "classifier", None, 1, 1.0, metrics_doc(12.0, 1)),
        ("classifier", "classifier", None, 2, 1.0, metrics_doc(14.0, 2)),
        ("interval", "classifier", [0.28, 5.42], 0, 1.0, metrics_doc(9.0, 0)),
        ("interval", "classifier", [0.28, 5.42], 1, 1.0, metrics_doc(9.5, 1)),
        ("cfg", "cfg", None, 0, 0.0, metrics_doc(8.0, 0)),
    ]
    return write_entries(tmp_path, spec)


def test_mean_sd_range_and_first_seed_interval(entries):
    rows = compare.comparison_rows(compare.load_entries(entries))
    row = next(r for r in rows if r["arm"] == "classifier" and r["scale"] == 1.0)
    assert row["n_seeds"] == 3 and row["seeds"] == "0 1 2"
    assert row["fid_mean"] == pytest.approx(12.0)
    # sample sd (n - 1): 2.0; the population sd would be 1.633
    assert row["fid_sd"] == pytest.approx(statistics.stdev([10.0, 12.0, 14.0])) == pytest.approx(2.0)
    assert (row["fid_min"], row["fid_max"]) == (10.0, 14.0)
    assert row["fid_median"] == 12.0
    # the first seed's value and ITS bootstrap interval, not another seed's
    assert row["fid_first"] == 10.0 and (row["fid_first_ci_lo"], row["fid_first_ci_hi"]) == (9.5, 10.5)
    for m in METRICS:
        assert row[f"{m}_sd"] is not None


def test_one_seed_has_no_spread(entries):
    rows = compare.comparison_rows(compare.load_entries(entries))
    row = next(r for r in rows if r["arm"] == "cfg")
    assert row["n_seeds"] == 1 and row["fid_sd"] is None
    assert compare.metric_cells(row, "fid") == ["8.00", "8.00", "8.00"]  # mean (no ±), min, median
    assert (row["fid_first_ci_lo"], row["fid_first_ci_hi"]) == (7.5, 8.5)


def test_rows_keep_arm_order_and_sort_scales(entries):
    rows = compare.comparison_rows(compare.load_entries(entries))
    assert [(r["arm"], r["scale"]) for r in rows] == [
        ("classifier", 0.0),
        ("classifier", 1.0),
        ("interval", 1.0),
        ("cfg", 0.0),
    ]
    assert rows[2]["label"] == "classifier, interval (0.28, 5.42]"
    assert rows[0]["label"] == "classifier"
    assert rows[3]["label"] == "CFG"
    assert compare.arm_label("cfg", [0.28, float("inf")]) == "CFG, interval (0.28, inf]"
    assert compare.arm_label("autoguidance", None) == "autoguidance"
    assert (rows[2]["interval_lo"], rows[2]["interval_hi"]) == (0.28, 5.42)


def test_cells_with_spread():
    row = {"fid_mean": 12.0, "fid_sd": 2.0, "fid_min": 10.0, "fid_median": 11.0, "fid_max": 14.0}
    assert compare.metric_cells(row, "fid") == ["12.00 ± 2.00", "10.00", "11.00"]


def test_median_of_an_even_number_of_seeds_is_the_midpoint():
    docs = [metrics_doc(v) for v in (10.0, 14.0, 11.0, 20.0)]
    summary = compare.metric_summary(docs, "fid")
    assert summary["median"] == 12.5 and summary["min"] == 10.0 and summary["mean"] == pytest.approx(13.75)


def test_same_method_and_interval_are_told_apart_by_arm(tmp_path):
    spec = [
        ("auto", "autoguidance", None, 0, 2.0, metrics_doc(9.0)),
        ("auto_small", "autoguidance", None, 0, 2.0, metrics_doc(8.0)),
    ]
    rows = compare.comparison_rows(compare.load_entries(write_entries(tmp_path, spec)))
    assert [r["label"] for r in rows] == ["autoguidance (auto)", "autoguidance (auto_small)"]


def test_tradeoff_curves_carry_means_and_sd(entries):
    curves = compare.tradeoff_curves(compare.comparison_rows(compare.load_entries(entries)))
    assert list(curves) == ["classifier", "classifier, interval (0.28, 5.42]", "CFG"]
    full = curves["classifier"]
    assert sorted(full) == [0.0, 1.0]
    assert full[1.0]["metrics"]["fid"] == pytest.approx(12.0)
    assert full[1.0]["spread"]["fid"] == pytest.approx(2.0)
    assert "spread" not in full[0.0]  # one seed: no error bar rather than a zero one


def test_write_comparison_and_report_section(entries, tmp_path):
    csv_path, md_path = tmp_path / "out" / "comparison.csv", tmp_path / "out" / "comparison.md"
    rows = compare.write_comparison(entries, csv_path, md_path)
    md = md_path.read_text()
    assert "demo feature network" in md and "sample standard deviation" in md and "EDM2's convention" in md
    assert "| Method | Scale | Seeds | FID mean ± sd | FID min | FID median | sFID mean ± sd |" in md
    assert "| classifier | 1 | 0 1 2 | 12.00 ± 2.00 | 10.00 | 12.00 | 13.00 ± 2.00 | 11.00 | 13.00 |" in md
    assert "| classifier, interval (0.28, 5.42] | 1 | 0 1 | 9.25 ± 0.35 | 9.00 | 9.25 |" in md
    assert "classifier, interval (0.28, 5.42] = arm `interval`, σ ∈ (0.28, 5.42]" in md
    back = compare.read_comparison_csv(csv_path)
    assert len(back) == len(rows) and float(back[1]["fid_sd"]) == pytest.approx(2.0)
    assert float(back[1]["fid_median"]) == 12.0 and float(back[1]["fid_first_ci_lo"]) == 9.5
    html = compare.render_section(csv_path, [], lambda p: "data:")
    assert "Guidance methods compared" in html and html.count("<tr>") == 1 + len(rows)
    assert "<td>12.00 ± 2.00</td><td>10.00</td><td>12.00</td>" in html
    assert "classifier, interval (0.28, 5.42]" in html and "EDM2&#x27;s convention" in html


def test_not_an_evaluator_file_is_refused(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="no 'metrics' object"):
        compare.load_entries([{"arm": "a", "method": "cfg", "seed": 0, "scale": 0, "path": str(bad)}])


def with_fd_dinov2(tmp_path, entries, values, pinned=None):
    """Each entry with an FD_DINOv2 record beside its metrics JSON, as the workflow passes it
    (`pinned`: the record's weights_pinned; None: a record without the field)."""
    out = []
    for e, v in zip(entries, values):
        path = tmp_path / f"fd_{e['arm']}_{e['seed']}_{e['scale']}.json"
        record = {"metrics": {"fd_dinov2": v}, "ci": {"fd_dinov2": [v - 2, v + 2]}}
        path.write_text(json.dumps(record if pinned is None else {**record, "weights_pinned": pinned}))
        out.append({**e, "fd_dinov2": str(path)})
    return out


def test_fd_dinov2_per_point_over_seeds(entries, tmp_path):
    """With an FD_DINOv2 record per run, every point gets FD_DINOv2 mean ± sd, min and median over
    its seeds (CSV: the same keys as FID's), a column group in the table and the report, and a note;
    without records the outputs are exactly those of a run without the metric."""
    plain_csv, plain_md = tmp_path / "plain.csv", tmp_path / "plain.md"
    compare.write_comparison(entries, plain_csv, plain_md)
    assert "FD_DINOv2" not in plain_md.read_text() and "fd_dinov2" not in plain_csv.read_text()
    fd = with_fd_dinov2(tmp_path, entries, [100.0, 200.0, 110.0, 130.0, 90.0, 95.0, 80.0])
    csv_path, md_path = tmp_path / "c.csv", tmp_path / "c.md"
    rows = compare.write_comparison(fd, csv_path, md_path)
    row = next(r for r in rows if r["arm"] == "classifier" and r["scale"] == 1.0)
    assert row["fd_dinov2_mean"] == pytest.approx(113.333333) and row["fd_dinov2_sd"] == pytest.approx(15.275252)
    assert row["fd_dinov2_min"] == 100.0 and row["fd_dinov2_median"] == 110.0
    assert row["fd_dinov2_first"] == 100.0 and row["fd_dinov2_first_ci_lo"] == 98.0
    md = md_path.read_text()
    assert md.splitlines()[len(compare.comparison_notes(rows)) + 1].endswith(
        "| FD_DINOv2 mean ± sd | FD_DINOv2 min | FD_DINOv2 median |"
    )
    assert "| 113.33 ± 15.28 | 100.00 | 110.00 |" in md and compare.FD_DINOV2_NOTE in md
    assert "| CFG | 0 | 0 | 8.00 | 8.00 | 8.00 |" in md and md.rstrip().endswith("| 80.00 | 80.00 | 80.00 |")
    # the columns FID had before are unchanged, the new ones come after
    header = lambda path: next(line for line in path.read_text().splitlines() if not line.startswith("#"))  # noqa: E731
    assert header(csv_path).startswith(header(plain_csv) + ",fd_dinov2_mean,fd_dinov2_sd,fd_dinov2_min,")
    html = compare.render_section(csv_path, [], lambda p: "data:")
    assert "<th>FD_DINOv2 min</th>" in html and "<td>113.33 ± 15.28</td><td>100.00</td><td>110.00</td>" in html


def test_tradeoff_curves_carry_fd_dinov2_only_when_measured(entries, tmp_path):
    """The curves of a run with FD_DINOv2 carry its seed mean and sd per point (the FD_DINOv2 vs
    scale plot reads them); without records, no such key (the plot is not drawn)."""
    plain = compare.tradeoff_curves(compare.comparison_rows(compare.load_entries(entries)))
    assert all("fd_dinov2" not in p["metrics"] for points in plain.values() for p in points.values())
    fd = with_fd_dinov2(tmp_path, entries, [100.0, 200.0, 110.0, 130.0, 90.0, 95.0, 80.0])
    curves = compare.tradeoff_curves(compare.comparison_rows(compare.load_entries(fd)))
    assert curves["classifier"][1.0]["metrics"]["fd_dinov2"] == pytest.approx(113.333333)
    assert curves["classifier"][1.0]["spread"]["fd_dinov2"] == pytest.approx(15.275252)
    assert curves["classifier"][0.0]["metrics"]["fd_dinov2"] == 200.0 and "spread" not in curves["classifier"][0.0]
    assert curves["CFG"][0.0]["metrics"]["fd_dinov2"] == 80.0
    for label, points in plain.items():  # the other metrics as before
        for scale, point in points.items():
            assert {k: v for k, v in curves[label][scale]["metrics"].items() if k != "fd_dinov2"} == point["metrics"]


@pytest.mark.parametrize("pinned", [True, False, None])
def test_fd_dinov2_label_follows_the_pin(entries, tmp_path, pinned):
    """Records whose weights have the config's pinned sha256: no label; unpinned (or a record that
    does not say): "unverified DINOv2 weights" in the CSV column, the caption of the Markdown and of
    report.html's section, and on every trade-off point."""
    from adm.report.paper import DINOV2_UNVERIFIED, DINOV2_UNVERIFIED_REASON

    fd = with_fd_dinov2(tmp_path, entries, [100.0, 200.0, 110.0, 130.0, 90.0, 95.0, 80.0], pinned)
    csv_path, md_path = tmp_path / "c.csv", tmp_path / "c.md"
    rows = compare.write_comparison(fd, csv_path, md_path)
    labelled = pinned is not True
    assert {r["fd_dinov2_weights"] for r in rows} == {DINOV2_UNVERIFIED if labelled else "pinned"}
    assert (DINOV2_UNVERIFIED_REASON in md_path.read_text()) == labelled
    assert (DINOV2_UNVERIFIED in csv_path.read_text()) == labelled
    html = compare.render_section(csv_path, [], lambda p: "data:")
    assert (DINOV2_UNVERIFIED_REASON in html) == labelled
    curves = compare.tradeoff_curves(compare.comparison_rows(compare.load_entries(fd)))
    assert {p["fd_dinov2_pinned"] for points in curves.values() for p in points.values()} == {not labelled}


def test_an_arms_note_follows_it_into_the_caption(entries, tmp_path):
    """A configured note (e.g. where an interval came from) is printed after its arm in comparison.md,
    the CSV's notes and report.html; without any note the CSV has no note column (bytes as before)."""
    plain = compare.write_comparison(entries, tmp_path / "a.csv", tmp_path / "a.md")
    assert "note" not in plain[0]
    note = "chosen by snakemake interval_search on this model"
    noted = [{**e, "note": note} if e["arm"] == "interval" else e for e in entries]
    rows = compare.write_comparison(noted, tmp_path / "b.csv", tmp_path / "b.md")
    assert [r["note"] for r in rows if r["arm"] == "interval"] == [note] and rows[0]["note"] == ""
    arm_line = f"classifier, interval (0.28, 5.42] = arm `interval`, σ ∈ (0.28, 5.42] ({note})"
    assert arm_line in (tmp_path / "b.md").read_text() and arm_line in (tmp_path / "b.csv").read_text()
    html = compare.render_section(tmp_path / "b.csv", [], lambda p: "data:")
    assert f"({note})" in html
    assert note not in (tmp_path / "a.md").read_text()
