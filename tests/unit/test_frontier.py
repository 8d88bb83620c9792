"""The cost-quality frontier's pure functions (adm/report/frontier.py): network-evaluation counting,
benchmark seconds, the cheapest setting inside the gold row's interval, the table rows and files.

The metric values below are made up for the tests (no run produced them); the benchmark files
have Snakemake 9's column layout. What each test catches (mutants tried by hand):
- a solver counted at 2 NFE per step, or the classifier counted at scale 0   -> test_nfe_*
- seconds averaged over shards instead of summed, a missing file read as 0     -> test_benchmark_*
- "inside" meaning inside [lo, hi] only (a better FID refused), the gold row chosen as its own
  cheapest, ties broken by FID before seconds                                  -> test_cheapest_*
- ratios inverted (this / gold), rows unsorted, the verdict line missing       -> test_write_*
"""

from __future__ import annotations

import json

import pytest

from adm.report.frontier import (
    add_ratios,
    benchmark_seconds,
    cheapest_inside,
    classifier_evaluations,
    frontier_plots,
    network_evaluations,
    verdict,
    write_frontier,
    write_frontier_plots,
)

TSV_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def test_nfe_is_one_network_evaluation_per_step_for_every_solver():
    assert network_evaluations("ddpm", 250) == 250
    assert network_evaluations("ddim", 25) == 25
    assert network_evaluations("dpmpp-2m", 15) == 15
    assert network_evaluations("dpmpp-3m", 10) == 10
    with pytest.raises(ValueError, match="unknown solver"):
        network_evaluations("heun", 10)
    with pytest.raises(ValueError, match="steps"):
        network_evaluations("ddim", 0)


def test_nfe_classifier_counted_apart_and_only_when_guided():
    assert classifier_evaluations("dpmpp-2m", 20, 1.0) == 20
    assert classifier_evaluations("ddpm", 250, 0.5) == 250
    assert classifier_evaluations("ddpm", 250, 0.0) == 0


def _tsv(path, *seconds):
    path.write_text(
        TSV_HEADER + "".join(f"{s}\t0:00:{int(s):02d}\t100\t200\t90\t95\t0\t1\t98.5\t{s}\n" for s in seconds)
    )
    return path


def test_benchmark_seconds_summed_over_shards(tmp_path):
    a, b = _tsv(tmp_path / "a.tsv", 12.5), _tsv(tmp_path / "b.tsv", 7.25)
    assert benchmark_seconds([a, b]) == pytest.approx(19.75)
    assert benchmark_seconds([_tsv(tmp_path / "r.tsv", 10.0, 14.0)]) == pytest.approx(12.0)  # repeats: mean
    assert benchmark_seconds([a, tmp_path / "missing.tsv"]) is None
    assert benchmark_seconds([]) == 0.0
    assert benchmark_seconds([a, b], "cpu_time") == pytest.approx(19.75)  # _tsv writes cpu_time = s


def _row(solver, steps, fid, seconds, gold=False, scale=1.0, ci=None):
    r = {"solver": solver, "steps": steps, "label": f"{solver} {steps}", "gold": gold, "scale": scale}
    r.update({"nfe": steps, "seconds": seconds, "fid": fid, "fid_ci_lo": None, "fid_ci_hi": None})
    if ci:
        r["fid_ci_lo"], r["fid_ci_hi"] = ci
    return r


def _rows():
    return add_ratios(
        [
            _row("ddpm", 250, 5.91, 500.0, gold=True, ci=(5.62, 6.20)),
            _row("ddim", 10, 9.80, 21.0),
            _row("ddim", 25, 6.35, 51.0),  # outside: 6.35 > 6.20
            _row("dpmpp-2m", 10, 6.90, 20.0),
            _row("dpmpp-2m", 15, 5.30, 30.0),  # better than the whole interval: inside
            _row("dpmpp-3m", 15, 5.40, 29.0),  # inside, the same NFE, a worse FID but fewer seconds
            _row("dpmpp-2m", 20, 5.80, 40.0),
        ]
    )


def test_cheapest_inside_the_gold_interval():
    rows = _rows()
    assert [r["inside_gold"] for r in rows] == [True, False, False, False, True, True, True]
    best = cheapest_inside(rows, 1.0)
    assert (best["solver"], best["steps"]) == ("dpmpp-3m", 15)  # 15 NFE; of the two, the fewer seconds
    assert best["nfe_ratio"] == pytest.approx(250 / 15)
    assert best["time_ratio"] == pytest.approx(500 / 29)
    assert cheapest_inside(rows, 0.5) is None


def test_cheapest_none_when_nothing_reaches_gold_and_gold_without_interval():
    rows = add_ratios([_row("ddpm", 250, 5.91, 500.0, gold=True), _row("ddim", 25, 5.95, 50.0)])
    assert cheapest_inside(rows, 1.0) is None  # no interval: at or below 5.91 needed
    assert verdict(rows, 1.0) == "scale 1: no setting of the grid is inside the interval of ddpm 250 (FID 5.91)"
    rows = add_ratios([_row("ddpm", 250, 5.91, 500.0, gold=True), _row("ddim", 25, 5.91, 50.0)])
    assert cheapest_inside(rows, 1.0)["steps"] == 25


