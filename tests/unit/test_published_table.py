"""adm/report/published.py: our metrics of OpenAI's published batches beside every published value.

Published values are the paper's and OpenAI's README's (provenance in the module's CATALOGUE);
the tests below feed hand-made "ours" values, so each verdict is known in advance.

Mutants tried: the tolerance without the half (10^-d instead of ½·10^-d) fails
test_verdict_at_the_published_digits; judging printed output at its 16 digits fails
test_printed_output_is_judged_at_four_significant_digits; requiring every source to match
(instead of one) fails test_a_batch_passes_when_one_source_matches; FD_DINOv2 records not read
(check_published ignoring its fd_dinov2_files) fails test_fd_dinov2_is_ours_only; the report section
without its label (no banner) fails test_report_section_shows_the_table_and_its_label; FD rows
keeping the features' network name whatever the pin (fd_network returning it unconditionally) fails
test_unpinned_fd_dinov2_rows_are_labelled.
"""

from __future__ import annotations

import json

import pytest

from adm.report import published as P


def ours_from(source: P.Source, **changes) -> dict:
    base = {"fid": 1.0, "sfid": 1.0, "inception_score": 1.0, "precision": 0.5, "recall": 0.5}
    base.update({k: float(v) for k, v in source.values.items()})
    base.update(changes)
    return base


def test_verdict_at_the_published_digits():
    src = (P.Source("s", {"fid": "2.97"}),)
    verdict = lambda v: P.compare("b", {"fid": v}, src)[0]["verdict"]  # noqa: E731
    assert verdict(2.974) == "match" and verdict(2.9651) == "match"
    assert verdict(2.976) == "differs" and verdict(2.964) == "differs"
    assert P.tolerance("0.8265", printed=False) == pytest.approx(5e-5)


def test_printed_output_is_judged_at_four_significant_digits():
    readme = P.CATALOGUE["admnet_guided_upsampled_imagenet256"].sources[0]
    assert readme.printed and readme.values["fid"] == "3.9425574129223264"
    near = P.compare("b", ours_from(readme, fid=3.94258), (readme,))
    row = next(r for r in near if r["metric"] == "fid")
    assert row["verdict"] == "match" and row["digits"] == 5
    far = P.compare("b", ours_from(readme, fid=3.9445), (readme,))
    assert next(r for r in far if r["metric"] == "fid")["verdict"] == "differs"
    exact = P.compare("b", ours_from(readme), (readme,))
    assert all(r["digits"] == 17 and r["verdict"] == "match" for r in exact)


def test_a_batch_passes_when_one_source_matches():
    """ADM-G 128: sFID 4.69 in the sweep, 5.09 in the summary table and the README. A batch equal
    to the sweep's scale 0.5 row matches that source alone, and that is a pass."""
    sources = P.CATALOGUE["admnet_guided_imagenet128"].sources
    sweep = sources[0]
    assert sweep.name == "paper Table 1, scale 0.5" and sweep.values["sfid"] == "4.69"
    rows = P.compare("admnet_guided_imagenet128", ours_from(sweep), sources)
    assert P.verdict_lines(rows) == ["admnet_guided_imagenet128: matches paper Table 1, scale 0.5"]
    assert P.first_failure(rows) is None


def test_a_batch_matching_no_source_fails_in_one_line():
    sources = P.CATALOGUE["admnet_imagenet128"].sources
    rows = P.compare("admnet_imagenet128", ours_from(sources[0], fid=7.5), sources)
    assert P.verdict_lines(rows) == ["admnet_imagenet128: matches no published source"]
    line = P.first_failure(rows)
    assert (
        line
        == "admnet_imagenet128: FID published 5.91 (paper Table 1, scale 0), ours 7.5: outside the published digits"
    )


def test_expected_values_replace_the_catalogue():
    (src,) = P.sources_for("admnet_imagenet128", {"admnet_imagenet128": {"fid": 12.5}})
    assert src.name == "expected (config)" and src.values == {"fid": "12.5"}
    assert P.sources_for("admnet_imagenet128") == P.CATALOGUE["admnet_imagenet128"].sources
    assert P.sources_for("biggan_deep_trunc1_imagenet128") == ()


def write_metrics(path, metrics, network="unverified feature graph"):
    path.write_text(json.dumps({"metrics": metrics, "feature_network": network}))
    return path


def test_check_published_writes_the_table_or_fails_with_nothing_behind(tmp_path, capsys):
    sweep = P.CATALOGUE["admnet_guided_imagenet128"].sources[0]
    good = write_metrics(tmp_path / "a.json", ours_from(sweep))
    bigg = write_metrics(tmp_path / "b.json", ours_from(sweep, fid=6.0))
    md, csv_path = tmp_path / "published.md", tmp_path / "published.csv"
    names = ["admnet_guided_imagenet128", "biggan_deep_trunc1_imagenet128"]
    assert P.check_published([good, bigg], names, {}, True, md, csv_path) == 0
    text = md.read_text()
    assert "unverified feature graph" in text and "(no published value restated here)" in text
    assert "- admnet_guided_imagenet128: matches paper Table 1, scale 0.5" in text
    header = csv_path.read_text().splitlines()[0]
    assert header == "batch,source,metric,published,ours,difference,digits,verdict,feature_network"
    assert "FD_DINOv2" not in text  # not measured: no column, no note

    bad = write_metrics(tmp_path / "c.json", ours_from(sweep, fid=9.0, sfid=9.0))
    assert P.check_published([bad], names[:1], {}, True, md, csv_path) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: admnet_guided_imagenet128: ")
    assert not md.exists() and not csv_path.exists()
    assert P.check_published([bad], names[:1], {}, False, md, csv_path) == 0 and md.exists()


