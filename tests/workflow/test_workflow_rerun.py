"""Reruns never change a published number: run the smoke DAG in a temporary copy of the
repository, delete a random subset of the intermediate files (shards, merged batches, metrics,
feature-cache entries, grids, plots), run again, and compare Table 1 byte for byte.

The draw is random on purpose (every CI run tries another subset); the seed is in the failure
message, and RERUN_SEED=<seed> repeats a draw.

Mutant tried (in the repository copy, by hand): a feature-cache hit that drops the spatial
features (`spatial = None` in evaluations/features.py load_cached); after deleting
metrics/scale1.json the rerun's table1.md lost the sFID interval of scale 1, so the comparison
fails whenever the draw makes an evaluation hit the cache. Passed unmutated in 8 min 24 s under
load (two smoke DAG runs).

A feature-cache entry is deleted whole (the cache writes entries all or nothing). Deleting ONE
file inside an entry (its stats.npz) currently makes the evaluator stop with a FileNotFoundError
instead of recomputing: an evaluator fault, not covered here.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import fresh_clone

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TABLES = ("table1.md", "table1.csv", "table1.tex")


def run(repo: Path, *targets: str, context: str = "") -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    # Table 1 jobs only: the guidance arms and the upsampling stage add ~40 jobs to each of the two
    # DAG runs; their rerun after a deleted shard is tests/workflow/test_workflow.py's deleted-shard test.
    (repo / "table1_only.yaml").write_text("guidance_arms: []\nsampling: {seeds: [0]}\nupsample: {enabled: false}\n")
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        *targets,
        "--cores",
        "2",
        "--configfile",
        ".test/config/config.yaml",
        "table1_only.yaml",
    ]
    res = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"{context}\n{(res.stdout + res.stderr)[-4000:]}"


def intermediates(run_dir: Path) -> dict[str, list[Path]]:
    """Deletable files by kind; every kind but the cache is a declared output the DAG remakes."""
    return {
        "shard": sorted(run_dir.glob("samples/scale*/shard*.npz")),
        "merged": sorted(run_dir.glob("samples/scale*.npz")),
        "metrics": sorted(run_dir.glob("metrics/scale*.json")),
        "cache": sorted(p for p in (run_dir / "feature_cache").iterdir() if p.is_dir()),  # entries
        "grid": sorted(run_dir.glob("grids/*.png")),
        "plot": sorted(run_dir.glob("plots/*")),
    }


def draw(files: dict[str, list[Path]], rng: random.Random) -> list[Path]:
    """A random subset of 2-6 files, at least one of which makes an evaluation run again."""
    pool = [p for group in files.values() for p in group]
    chosen = rng.sample(pool, rng.randint(2, min(6, len(pool))))
    if not any(p in files["shard"] + files["merged"] + files["metrics"] for p in chosen):
        chosen.append(rng.choice(files["metrics"]))
    return chosen


def published(run_dir: Path) -> dict[str, object]:
    """The bytes of Table 1 and the values and intervals behind it."""
    out: dict[str, object] = {t: (run_dir / t).read_bytes() for t in TABLES}
    for path in sorted(run_dir.glob("metrics/scale*.json")):
        doc = json.loads(path.read_text())
        out[path.name] = {"metrics": doc["metrics"], "ci": doc["ci"]}
    return out


@pytest.fixture(scope="module")
def table1_only(tmp_path_factory):
    """The smoke DAG without the arms and the upsampling stage, in a copy of the repository;
    (repository, its run folder, the published bytes after the first run)."""
    repo = fresh_clone(tmp_path_factory.mktemp("rerun") / "repo")
    run(repo)
    run_dir = repo / "results" / "smoke"
    return repo, run_dir, published(run_dir)


@pytest.mark.slow
def test_table1_bytes_do_not_depend_on_the_arms(smoke, table1_only):
    """Table 1 of the smoke DAG with every guidance arm, a second seed set and the upsampling stage
    on (the session's smoke run) equals, byte for byte, Table 1 of the same config with them off.
    (With the keys absent, the DAG's jobs and commands are today's: tests/workflow/test_workflow_arms.py.)"""
    _, run_dir, before = table1_only
    for name in TABLES:
        assert before[name] == (smoke[0] / "results/smoke" / name).read_bytes(), name
    assert not (run_dir / "arms").exists() and not (run_dir / "upsample").exists()
    assert (smoke[0] / "results/smoke/arms").is_dir()  # the two runs really differ in the arms


@pytest.mark.slow
def test_rerun_after_random_deletions_gives_the_same_table(table1_only):
    seed = int(os.environ.get("RERUN_SEED", random.SystemRandom().randrange(2**32)))
    repo, run_dir, before = table1_only
    files = intermediates(run_dir)
    assert files["cache"] and all(files.values()), {k: len(v) for k, v in files.items()}
    chosen = draw(files, random.Random(seed))
    for path in chosen:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    # A plain rerun: `rule all` names every intermediate (workflow/lib/targets.py), so each deleted
    # one is made again and its consumers see a newer input (no target need be named).
    deleted = sorted(str(p.relative_to(run_dir)) for p in chosen)
    run(repo, context=f"RERUN_SEED={seed}, deleted {deleted}")
    after = published(run_dir)
    for key in before:
        assert after[key] == before[key], f"{key} changed (RERUN_SEED={seed}, deleted {deleted})"