def _doc(fid, lo, hi, net="demo"):
    return {
        "metrics": {"fid": fid, "sfid": 4.5, "inception_score": 9.1, "precision": 0.7, "recall": 0.55},
        "ci": {"fid": [lo, hi], "inception_score": [8.9, 9.3]},
        "n_samples": 500,
        "feature_network": net,
    }


def _entry(tmp_path, solver, steps, scale, fid, lo, hi, seconds, gold=False):
    stem = f"{solver}_{steps}_{scale:g}"
    path = tmp_path / f"{stem}.json"
    path.write_text(json.dumps(_doc(fid, lo, hi)))
    benches = [_tsv(tmp_path / f"{stem}_{k}.tsv", s) for k, s in enumerate(seconds)]
    return {
        "solver": solver,
        "steps": steps,
        "step_schedule": "uniform",
        "scale": scale,
        "gold": gold,
        "path": str(path),
        "benchmarks": [str(b) for b in benches],
    }


def test_write_frontier_rows_files_and_verdicts(tmp_path):
    entries = [
        _entry(tmp_path, "ddpm", 250, 1.0, 5.91, 5.62, 6.20, [250.0, 250.0], gold=True),
        _entry(tmp_path, "ddim", 10, 1.0, 9.80, 9.4, 10.2, [10.5, 10.5]),
        _entry(tmp_path, "dpmpp-2m", 20, 1.0, 6.05, 5.8, 6.3, [20.0, 20.0]),
        _entry(tmp_path, "dpmpp-2m", 10, 1.0, 7.00, 6.7, 7.3, [10.0, 10.0]),
        _entry(tmp_path, "ddpm", 250, 0.5, 8.20, 7.9, 8.5, [240.0, 260.0], gold=True),
        _entry(tmp_path, "dpmpp-2m", 10, 0.5, 9.00, 8.7, 9.3, [10.0, 10.0]),
    ]
    rows = write_frontier(entries, tmp_path / "f.csv", tmp_path / "f.md")
    # scale ascending, gold first, then solvers in entry order and steps ascending
    assert [(r["scale"], r["solver"], r["steps"]) for r in rows] == [
        (0.5, "ddpm", 250),
        (0.5, "dpmpp-2m", 10),
        (1.0, "ddpm", 250),
        (1.0, "ddim", 10),
        (1.0, "dpmpp-2m", 10),
        (1.0, "dpmpp-2m", 20),
    ]
    best = rows[5]
    assert best["nfe"] == 20 and best["classifier_evals"] == 20 and best["seconds"] == 40.0
    assert best["nfe_ratio"] == pytest.approx(12.5) and best["time_ratio"] == pytest.approx(12.5)
    assert best["fid_ci_lo"] == 5.8 and best["sfid_ci_lo"] is None and best["inception_score_ci_hi"] == 9.3
    md = (tmp_path / "f.md").read_text()
    assert (
        "- scale 1: DPM-Solver++(2M) 20 (20 NFE) reaches DDPM (ancestral) 250 (FID 5.91 [5.62, 6.20]) with "
        "FID 6.05: 12.5x fewer network evaluations, 12.5x less sampling time"
    ) in md
    assert "- scale 0.5: no setting of the grid is inside the interval of DDPM (ancestral) 250 (FID 8.20" in md
    assert "| 1 | **gold: DDPM (ancestral) 250** | 250 | 250 | 500.0 | 5.91 [5.62, 6.20] |" in md
    assert "| 1 | DPM-Solver++(2M) 20 | 20 | 20 | 40.0 | 6.05 [5.80, 6.30] |" in md
    assert md.count("\n| ") == 1 + len(rows)  # the header, then a line per row
    csv_text = (tmp_path / "f.csv").read_text()
    assert "# scale 1: DPM-Solver++(2M) 20 (20 NFE) reaches" in csv_text
    assert csv_text.splitlines()[4].startswith(
        "scale,gold,solver,steps,step_schedule,label,nfe,classifier_evals,seconds,cpu_seconds,"
    )


def test_write_frontier_plots(tmp_path):
    entries = [
        _entry(tmp_path, "ddpm", 250, 1.0, 5.91, 5.62, 6.20, [250.0], gold=True),
        _entry(tmp_path, "dpmpp-2m", 10, 1.0, 7.0, 6.7, 7.3, [10.0]),
        _entry(tmp_path, "dpmpp-2m", 20, 1.0, 6.0, 5.8, 6.3, [20.0]),
    ]
    rows = write_frontier(entries, tmp_path / "f.csv", tmp_path / "f.md")
    written = write_frontier_plots(rows, tmp_path / "plots")
    assert [p.name for p in written] == [
        "frontier_nfe.png",
        "frontier_nfe.svg",
        "frontier_seconds.png",
        "frontier_seconds.svg",
    ]
    assert written == frontier_plots(tmp_path / "plots") and all(p.stat().st_size > 1000 for p in written)
    svg = (tmp_path / "plots" / "frontier_nfe.svg").read_text()
    assert "gold: 95% interval" in svg and "DPM-Solver++(2M)" in svg
