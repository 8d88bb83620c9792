"""The Snakemake workflow: smoke config end to end, dry runs of the demo and ImageNet DAGs, lint,
formatting, and one-line errors for bad configs.

The end-to-end run uses the real rules and programs at tiny sizes (.test/config/config.yaml) in a
temporary working directory, so it never touches results/ of the repository.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / ".test" / "config" / "config.yaml"
DEMO = ROOT / "config" / "config.yaml"
IMAGENET = ROOT / "config" / "imagenet128.yaml"
PAPER_SCALES = ["0", "0.5", "1", "2", "3", "5", "7.5", "10"]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def snakemake(workdir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run snakemake as from an activated venv (its bin first on PATH) on the repository's
    Snakefile in `workdir`."""
    env = dict(
        os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", VIRTUAL_ENV=sys.prefix
    )
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        *args,
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
    ]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


def venv_snakemake(
    workdir: Path, *args: str, timeout: float = 600, in_place: bool = False
) -> subprocess.CompletedProcess:
    """Run the venv's `snakemake` script WITHOUT activating the venv, with a PATH whose first
    `python` / `python3` is another interpreter (one that fails, like a system Python without
    PIL): the rules must still run the venv's interpreter."""
    fake = workdir / "fakebin"
    fake.mkdir(exist_ok=True)
    for name in ("python", "python3"):
        (fake / name).write_text("#!/bin/sh\necho 'not the venv python' >&2\nexit 1\n")
        (fake / name).chmod(0o755)
    venv_bin = str(Path(sys.executable).parent)
    rest = [p for p in os.environ["PATH"].split(os.pathsep) if p and p != venv_bin]
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = os.pathsep.join([str(fake), *rest])
    cmd = [str(Path(venv_bin) / "snakemake"), *args]
    if not in_place:  # in_place: `workdir` is a copy of the repository, run as a user runs it
        cmd += ["--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir)]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a (dry) run: {rule: count}."""
    block = output.split("Job stats:", 1)[1]
    counts = {}
    for line in block.splitlines()[3:]:
        m = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def write_config(path: Path, base: Path, **changes) -> Path:
    """A copy of `base` with top-level/nested keys changed (nested: dotted names, e.g. sampling.scales)."""
    cfg = yaml.safe_load(base.read_text())
    for key, value in changes.items():
        node = cfg
        *parents, last = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


# ---------------------------------------------------------------- smoke config, end to end


# the `smoke` fixture (the smoke DAG, run once per session) lives in tests/conftest.py


@pytest.mark.slow
def test_smoke_end_to_end(smoke):
    workdir, elapsed = smoke
    run = workdir / "results" / "smoke"
    scales = ["0", "1", "10"]
    for s in scales:
        assert (run / f"metrics/scale{s}.json").is_file()
        assert (run / f"grids/scale{s}.png").is_file()
        for k in range(2):
            assert (run / f"samples/scale{s}/shard{k}.npz").is_file()
    for ext in ("csv", "md", "tex"):
        assert "demo feature network" in (run / f"table1.{ext}").read_text().replace("---", "—")
    # the resolved config beside the results: the smoke config and the schema's defaults, no demo key
    from test_config_resolution import layered

    assert yaml.safe_load((run / "config.yaml").read_text()) == layered(workdir, [".test/config/config.yaml"])
    for name in ("fid_sfid", "inception_score", "precision_recall"):
        assert (run / f"plots/{name}.png").is_file() and (run / f"plots/{name}.svg").is_file()
    html = (workdir / "results" / "report.html").read_text()
    assert html == (run / "report.html").read_text()
    assert "demo feature network" in html and html.count("data:image/png;base64,") >= 3 + len(scales)
    for s in scales:
        assert f"scale {s}" in html
    for sub in ("sample", "evaluate"):
        assert len(list((run / "benchmarks" / sub).glob("*.tsv"))) >= len(scales)
    # guidance arms and the second seed set (workflow/rules/arms.smk; tests/workflow/test_workflow_arms.py)
    for arm, seed in (("interval", 0), ("interval", 1), ("cfg", 0), ("cfg", 1), ("classifier", 1)):
        assert (run / f"arms/{arm}/seed{seed}/metrics/scale1.json").is_file(), (arm, seed)
    assert not (run / "arms/classifier/seed0").exists()  # seed 0 of the sweep is Table 1 itself
    assert (run / "cfg_model/ema.pt").is_file() and " ± " in (run / "comparison.md").read_text()
    assert "Guidance methods compared" in html
    # the upsampling stage (upsample.smk), demo arrangement, scale 10: every rule of it ran
    up = run / "upsample"
    for path in (
        "model/ema.pt",
        "model/model.pt",
        "model/log.csv",
        "lowres/scale10.npz",
        "samples/scale10.npz",
        "samples/scale10/shard0.npz",
        "samples/scale10/shard1.npz",
        "metrics/scale10.json",
        "grids/scale10.png",
        "grids/lowres_scale10.png",
        "upsample_table.csv",
    ):
        assert (up / path).is_file(), path
    with np.load(up / "lowres/scale10.npz") as low, np.load(up / "samples/scale10.npz") as high:
        assert low["arr_0"].shape == (16, 4, 4, 3) and high["arr_0"].shape == (16, 8, 8, 3)
        np.testing.assert_array_equal(low["arr_1"], high["arr_1"])
    table = (up / "upsample_table.md").read_text()
    label = "demo arrangement: base samples downsampled 8→4 then upsampled 4→8; not the paper's 128→512"
    assert label in table and "| 10 | base | 8x8 |" in table and "| 10 | upsampled 4→8 | 8x8 |" in table
    assert "Upsampling stage (ADM-G + ADM-U)" in html and label.replace("'", "&#x27;") in html
    # (its wall time is printed, not asserted: speed is a benchmark's business, not a test's)


@pytest.mark.slow
def test_arms_are_compared_in_the_report(smoke):
    """comparison.md, the trade-off plots and the report section of the arms (tests/workflow/test_workflow_arms.py)."""
    from test_workflow_arms import check_comparison

    check_comparison(smoke[0])


@pytest.mark.slow
def test_upsample_job_with_a_wrong_checkpoint_fails_in_one_line(smoke, tmp_path):
    """Bad input reaching the upsampling stage (here a base model where its checkpoint is) stops
    that job with ONE error line in its log, no traceback, no shard, and Snakemake names the log."""
    import shutil

    from adm.nets.build import build_model
    from adm.nets.checkpoints import save_model
    from adm.nets.presets import get_preset

    copy = tmp_path / "w"
    shutil.copytree(smoke[0], copy, symlinks=True)  # the session's run stays as it is
    base = get_preset("demo-digits")
    save_model(
        build_model(base),
        base,
        copy / "results/smoke/upsample/model/ema.pt",
        diffusion=get_preset("demo-digits", "diffusion"),
    )
    shard = "results/smoke/upsample/samples/scale10/shard0.npz"
    (copy / shard).unlink()
    res = snakemake(copy, shard, "--cores", "1", "--configfile", str(SMOKE), "--rerun-triggers", "mtime")
    assert res.returncode != 0 and not (copy / shard).exists()
    log_name = "results/smoke/logs/upsample/sample/scale10_shard0.log"
    assert log_name in res.stdout + res.stderr
    lines = (copy / log_name).read_text().strip().splitlines()
    assert "Traceback" not in "\n".join(lines) and lines[-1].startswith("error: ")
    assert "not a super-resolution model" in lines[-1] and sum(line.startswith("error:") for line in lines) == 1


@pytest.mark.slow
def test_second_run_does_nothing(smoke):
    workdir, _ = smoke
    res = snakemake(workdir, "-n", "--cores", "2", "--configfile", str(SMOKE))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Nothing to be done" in res.stdout + res.stderr


@pytest.mark.slow
def test_deleted_shard_reruns_only_its_descendants(smoke):
    workdir, _ = smoke
    shard = workdir / "results/smoke/samples/scale1/shard1.npz"
    with np.load(shard) as data:
        before = {k: data[k] for k in data}
    shard.unlink()
    res = snakemake(workdir, "-n", "--cores", "2", "--configfile", str(SMOKE))
    assert res.returncode == 0, res.stderr[-2000:]
    counts = job_counts(res.stdout + res.stderr)
    assert counts == {
        "sample": 1,
        "merge_shards": 1,
        "evaluate": 1,
        "sample_grid": 1,
        "table1": 1,
        "trend_plots": 1,
        "comparison": 1,
        "tradeoff_plots": 1,
        "report_html": 1,
        "publish_report": 1,
        "default": 1,
        "total": 11,
    }
    jobs = re.findall(r"wildcards: (scale=[\d.]+(?:, shard=\d+)?)", res.stdout)
    assert sorted(jobs) == ["scale=1", "scale=1", "scale=1", "scale=1, shard=1"]
    # and for real: the re-made shard is the same images (noise depends on seed and index only)
    res = snakemake(workdir, "--cores", "2", "--configfile", str(SMOKE))
    assert res.returncode == 0, (res.stdout + res.stderr)[-2000:]
    with np.load(shard) as data:
        for key, value in before.items():
            np.testing.assert_array_equal(data[key], value, err_msg=key)


@pytest.mark.slow
def test_deleted_metrics_file_is_remade(smoke):
    """Issue 24: a metrics JSON deleted alone (its table and report up to date) used to leave the
    folder incomplete with "Nothing to be done"; `rule all` names it now (workflow/lib/targets.py).
    A dry run only; the file is put back with its bytes and mtime, so the folder is as it was."""
    workdir, _ = smoke
    metrics = workdir / "results/smoke/metrics/scale1.json"
    data, stat = metrics.read_bytes(), metrics.stat()
    metrics.unlink()
    try:
        res = snakemake(workdir, "-n", "--cores", "2", "--configfile", str(SMOKE))
    finally:
        metrics.write_bytes(data)
        os.utime(metrics, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert res.returncode == 0, res.stderr[-2000:]
    counts = job_counts(res.stdout + res.stderr)
    assert counts.get("evaluate") == 1, counts
    assert {"table1", "report_html", "comparison"} <= set(counts), counts  # what reads it is remade
    assert not {"sample", "merge_shards", "train_diffusion", "train_classifier"} & set(counts), counts
    assert re.findall(r"wildcards: (\S.*)", res.stdout) == ["scale=1"]  # the evaluation of scale 1 only


@pytest.mark.slow
def test_snakemake_report_zip(smoke):
    """`snakemake --report report.zip` (what .snakemake-workflow-catalog.yml promises) collects
    Table 1, the plots, the grids and report.html with their captions."""
    import zipfile

    workdir, _ = smoke
    res = snakemake(workdir, "--report", "report.zip", "--configfile", str(SMOKE))
    assert res.returncode == 0, (res.stdout + res.stderr)[-2000:]
    names = zipfile.ZipFile(workdir / "report.zip").namelist()
    for part in ("table1.md", "fid_sfid.png", "scale10.png", "report.html"):
        assert any(n.endswith(part) for n in names), (part, names[:20])


# ---------------------------------------------------------------- dry runs of the real configs


def test_demo_dry_run(tmp_path):
    res = snakemake(tmp_path, "-n", "--cores", "2", "--configfile", str(DEMO))
    assert res.returncode == 0, res.stderr[-2000:]
    counts = job_counts(res.stdout)
    cfg = yaml.safe_load(DEMO.read_text())["sampling"]
    assert cfg["num_samples"] >= 500 and cfg["steps"] == 25
    assert counts["sample"] == 8 * cfg["num_shards"] and counts["evaluate"] == 8
    assert counts["featurenet"] == counts["train_diffusion"] == counts["train_classifier"] == 1


@pytest.mark.parametrize("pretrained", [True, False])
def test_imagenet_dry_run(tmp_path, pretrained):
    folder = tmp_path / "imagenet"
    folder.mkdir()
    cfg = write_config(tmp_path / "c.yaml", IMAGENET, pretrained=pretrained, imagenet_dir=str(folder))
    res = snakemake(tmp_path, "-n", "-p", "--cores", "2", "--configfile", str(cfg))
    assert res.returncode == 0, res.stderr[-2000:]
    counts = job_counts(res.stdout)
    shards = yaml.safe_load(IMAGENET.read_text())["sampling"]["num_shards"]
    assert counts["sample"] == 8 * shards and counts["merge_shards"] == counts["evaluate"] == 8
    assert sorted(set(re.findall(r"--scale (\S+)", res.stdout)), key=float) == PAPER_SCALES
    assert "--respacing 250" in res.stdout and "--num-samples 50000" in res.stdout
    assert "featurenet" not in counts
    if pretrained:
        assert counts["download_checkpoint"] == 2 and "train_diffusion" not in counts
        assert "--model-preset imagenet128-cond --classifier-preset imagenet128-classifier" in res.stdout
    else:
        assert counts["train_diffusion"] == counts["train_classifier"] == counts["prepare_data"] == 1
        launcher = f"{sys.executable} -m torch.distributed.run --standalone --nproc_per_node 8"
        assert f"{launcher} -m adm train-diffusion" in res.stdout


def test_checkpoint_download_rule(tmp_path):
    """The pretrained branch's download rule, against a file:// "server" (no network needed). The
    file it serves is a torch zip archive but not the preset's network, so the rule's role check
    refuses it in one line and keeps nothing (a real-architecture download succeeds in the
    paper-config rehearsal, tests/workflow/test_rehearsal.py)."""
    server = tmp_path / "server"
    server.mkdir()
    import torch

    torch.save({"w": torch.zeros(2)}, server / "128x128_diffusion.pt")  # a .pt file is a zip archive
    cfg = write_config(tmp_path / "c.yaml", IMAGENET, run="dl", checkpoints__base_url=server.as_uri() + "/")
    res = snakemake(tmp_path, "results/dl/pretrained/diffusion.pt", "--cores", "1", "--configfile", str(cfg))
    assert res.returncode != 0
    assert not (tmp_path / "results/dl/pretrained/diffusion.pt").exists()
    log = [line for line in (tmp_path / "results/dl/logs/download_diffusion.log").read_text().splitlines() if line]
    assert len(log) == 1 and log[0].startswith("error: ") and "nothing was kept" in log[0], log


def test_slurm_profile_dry_run(tmp_path):
    res = snakemake(
        tmp_path, "-n", "--workflow-profile", str(ROOT / "profiles" / "slurm"), "--configfile", str(IMAGENET)
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert job_counts(res.stdout)["sample"] >= 8
    assert re.search(r"rule sample:.*?resources:[^\n]*gpu=1", res.stdout, re.S)


def test_ddim_switch(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", SMOKE, sampling__sampler="ddim", sampling__steps=25)
    res = snakemake(tmp_path, "-n", "-p", "--cores", "2", "--configfile", str(cfg))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "--respacing ddim25" in res.stdout


def test_lint_and_format():
    res = snakemake(ROOT, "--lint", "--cores", "1")
    assert res.returncode == 0 and "Congratulations" in res.stdout + res.stderr, res.stdout + res.stderr
    fmt = subprocess.run(
        [str(Path(sys.executable).parent / "snakefmt"), "--check", "Snakefile", "workflow"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert fmt.returncode == 0, fmt.stderr


# ---------------------------------------------------------------- bad configs: one clear line


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"sampling__scales": []}, "invalid config: sampling.scales: [] should be non-empty"),
        ({"sampling__scales": [0, -1]}, "invalid config: sampling.scales.1: -1 is less than the minimum of 0"),
        (
            {"diffusion__preset": "$(touch X)nosuch"},
            "invalid config: diffusion.preset: '$(touch X)nosuch' is not one of",
        ),
        (
            {"classifier__train_preset": "demo-digits --steps 1; touch X #"},
            "invalid config: classifier.train_preset: 'demo-digits --steps 1; touch X #' is not one of",
        ),
        ({"sampling__num_shards": 17}, "invalid config: sampling.num_shards (17) > sampling.num_samples (16)"),
        ({"sampling__sampler": "euler"}, "invalid config: sampling.sampler: 'euler' is not one of"),
        ({"sampling__num_samples": "many"}, "invalid config: sampling.num_samples: 'many' is not of type 'integer'"),
        ({"colour": "blue"}, "invalid config: Additional properties are not allowed ('colour' was unexpected)"),
        (
            {"dataset": "imagenet", "image_size": 128, "pretrained": False},
            "invalid config: dataset imagenet with pretrained: false needs imagenet_dir",
        ),
        (
            {"dataset": "imagenet", "image_size": 128, "pretrained": False, "imagenet_dir": "/nonexistent/imagenet"},
            "invalid config: imagenet_dir '/nonexistent/imagenet' is not a directory",
        ),
        (
            {
                "dataset": "imagenet",
                "image_size": 128,
                "pretrained": True,
                "reference__source": "download",
                "checkpoints__diffusion": "/nonexistent/128x128_diffusion.pt",
            },
            "invalid config: checkpoints.diffusion: no such file '/nonexistent/128x128_diffusion.pt'",
        ),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path, changes, message):
    cfg = write_config(tmp_path / "bad.yaml", SMOKE, **changes)
    res = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(cfg))
    assert res.returncode == 1
    assert res.stdout == "", res.stdout[-2000:]  # no `WorkflowError in file ...` header, no trace
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), res.stderr[-2000:]
