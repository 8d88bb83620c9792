"""The cost-quality frontier in the DAG (workflow/rules/frontier.smk and workflow/lib/frontier.py):
the named target's jobs and commands on the smoke config, the gold row read from Table 1's files
where it is the sweep's own setting, nothing of it in the default run, and the shipped configs'
frontier sections.

What each test catches (mutants tried by hand):
- a point sampled with the sweep's sampler instead of its own (no --sampler / wrong respacing),
  a solver without its step schedule, the Table 1 seed not used          -> test_smoke_frontier_dry_run
- the gold row re-sampled although Table 1 has it, or a DDPM-250 gold read from the DDPM-25 sweep -> test_gold_*
- frontier jobs in `rule all`                                            -> test_default_run_has_no_frontier_job
- the paper's section switched on, or its grid not the one its GPU-hours comment prices -> test_shipped_configs
"""

from __future__ import annotations

import re

import pytest
import yaml
from test_workflow import DEMO, IMAGENET, SMOKE, job_counts, snakemake

from workflow.lib import frontier

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _cfg(path) -> dict:
    cfg = yaml.safe_load(path.read_text())
    cfg["sampling"].setdefault("sampler", "ddpm")  # the schema's default, as the workflow sees it
    return cfg


def _dry(tmp_path, cfg, *targets):
    res = snakemake(
        tmp_path, *targets, "-n", "-p", "--cores", "2", "--configfile", str(cfg)
    )  # targets first: --configfile takes several
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def _commands(out: str, rule: str) -> dict[str, str]:
    """{output: shell command} of the dry run's jobs of one rule."""
    jobs = {}
    for block in out.split("\nrule ")[1:]:
        if block.split(":", 1)[0] != rule:
            continue
        output = re.search(r"output: ([^\n]*)", block).group(1)
        jobs[output] = re.search(r"\n(?:Shell command: )?(?:exec )?(\S*python\S* -m [^\n]*)", block).group(1)
    return jobs


def test_smoke_frontier_dry_run(tmp_path):
    out = _dry(tmp_path, SMOKE, "frontier")
    counts = job_counts(out)
    # 2 solvers x 1 step count x 1 scale x 2 shards; the gold row is Table 1's scale 1 (2 shards)
    assert counts["frontier_sample"] == 4 and counts["frontier_merge"] == 2 and counts["frontier_evaluate"] == 2
    assert counts["sample"] == 2 and counts["merge_shards"] == 1 and counts["evaluate"] == 1
    assert counts["frontier_report"] == 1 and counts["frontier"] == 1
    assert not {"arm_sample", "table1", "report_html", "upsample"} & set(counts)
    cmds = _commands(out, "frontier_sample")
    assert sorted(cmds) == [
        f"results/smoke/frontier/{v}/steps2/samples/scale1/shard{k}.npz" for v in ("ddim", "dpmpp-2m") for k in (0, 1)
    ]
    for output, cmd in cmds.items():
        assert "--scale 1 " in cmd and "--seed 0 " in cmd and "--classifier results/smoke/classifier/model.pt" in cmd
        if "/ddim/" in output:
            assert "--respacing ddim2 " in cmd and "--sampler" not in cmd and "--step-schedule" not in cmd
        else:
            assert "--respacing 2 " in cmd and "--sampler dpmpp-2m --step-schedule uniform" in cmd
    assert "results/smoke/benchmarks/frontier_sample/dpmpp-2m_steps2_scale1_shard0.tsv" in out


def test_default_run_has_no_frontier_job(tmp_path):
    out = _dry(tmp_path, SMOKE)
    assert not {r for r in job_counts(out) if r.startswith("frontier")}
    assert "/frontier/" not in out and "frontier.md" not in out


def test_gold_is_the_table1_sweep_where_it_is_its_setting():
    paper = _cfg(IMAGENET)
    paper["frontier"]["enabled"] = True
    assert frontier.gold(paper) == ("ddpm", 250)
    entries = frontier.entries(paper)
    golds = [e for e in entries if e["gold"]]
    assert [e["path"] for e in golds] == [
        "results/imagenet128/metrics/scale0.5.json",
        "results/imagenet128/metrics/scale1.json",
    ]
    assert golds[1]["benchmarks"][9] == "results/imagenet128/benchmarks/sample/scale1_shard9.tsv"
    solvers = len(paper["frontier"]["solvers"])  # 4: DDIM, DPM-Solver++(2M), (2M) SDE, (3M)
    assert solvers == 4 and len(entries) == 2 * (1 + solvers * 5)
    shards = [t for t in frontier.targets(paper) if t.endswith(".npz")]
    assert len(shards) == 2 * solvers * 5 * 10 and not any("/ddpm/" in t for t in shards)


def test_gold_of_its_own_where_the_sweep_differs():
    demo = _cfg(DEMO)
    assert frontier.gold(demo) == ("ddpm", 250)  # the demo sweep is DDPM-25: its files are not the gold
    golds = [e for e in frontier.entries(demo) if e["gold"]]
    assert [e["path"] for e in golds] == [
        "results/demo/frontier/ddpm/steps250/metrics/scale0.5.json",
        "results/demo/frontier/ddpm/steps250/metrics/scale1.json",
    ]
    # a grid point equal to the gold row is made once, as the gold row
    demo["frontier"]["solvers"] = ["ddpm", "dpmpp-2m"]
    demo["frontier"]["steps"] = [25, 250]
    points = frontier.points(demo)
    assert points[:4] == [
        ("ddpm", 250, "0.5", True),
        ("ddpm", 25, "0.5", False),
        ("dpmpp-2m", 25, "0.5", False),
        ("dpmpp-2m", 250, "0.5", False),
    ]
    assert frontier.point_file(demo, "ddpm", 25, "1", "metrics") == "results/demo/metrics/scale1.json"  # the sweep's
    demo["frontier"]["step_schedule"] = "karras"
    demo["sampling"]["sampler"] = "dpmpp-2m"
    assert not frontier.is_table1(demo, "dpmpp-2m", 25, "1")  # the sweep's nodes are time-uniform


def test_shipped_configs():
    paper = yaml.safe_load(IMAGENET.read_text())["frontier"]
    assert paper["enabled"] is False  # ready, off: 9.4 GPU-hours at peak (comment above it)
    nfe = len(paper["solvers"]) * len(paper["scales"]) * sum(paper["steps"])
    assert nfe == 960 and nfe * 50_000 * 700.4e9 / 989e12 / 3600 == pytest.approx(9.44, abs=0.01)
    demo = yaml.safe_load(DEMO.read_text())["frontier"]
    assert demo["enabled"] and demo["gold"] == {"sampler": "ddpm", "steps": 250}
    assert {"dpmpp-2m", "ddim", "dpmpp-2m-sde"} <= set(demo["solvers"]) and max(demo["steps"]) <= 25  # >= 10x fewer NFE
    assert "dpmpp-2m-sde" in paper["solvers"]  # the demo's cheapest in-interval solver, measured on ADM there


def test_bad_frontier_steps_is_one_line(tmp_path):
    from test_workflow import write_config

    cfg = write_config(tmp_path / "c.yaml", SMOKE, frontier__steps=[2, 2000])
    res = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(cfg))
    assert res.returncode == 1
    assert "invalid config: frontier: ddim cannot take 2000 steps from the 1000-step diffusion" in res.stderr