def write_fd(path, value, network="dinov2-vitl14", pinned=True):
    """An FD_DINOv2 record; `pinned`: its weights have the sha256 the config pins (fd_features)."""
    record = {"metrics": {"fd_dinov2": value}, "ci": {"fd_dinov2": [value - 1, value + 1]}, "feature_network": network}
    path.write_text(json.dumps({**record, "weights_pinned": pinned}))
    return path


def check_with_fd(tmp_path, network="unverified feature graph", expected=None, pinned=True):
    """Two batches (one with published values, BigGAN without) and an FD_DINOv2 record for each."""
    sweep = P.CATALOGUE["admnet_guided_imagenet128"].sources[0]
    names = ["admnet_guided_imagenet128", "biggan_deep_trunc1_imagenet128"]
    metrics = [write_metrics(tmp_path / f"{n}_m.json", ours_from(sweep), network) for n in names]
    (tmp_path / "fd").mkdir(exist_ok=True)
    fd = [write_fd(tmp_path / "fd" / f"{n}.json", v, pinned=pinned) for n, v in zip(names, (123.456, 98.7))]
    md, csv_path = tmp_path / "published.md", tmp_path / "published.csv"
    assert P.check_published(metrics, names, expected or {}, True, md, csv_path, fd[::-1]) == 0
    return md, csv_path


def test_fd_dinov2_is_ours_only(tmp_path):
    """Each batch gains an FD_DINOv2 row: our value, "—" where a published value would be, verdict
    "not published"; the verdicts of the published metrics are untouched."""
    import csv

    md, csv_path = check_with_fd(tmp_path)
    text = md.read_text()
    assert "| admnet_guided_imagenet128 | — | FD_DINOv2 | — | 123.456 | – | – | not published |" in text
    assert "| biggan_deep_trunc1_imagenet128 | — | FD_DINOv2 | — | 98.7 | – | – | not published |" in text
    assert P.FD_DINOV2_NOTE in text and P.DINOV2_UNVERIFIED not in text  # pinned weights: no label
    assert "- admnet_guided_imagenet128: matches paper Table 1, scale 0.5" in text
    rows = list(csv.DictReader(csv_path.open()))
    fd = {r["batch"]: r for r in rows if r["metric"] == "fd_dinov2"}
    assert set(fd) == {"admnet_guided_imagenet128", "biggan_deep_trunc1_imagenet128"}
    got = fd["admnet_guided_imagenet128"]
    assert float(got["ours"]) == 123.456 and got["published"] == "" and got["verdict"] == "not published"
    assert got["feature_network"] == "dinov2-vitl14"
    # BigGAN's five metrics are in the CSV too, as values no one published here
    assert {r["metric"] for r in rows if r["batch"].startswith("biggan") and r["verdict"] == "not published"} == {
        *P.METRICS,
        "fd_dinov2",
    }


def test_unpinned_fd_dinov2_rows_are_labelled(tmp_path):
    """Without a pinned sha256 (weights_pinned false) each FD_DINOv2 row says "unverified DINOv2
    weights" in the Markdown, the CSV's feature_network and report.html's section, with the reason."""
    import csv
    import html

    md, csv_path = check_with_fd(tmp_path, pinned=False)
    text = md.read_text()
    label = f"FD_DINOv2 ({P.DINOV2_UNVERIFIED})"
    assert f"| admnet_guided_imagenet128 | — | {label} | — | 123.456 | – | – | not published |" in text
    assert P.DINOV2_UNVERIFIED_REASON in text
    rows = [r for r in csv.DictReader(csv_path.open()) if r["metric"] == "fd_dinov2"]
    assert len(rows) == 2 and {r["feature_network"] for r in rows} == {P.DINOV2_UNVERIFIED}
    section = P.render_section(csv_path)
    assert f"<td>{html.escape(label)}</td><td>—</td><td>123.456</td>" in section
    assert html.escape(P.DINOV2_UNVERIFIED_REASON) in section


@pytest.mark.parametrize("network, labelled", [("unverified feature graph", True), ("inception-v3-2015", False)])
def test_report_section_shows_the_table_and_its_label(tmp_path, network, labelled):
    """report.html's section, from published.csv alone: the table (FD_DINOv2 rows included), the
    unverified-graph banner where it applies, the verdicts, and what "expected (config)" means."""
    import html

    from adm.report.paper import UNVERIFIED_BANNER

    sweep = P.CATALOGUE["admnet_guided_imagenet128"].sources[0]
    _, csv_path = check_with_fd(tmp_path, network)
    section = P.render_section(csv_path)
    assert ('<div class="banner">' + UNVERIFIED_BANNER in section) == labelled
    assert "<td>paper Table 1, scale 0.5</td><td>FID</td><td>2.97</td>" in section
    assert "<td>FD_DINOv2</td><td>—</td><td>123.456</td>" in section
    assert "<li>admnet_guided_imagenet128: matches paper Table 1, scale 0.5</li>" in section
    assert html.escape(P.EXPECTED_NOTE) not in section
    # a rehearsal's own values (stand-in files): the source says so, and the caption explains it
    expected = {"admnet_guided_imagenet128": {k: float(v) for k, v in sweep.values.items()}}
    _, csv_path = check_with_fd(tmp_path, network, expected)
    section = P.render_section(csv_path)
    assert "<td>expected (config)</td>" in section and html.escape(P.EXPECTED_NOTE) in section
    assert "<li>admnet_guided_imagenet128: matches expected (config)</li>" in section
