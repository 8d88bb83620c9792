"""bench/bench_sampling.py --time-to-gold (its body: bench/time_to_gold.py).

The unit tests read a small hand-made frontier.csv (made-up FIDs, the column layout
adm.report.frontier writes) and check which setting is picked per scale and how the ratios become
Table 1 projections. The toy run takes the demo case's random networks at batch 2, the reference
at 4 DDPM steps, and settings picked from a frontier.csv that write_frontier made: both sides run
in one process on the same noise, and the JSON carries per scale the NFE, wall and CPU-time
ratios, the quality rows, the commit, machine and load. The real run's size is in bench/README.md.

Mutants tried by hand: the cheapest setting taken by FID instead of NFE, or a row outside the
gold interval allowed (test_pick_*); the quality row matched without its step schedule
(test_quality_*); the Table 1 projection not scaled from --gold-steps to 250 steps
(test_table1_*); --frontier-csv ignored in favour of --solver/--steps (test_time_to_gold_toy_run).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import time_to_gold as ttg  # noqa: E402

# frontier.csv as write_frontier lays it out (a subset of its columns; `#` lines are its notes)
CSV = """\
# NFE: diffusion-network evaluations per image ...
# scale 0.5: DPM-Solver++(3M) 10 (10 NFE) reaches ...
scale,gold,solver,steps,step_schedule,label,nfe,seconds,fid,fid_ci_lo,fid_ci_hi,inside_gold
0.5,True,ddpm,250,karras,DDPM (ancestral) 250,250,500.0,8.2,7.9,8.5,
0.5,False,ddim,5,karras,DDIM (η = 0) 5,5,5.0,20.0,19.0,21.0,False
0.5,False,dpmpp-2m,10,karras,DPM-Solver++(2M) 10 (karras),10,12.0,7.5,7.2,7.8,True
0.5,False,dpmpp-3m,10,karras,DPM-Solver++(3M) 10 (karras),10,11.0,8.4,8.1,8.7,True
0.5,False,dpmpp-2m,25,karras,DPM-Solver++(2M) 25 (karras),25,26.0,8.0,7.7,8.3,True
1.0,True,ddpm,250,karras,DDPM (ancestral) 250,250,520.0,5.9,5.6,6.2,
1.0,False,dpmpp-2m,10,karras,DPM-Solver++(2M) 10 (karras),10,12.0,9.0,8.7,9.3,False
"""


@pytest.fixture
def csv_path(tmp_path):
    path = tmp_path / "frontier.csv"
    path.write_text(CSV)
    return path


def test_pick_the_fewest_nfe_inside_then_fewer_seconds(csv_path):
    picked = ttg.pick_settings(csv_path, [0.5, 1.0])
    # 10 NFE twice inside at 0.5: the 11-second one, though its FID is the worse; DDIM 5 is outside
    assert picked[0.5] == {"solver": "dpmpp-3m", "steps": 10, "step_schedule": "karras"}
    assert picked[1.0] is None  # nothing inside at scale 1
    with pytest.raises(SystemExit, match=r"no gold row at scale\(s\) \[2.0\]"):
        ttg.pick_settings(csv_path, [2.0])


def test_quality_rows_of_the_setting_and_the_gold_row(csv_path):
    q = ttg.frontier_quality(str(csv_path), {"solver": "dpmpp-2m", "steps": 10, "step_schedule": "karras"}, 0.5)
    assert q["ours"]["fid"] == 7.5 and q["ours"]["inside_gold"] is True
    assert q["gold"]["fid_ci_hi"] == "8.5" and q["gold"]["label"] == "DDPM (ancestral) 250"
    other = ttg.frontier_quality(str(csv_path), {"solver": "dpmpp-2m", "steps": 10, "step_schedule": "logsnr"}, 0.5)
    assert other["ours"] is None  # not the same setting: no row to borrow a quality from


def test_targets_and_table1_projection_from_the_cpu_ratios():
    s = {"ours": {"nfe": 25}, "nfe_ratio": 10.0, "wall_ratio": 7.9, "cpu_time_ratio": 9.0, "quality": None}
    assert ttg.targets_met(s) == {**ttg.TARGETS, "nfe_met": True, "wall_met": False, "inside_gold": None}
    p = ttg.table1_projection({"1": s}, 125, {"floor": 20.0})
    assert "projection from the CPU ratios" in p["note"]
    by = p["by_scale"]["1"]
    assert by["nfe_ratio"]["floor"] == pytest.approx(20.0 / 10)  # 250 / 25 NFE
    assert by["wall_ratio"]["floor"] == pytest.approx(20.0 / (7.9 * 2))  # a 125-step reference: x 250/125
    assert by["cpu_time_ratio"]["floor"] == pytest.approx(20.0 / (9.0 * 2))


def test_frontier_csv_and_explicit_setting_exclude_each_other(csv_path, capsys):
    import bench_sampling

    with pytest.raises(SystemExit):
        bench_sampling.main(["--time-to-gold", "--frontier-csv", str(csv_path), "--steps", "10"])
    assert "--frontier-csv picks the setting per scale: leave out --steps" in capsys.readouterr().err


def test_time_to_gold_toy_run(tmp_path):
    pytest.importorskip("guided_diffusion")  # the reference sampler (guided-diffusion-sdk, test-only)
    from test_frontier import _entry

    from adm.report.frontier import write_frontier

    entries = [
        _entry(tmp_path, "ddpm", 250, 1.0, 5.91, 5.62, 6.20, [250.0], gold=True),
        _entry(tmp_path, "dpmpp-2m", 3, 1.0, 6.00, 5.80, 6.30, [30.0]),
        _entry(tmp_path, "dpmpp-2m", 2, 1.0, 9.00, 8.70, 9.30, [20.0]),  # fewer NFE, outside the interval
        _entry(tmp_path, "ddpm", 250, 0.5, 8.20, 7.90, 8.50, [250.0], gold=True),
        _entry(tmp_path, "ddim", 2, 0.5, 8.00, 7.70, 8.30, [20.0]),
        _entry(tmp_path, "ddpm", 250, 2.0, 4.00, 3.90, 4.10, [250.0], gold=True),
        _entry(tmp_path, "ddim", 2, 2.0, 9.00, 8.70, 9.30, [20.0]),  # nothing inside at scale 2
    ]
    write_frontier(entries, tmp_path / "frontier.csv", tmp_path / "frontier.md")
    cmd = [sys.executable, str(ROOT / "bench" / "bench_sampling.py"), "--time-to-gold", "--threads", "1"]
    cmd += ["--batch", "2", "--gold-steps", "4", "--repeats", "1", "--out", str(tmp_path / "out")]
    cmd += ["--scales", "0.5", "1", "2", "--frontier-csv", str(tmp_path / "frontier.csv")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads((tmp_path / "out" / "time_to_gold.json").read_text())
    assert set(r) >= {"commit", "machine", "load_before", "load_after", "table1_gpu_hours"}
    assert r["machine"]["cpu"] and len(r["load_before"]) == 3 and r["commit"] != "unknown"
    s1, s05 = r["scales"]["1"], r["scales"]["0.5"]
    assert s1["ours"] == {"solver": "dpmpp-2m", "steps": 3, "step_schedule": "uniform", "nfe": 3}
    assert s05["ours"]["solver"] == "ddim" and s05["ours"]["steps"] == 2
    assert "skipped" in r["scales"]["2"]
    assert s1["reference"]["nfe"] == 4 and s1["nfe_ratio"] == pytest.approx(4 / 3)
    assert s1["wall_ratio"] == pytest.approx(s1["median_s"]["reference"] / s1["median_s"]["ours"])
    assert s1["cpu_time_ratio"] > 0 and len(s1["load_before"]) == 3
    assert s1["quality"]["ours"]["fid"] == 6.0 and s1["targets"]["inside_gold"] is True
    t = r["table1_gpu_hours"]
    assert t["250_steps"] and set(t["by_scale"]) == {"0.5", "1"}
    for basis, hours in t["250_steps"].items():  # Table 1 is 250 steps: 250 / 3 NFE
        assert t["by_scale"]["1"]["nfe_ratio"][basis] == pytest.approx(hours * 3 / 250)
    md = (tmp_path / "out" / "time_to_gold.md").read_text()
    assert "| 1 | dpmpp-2m 3 (uniform) |" in md and "projection from the CPU ratios" in md
