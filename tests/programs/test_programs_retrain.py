"""The workflow after a changed training setting: Snakemake reruns the training job (its params
changed) and the trainer must train the new model, not reuse the finished checkpoint.

Before `--restart-on-change`, the rerun found checkpoint.pt at step >= steps, trained nothing and
left the old weights under a train_config.json that claimed the new lr (this test failed).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / ".test" / "config" / "config.yaml"


def _snakemake(workdir: Path, config: Path) -> subprocess.CompletedProcess:
    env = dict(
        os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", VIRTUAL_ENV=sys.prefix
    )
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "train_diffusion",
        "--cores",
        "1",
        "--configfile",
        str(config),
        "--snakefile",
        str(ROOT / "workflow" / "Snakefile"),
        "--directory",
        str(workdir),
    ]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_changed_lr_retrains_instead_of_reusing_the_old_model(tmp_path):
    cfg = yaml.safe_load(SMOKE.read_text())
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    first = _snakemake(tmp_path, config)
    assert first.returncode == 0, first.stderr[-2000:]
    run = tmp_path / "results" / cfg["run"] / "diffusion"
    old = _sha(run / "ema.pt")

    cfg["diffusion"]["lr"] = 5e-4
    config.write_text(yaml.safe_dump(cfg))
    second = _snakemake(tmp_path, config)
    assert second.returncode == 0, second.stderr[-2000:]
    assert _sha(run / "ema.pt") != old  # a new model ...
    assert json.loads((run / "train_config.json").read_text())["train"]["lr"] == 5e-4
    with open(run / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, cfg["diffusion"]["steps"] + 1))  # ... trained from step 0
    assert {float(r["lr"]) for r in rows} == {5e-4}
    log = (tmp_path / "results" / cfg["run"] / "logs" / "train_diffusion.log").read_text()
    assert "notice:" in log and "lr: checkpoint 0.002, now 0.0005" in log
