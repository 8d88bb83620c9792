"""bench/bench_evaluator.py --quick: the paper-size run's every part at toy size (8 Inception
images, 4000 x 3000 P&R, 2 DINOv2 images), end to end in child processes. Checks that the report
carries each figure the full run must record, positive, and names the Inception stand-in for
what it is; no timing is asserted (~1.5 min on 2 shared cores). The full size is in bench/README.md.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_paper_run_at_toy_size_records_every_figure(tmp_path):
    cmd = [sys.executable, str(ROOT / "bench" / "bench_evaluator.py"), "--quick", "--out", str(tmp_path)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    sec = json.loads((tmp_path / "evaluator_quick.json").read_text())["paper"]
    assert (tmp_path / "evaluator_quick.md").read_text().startswith("# Evaluator benchmark")

    machine = sec["machine"]
    assert machine["cpu"] and isinstance(machine["flags"]["avx512f"], bool)
    assert machine["cores"] > 0 and machine["usable_cores"] > 0 and machine["ram_gb"] > 0
    assert len(sec["commit"].split("+")[0]) == 40 and sec["date"].endswith("UTC")
    assert sec["total_s"] > 0 and len(sec["load_before"]) == len(sec["load_after"]) == 3

    parts = sec["parts"]
    assert set(parts) == {"inception", "precision_recall", "dinov2"}
    for name, part in parts.items():
        assert part["peak_rss_mb"] > 0, name
        assert len(part["load_before"]) == len(part["load_after"]) == 3, name
    inc, pr, dino = parts["inception"], parts["precision_recall"], parts["dinov2"]
    assert inc["side"] == 128 and inc["images"] > 0 and inc["threads"] > 0
    assert inc["features_per_s"] > 0 and inc["seconds"] > 0
    assert "stand-in" in inc["graph"] and "not the real" in inc["graph"]
    assert 5 < sec["inception_graph"]["conv_gmac_per_image"] < 6.5  # Inception-v3: ~5.7 GMAC
    assert pr["n"] == 4000 and pr["n_ref"] == 3000 and pr["dim"] == 2048 and pr["blas_threads"] > 0
    for key in ("stats_s", "fid_s", "pr_s", "total_s", "precision", "recall"):
        assert pr[key] > 0, key
    assert dino["resized_to"] == 224 and dino["images"] > 0 and dino["threads"] > 0
    assert dino["features_per_s"] > 0 and dino["gflop_per_image"] > 100  # ViT-L/14 at 224: 162 GFLOP
