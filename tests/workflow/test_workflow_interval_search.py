"""`snakemake interval_search` on the smoke config (workflow/rules/interval_search.smk):
stage 1's jobs are the arm rules' sample/merge/evaluate at sigma_lo = 0 and each step sigma as
sigma_hi, with the search's own N and shard count; the default target gains no job."""

from __future__ import annotations

import re

import pytest
import yaml
from test_workflow import SMOKE, snakemake
from test_workflow_arms import dry_jobs, one_line_error, smoke_cfg, without_arms, write

from workflow.lib.interval_search import sampling_sigmas

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def job_counts(stdout: str) -> dict[str, int]:
    table = stdout.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"(?m)^(\w+)\s+(\d+)$", table)}


def test_interval_search_target_runs_stage_one_through_the_arm_rules(tmp_path):
    res = snakemake(tmp_path, "interval_search", "-n", "-p", "--cores", "2", "--configfile", str(SMOKE))
    assert res.returncode == 0, res.stderr[-3000:]
    search = smoke_cfg()["interval_search"]
    sigmas = sampling_sigmas("cosine", 1000, "4")  # demo-digits, 4 respaced steps
    runs = len(sigmas) * len(search["scales"])
    counts = job_counts(res.stdout)
    assert {k: counts[k] for k in ("arm_sample", "arm_merge", "arm_evaluate")} == dict.fromkeys(
        ("arm_sample", "arm_merge", "arm_evaluate"), runs
    )
    assert counts["interval_search_hi"] == 1 and counts["interval_search"] == 1
    assert not {"sample", "evaluate", "comparison", "report_html"} & set(counts)
    samples = re.findall(r"-m adm sample [^\n]*", res.stdout)
    assert len(samples) == runs
    for k, sigma in enumerate(sigmas):
        cmd = next(c for c in samples if f"/arms/isearch_hi{k}/seed0/" in c)
        assert f"--classifier results/smoke/classifier/model.pt --guidance-interval 0.0 {sigma!r} " in cmd
        assert f"--num-samples {search['num_samples']} --shard 0 --num-shards 1 --seed 0 " in cmd
    assert "DAG of jobs will be updated after completion" in res.stdout  # stage 2 follows the checkpoint
    assert "results/smoke/interval_search/chosen.yaml" in res.stdout


def test_the_default_target_has_no_search_job(tmp_path):
    jobs = dry_jobs(tmp_path, SMOKE)
    assert not [o for o in jobs if "isearch_" in o or "interval_search" in o]


def test_in_report_puts_the_search_in_the_default_target(tmp_path):
    cfg = smoke_cfg()
    cfg["interval_search"] = {**cfg["interval_search"], "in_report": True}
    res = snakemake(tmp_path, "-n", "--cores", "2", "--configfile", str(write(tmp_path / "c.yaml", cfg)))
    assert res.returncode == 0, res.stderr[-3000:]
    counts = job_counts(res.stdout)
    assert counts["interval_search_hi"] == 1 and counts["interval_search"] == 1
    report = res.stdout.split("rule report_html:", 1)[1].split("\n\n", 1)[0]
    assert "results/smoke/interval_search/chosen.yaml" in report and "interval_search/heatmap.png" in report


def test_search_of_an_autoguidance_arm_uses_its_guide(tmp_path):
    cfg = smoke_cfg()
    cfg["interval_search"] = {"arm": "auto", "scales": [2.0, 3.0], "num_samples": 8, "max_candidates": 2}
    path = write(tmp_path / "c.yaml", cfg)
    res = snakemake(tmp_path, "interval_search", "-n", "-p", "--cores", "2", "--configfile", str(path))
    assert res.returncode == 0, res.stderr[-3000:]
    samples = re.findall(r"-m adm sample [^\n]*", res.stdout)
    assert len(samples) == 2 * 2  # two sigma_hi candidates (step 0 and the top step) x two scales
    assert all("--guidance autoguidance --guide-model results/smoke/diffusion/ema_step2.pt" in c for c in samples)
    assert {re.search(r"/arms/(isearch_hi\d)/", c).group(1) for c in samples} == {"isearch_hi0", "isearch_hi3"}


@pytest.mark.parametrize(
    "change,message",
    [
        ({"interval_search": {"arm": "nope", "scales": [1.0], "num_samples": 8}}, "interval_search.arm 'nope'"),
        (
            {"guidance_arms": [{"name": "isearch_hi0", "method": "cfg", "scales": [1.0]}]},
            "guidance_arms: names starting with 'isearch_' belong to interval_search",
        ),
    ],
)
def test_bad_search_config_is_one_clear_line(tmp_path, change, message):
    cfg = {**without_arms(smoke_cfg()), **change}
    assert one_line_error(tmp_path, cfg).startswith(f"invalid config: {message}")


def test_smoke_search_is_small():
    search = yaml.safe_load(SMOKE.read_text())["interval_search"]
    assert search["num_samples"] <= 16 and len(search["scales"]) == 1
