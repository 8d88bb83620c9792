"""SLURM: how jobs ask for GPUs (both request forms, rendered by the executor plugin's own code),
and a real single-node cluster running the smoke config through `--workflow-profile profiles/slurm`.

The cluster (slurmctld + slurmd + munge on 127.0.0.1, two fake GPUs declared as GRES) is started
by tests/workflow/slurm/start_slurm.sh and stopped by PID in the fixture's finalizer. It needs root; it
installs slurm-wlm + munge with apt-get if they are missing (.ci/run installs them beforehand).
Without root or apt the cluster tests skip with the reason, unless ADM_BENCH_REQUIRE_SLURM=1
(.ci/run sets it where it installed SLURM), where they fail instead.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from snakemake_executor_plugin_slurm import Executor
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / ".test" / "config" / "config.yaml"
SCRIPTS = ROOT / "tests" / "workflow" / "slurm"
PROFILE = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
GPU_RULES = {"train_diffusion", "train_classifier", "sample", "evaluate"}
CPU_RULES = {"prepare_data", "build_reference", "featurenet", "merge_shards"}
# the guidance arms' jobs take the resources of sample, evaluate and train_diffusion (arms.smk)
ARM_GPU_RULES = {"arm_sample", "arm_evaluate", "train_cfg_model"}
# the smoke config with one GPU per GPU rule and a smaller sweep (1 scale x 2 shards)
GPU_SMOKE = {
    "resources": {
        **{r: {"threads": 1, "gpu": 1} for r in GPU_RULES},
        **{r: {"threads": 1} for r in ("prepare_data", "featurenet")},
    },
    "sampling": {"scales": [1.0]},
    "upsample": {"enabled": False},  # its rules' requests: tests/workflow/test_upsample_dag.py
}
# the real-cluster runs: the Table 1 jobs only (the arms' requests are checked by the dry runs above)
CLUSTER_SMOKE = {**GPU_SMOKE, "guidance_arms": [], "sampling": {"scales": [1.0], "seeds": [0]}}

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def snakemake(workdir: Path, *args: str, configs=()) -> list[str]:
    """The venv's snakemake on the repository's Snakefile, run from the repository root (so the
    README's `--workflow-profile profiles/slurm` works) with its files in `workdir`."""
    paths = []
    for i, cfg in enumerate(configs):
        paths.append(workdir / f"override{i}.yaml")
        paths[-1].write_text(yaml.safe_dump(cfg))
    return [
        sys.executable,
        "-m",
        "snakemake",
        *args,
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(SMOKE),
        *map(str, paths),
    ]


def run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- request forms (dry run, no cluster)


class Resources(dict):
    """A job's resources as the plugin reads them: `.get(key)` and `.key`."""

    __getattr__ = dict.__getitem__


def dry_run_jobs(tmp_path: Path, *configs: dict, shell: list | None = None) -> list[tuple[str, dict, int]]:
    """(rule, resources, threads) of every job of a dry run with the SLURM profile; its shell
    commands are appended to `shell` when given."""
    res = run(snakemake(tmp_path, "-n", "-p", "--workflow-profile", "profiles/slurm", configs=configs))
    assert res.returncode == 0, res.stderr[-2000:]
    if shell is not None:
        shell.append(res.stdout)
    jobs = []
    for block in re.split(r"^(?=(?:local)?rule \w+:$)", res.stdout, flags=re.M)[1:]:
        rule = re.match(r"(?:local)?rule (\w+):", block).group(1)
        items = re.search(r"^\s+resources: (.*)$", block, re.M).group(1).split(", ")
        resources = Resources()
        for key, value in (item.split("=", 1) for item in items):
            resources[key] = int(value) if value.isdigit() else value
        threads = re.search(r"^\s+threads: (\d+)$", block, re.M)
        jobs.append((rule, resources, int(threads.group(1)) if threads else 1))
    return jobs


def sbatch_call(resources: Resources, threads: int, monkeypatch) -> str:
    """The sbatch command line the SLURM plugin builds for a job (its own functions, no cluster)."""
    monkeypatch.setattr("snakemake_executor_plugin_slurm.validate_account", lambda acct, log: acct)
    job = SimpleNamespace(resources=resources, threads=threads)
    plugin = SimpleNamespace(_partitions=None, _fallback_partition=None, _fallback_account_arg="", logger=None)
    params = {
        "run_uuid": "uuid",
        "slurm_logfile": "log",
        "comment_str": "c",
        "workdir": "w",
        "account": next(Executor.get_account_arg(plugin, job)) if "slurm_account" in resources else "",
        "partition": Executor.get_partition_arg(plugin, job) if "slurm_partition" in resources else "",
    }
    return get_submit_command(job, params) + set_gres_string(job)


def gpu_flags(call: str) -> list[str]:
    return re.findall(r"--(?:gpus|gres)=\S+", call)


@pytest.mark.parametrize(
    "slurm, expected",
    [
        ({}, "--gpus=1"),
        ({"gpu_model": "a100"}, "--gpus=a100:1"),
        ({"gpu_request": "gres"}, "--gres=gpu:1"),
        ({"gpu_request": "gres", "gpu_model": "a100"}, "--gres=gpu:a100:1"),
    ],
)
def test_gpu_request_form(tmp_path, monkeypatch, slurm, expected):
    """Exactly one GPU flag in the configured form on each GPU rule, none on CPU rules."""
    jobs = dry_run_jobs(tmp_path, GPU_SMOKE, {"slurm": slurm})
    rules = {rule for rule, _, _ in jobs}
    assert GPU_RULES | ARM_GPU_RULES | CPU_RULES | {"arm_merge"} <= rules
    for rule, resources, threads in jobs:
        flags = gpu_flags(sbatch_call(resources, threads, monkeypatch))
        assert flags == ([expected] if rule in GPU_RULES | ARM_GPU_RULES else []), (rule, resources)


def test_multi_gpu_training_in_gres_form(tmp_path, monkeypatch):
    """torchrun's process count follows the GPU request also when it is a GRES string."""
    cfg = {
        "slurm": {"gpu_request": "gres"},
        "resources": {"train_diffusion": {"gpu": 2}, "train_classifier": {"gpu": 2}},
    }
    shell = []
    jobs = {rule: (r, t) for rule, r, t in dry_run_jobs(tmp_path, GPU_SMOKE, cfg, shell=shell)}
    # train_diffusion, train_classifier and train_cfg_model (train_diffusion's resources)
    assert shell[0].count("torch.distributed.run --standalone --nproc_per_node 2 -m adm train-") == 3
    assert gpu_flags(sbatch_call(*jobs["train_cfg_model"], monkeypatch)) == ["--gres=gpu:2"]
    assert gpu_flags(sbatch_call(*jobs["train_diffusion"], monkeypatch)) == ["--gres=gpu:2"]


def test_partition_account_cpus_per_gpu_per_rule(tmp_path, monkeypatch):
    cfg = {
        "resources": {
            "sample": {"threads": 4, "gpu": 1, "cpus_per_gpu": 4, "slurm_partition": "gpu", "slurm_account": "proj1"},
            "prepare_data": {"slurm_partition": "cpu", "slurm_account": "proj2"},
        }
    }
    for rule, resources, threads in dry_run_jobs(tmp_path, GPU_SMOKE, cfg):
        call = sbatch_call(resources, threads, monkeypatch)
        if rule in ("sample", "arm_sample"):
            assert " -p gpu " in call and " -A proj1 " in call and "--cpus-per-gpu=4" in call
            assert "--cpus-per-task" not in call
        elif rule == "prepare_data":
            assert " -p cpu " in call and " -A proj2 " in call and "--cpus-per-task=1" in call
        else:
            assert " -p " not in call and " -A " not in call, rule


@pytest.mark.parametrize(
    "slurm, resources, key",
    [
        ({"gpu_request": "both"}, {}, "slurm.gpu_request"),
        ({"gpu_model": "a100;rm"}, {}, "slurm.gpu_model"),
        ({}, {"sample": {"slurm_partition": "gpu 2"}}, "resources.sample.slurm_partition"),
    ],
)
def test_bad_slurm_config_is_one_line(tmp_path, slurm, resources, key):
    # (without the profile: snakemake itself prints a line naming the profile in use)
    res = run(snakemake(tmp_path, "-n", configs=({"slurm": slurm, "resources": resources},)))
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and "Traceback" not in res.stderr, res.stderr


# ---------------------------------------------------------------- a real cluster


def cannot_run_cluster() -> str | None:
    if sys.platform != "linux":
        return "the SLURM test cluster needs Linux"
    if os.geteuid() != 0:
        return "the SLURM test cluster needs root (slurmd runs jobs as their user)"
    if not shutil.which("slurmctld", path="/usr/sbin") and not shutil.which("apt-get"):
        return "SLURM is not installed and there is no apt-get to install slurm-wlm + munge"
    return None


def skip_or_fail(reason: str):
    if os.environ.get("ADM_BENCH_REQUIRE_SLURM") == "1":
        pytest.fail(f"ADM_BENCH_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


def started_daemons(state: Path) -> list[int]:
    path = state / "started"
    return [int(line.split()[1]) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if reason := cannot_run_cluster():
        skip_or_fail(reason)
    state = tmp_path_factory.mktemp("slurm")
    try:
        res = subprocess.run(
            [str(SCRIPTS / "start_slurm.sh"), str(state)],
            capture_output=True,
            text=True,
            timeout=600,
            env=dict(os.environ, FAKE_GPUS="2"),
        )
        if res.returncode == 3:
            skip_or_fail(res.stderr.strip().splitlines()[-1])
        assert res.returncode == 0, res.stdout + res.stderr
        assert "gpu:fake:2" in res.stdout
        yield state
    finally:
        pids = started_daemons(state)
        subprocess.run([str(SCRIPTS / "stop_slurm.sh"), str(state)], timeout=120)
        alive = [p for p in pids if Path(f"/proc/{p}").exists()]
        assert not alive, f"SLURM test daemons still running: {alive}"


def slurm(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=True).stdout


def cluster_jobs() -> dict[int, dict[str, str]]:
    """Every job the cluster still remembers (MinJobAge=3600): id -> scontrol's fields."""
    jobs = {}
    for line in slurm("scontrol", "show", "job", "-o").splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "JobId" in fields:
            jobs[int(fields["JobId"])] = fields
    return jobs


def kill_while_running(proc: subprocess.Popen, comment: str, timeout: float) -> list[int]:
    """Cancel every attempt of the job labelled `comment` once its job step (the program) runs,
    as SLURM does at the wall-time limit (SIGTERM, then SIGKILL after KillWait), until the
    workflow exits. Returns the killed job ids."""
    killed = []
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        for line in slurm("squeue", "-h", "-o", "%i|%T|%k").splitlines():
            job, state, label = line.split("|", 2)
            if label == comment and state == "RUNNING" and int(job) not in killed:
                if f"{job}.0" in slurm("squeue", "-h", "-s", "-j", job, "-o", "%i").split():
                    slurm("scancel", job)
                    killed.append(int(job))
        time.sleep(0.5)
    return killed


def digest(path: Path) -> tuple[int, str]:
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def cluster_runs(cluster, tmp_path_factory):
    """Run 1 (`--gpus` form): the sampling job of shard 1 is killed at every attempt, the rest
    of the DAG finishes (keep-going). Run 2 (`--gres` form, `--rerun-incomplete`): the rest."""
    workdir = tmp_path_factory.mktemp("slurm_smoke")
    fast = ["--workflow-profile", "profiles/slurm", "--slurm-init-seconds-before-status-checks", "1"]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    start = time.monotonic()
    with open(workdir / "run1.log", "w") as log:
        proc = subprocess.Popen(
            snakemake(workdir, *fast, configs=(CLUSTER_SMOKE,)),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            killed = kill_while_running(proc, "rule_sample_wildcards_1_1", timeout=900)
        finally:
            if proc.poll() is None:
                proc.kill()
    first = SimpleNamespace(
        returncode=proc.wait(), output=(workdir / "run1.log").read_text(), killed=killed, jobs=cluster_jobs()
    )
    shards = {p.name: digest(p) for p in (workdir / "results/smoke/samples/scale1").glob("*.npz")}
    models = {p.name: digest(p) for p in (workdir / "results/smoke").glob("*/*.pt")}
    res = run(
        snakemake(
            workdir,
            *fast,
            "--rerun-incomplete",
            configs=(CLUSTER_SMOKE, {"slurm": {"gpu_request": "gres", "gpu_model": "fake"}}),
        ),
        timeout=900,
    )
    second = SimpleNamespace(
        returncode=res.returncode,
        output=res.stdout + res.stderr,
        jobs={k: v for k, v in cluster_jobs().items() if k not in first.jobs},
    )
    elapsed = time.monotonic() - start
    print(f"SLURM smoke runs (killed shard + rerun): {elapsed:.0f} s")
    return SimpleNamespace(workdir=workdir, first=first, second=second, shards=shards, models=models, elapsed=elapsed)


def rules_of(jobs: dict) -> dict[str, list[dict]]:
    by_rule = {}
    for fields in jobs.values():
        rule = re.match(r"rule_(\w+?)(?:_wildcards_|$)", fields["Comment"]).group(1)
        by_rule.setdefault(rule, []).append(fields)
    return by_rule


def gpu_request(fields: dict) -> str | None:
    return fields.get("TresPerJob") or fields.get("TresPerNode")


@pytest.mark.slow
def test_killed_shard_is_reported_with_its_logs(cluster_runs):
    first, _workdir = cluster_runs.first, cluster_runs.workdir
    attempts = PROFILE["retries"] + 1
    assert len(first.killed) == attempts, first.output[-3000:]
    assert first.returncode != 0
    error = first.output.rsplit("Error in rule sample:", 1)[1][:1500]  # the last attempt
    assert "output: results/smoke/samples/scale1/shard1.npz" in error and "CANCELLED" in error
    assert "results/smoke/logs/sample/scale1_shard1.log" in error
    slurm_log = re.search(rf"\S+/\.snakemake/slurm_logs/\S+/{first.killed[-1]}\.log", error)
    assert slurm_log and Path(slurm_log.group()).is_file(), error
    assert first.output.count("Error in rule") == attempts  # nothing else failed
    assert set(cluster_runs.shards) == {"shard0.npz"}  # the killed shard left no file


@pytest.mark.slow
def test_rerun_redoes_only_the_killed_shard(cluster_runs):
    second, workdir = cluster_runs.second, cluster_runs.workdir
    assert second.returncode == 0, second.output[-3000:]
    assert (workdir / "results/report.html").is_file()
    sample_jobs = rules_of(second.jobs)["sample"]
    assert [j["Comment"] for j in sample_jobs] == ["rule_sample_wildcards_1_1"]
    assert set(rules_of(second.jobs)) == {"sample", "merge_shards", "evaluate"}
    run_dir = workdir / "results/smoke"
    assert digest(run_dir / "samples/scale1/shard0.npz") == cluster_runs.shards["shard0.npz"]
    assert {p.name: digest(p) for p in run_dir.glob("*/*.pt")} == cluster_runs.models
    assert (run_dir / "samples/scale1/shard1.npz").is_file()


@pytest.mark.slow
def test_gpu_rules_asked_for_gpus_and_cpu_rules_did_not(cluster_runs):
    """What the cluster itself recorded: `--gpus=1` in run 1, `--gres=gpu:fake:1` in run 2."""
    for jobs, form in ((cluster_runs.first.jobs, "gres:gpu:1"), (cluster_runs.second.jobs, "gres:gpu:fake:1")):
        for rule, entries in rules_of(jobs).items():
            for fields in entries:
                assert gpu_request(fields) == (form if rule in GPU_RULES else None), (rule, fields)
    # run 1 ran all but the killed shard's descendants; run 2 those
    ran = set(rules_of(cluster_runs.first.jobs)) | set(rules_of(cluster_runs.second.jobs))
    assert ran == GPU_RULES | CPU_RULES
