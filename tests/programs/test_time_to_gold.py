"""bench/bench_sampling.py --time-to-gold at toy size (the demo case's random networks, batch 2, the
reference at 4 DDPM steps against DPM-Solver++(2M) at 2): both sides run in one process on the same
noise, the JSON carries the ratios, the Table 1 projection at 250 steps, and the quality side read
from a frontier.csv. The real run's size is in bench/README.md.

Mutants tried by hand: the projection taken from --gold-steps instead of Table 1's 250 steps;
the frontier row matched without its steps (another setting's FID reported).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("guided_diffusion")  # the reference sampler (guided-diffusion-sdk, test-only)


def test_time_to_gold_toy_run(tmp_path):
    from test_frontier import _entry

    from adm.report.frontier import write_frontier

    entries = [
        _entry(tmp_path, "ddpm", 250, 1.0, 5.91, 5.62, 6.20, [250.0], gold=True),
        _entry(tmp_path, "dpmpp-2m", 2, 1.0, 6.00, 5.80, 6.30, [20.0]),
        _entry(tmp_path, "dpmpp-2m", 1, 1.0, 9.00, 8.70, 9.30, [10.0]),  # sorted before the 2-step row
    ]
    write_frontier(entries, tmp_path / "frontier.csv", tmp_path / "frontier.md")
    cmd = [sys.executable, str(ROOT / "bench" / "bench_sampling.py"), "--time-to-gold", "--threads", "1"]
    cmd += ["--batch", "2", "--gold-steps", "4", "--steps", "2", "--repeats", "1", "--out", str(tmp_path / "out")]
    cmd += ["--frontier", str(tmp_path / "frontier.csv")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads((tmp_path / "out" / "time_to_gold.json").read_text())
    assert r["reference"]["nfe"] == 4 and r["ours"] == {
        "solver": "dpmpp-2m",
        "steps": 2,
        "step_schedule": "uniform",
        "nfe": 2,
    }
    assert r["ratio"] == pytest.approx(r["median_s"]["reference"] / r["median_s"]["ours"]) and r["ratio"] > 0
    assert r["nfe_ratio"] == 2.0
    t = r["table1_gpu_hours_at_peak"]
    assert t["at_this_setting"] == pytest.approx(t["250_steps"] / 125)  # Table 1 is 250 steps: 250 / 2
    assert r["quality"]["ours"]["fid"] == "6.0" and r["quality"]["ours"]["inside_gold"] == "True"
    assert r["quality"]["gold"]["fid_ci_hi"] == "6.2"
    assert "ratio (wall)" in (tmp_path / "out" / "time_to_gold.md").read_text()
