"""FD_DINOv2 in the DAG (workflow/rules/fd_dinov2.smk): the paper config lists its own rules (one
weights download, DINOv2 features per scale and once for the reference, an FD record per scale,
read by Table 1); the demo config, where the metric is off, lists none."""

from __future__ import annotations

import re

import pytest
from test_workflow import IMAGENET, PAPER_SCALES, SMOKE, job_counts, snakemake, write_config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_paper_config_lists_the_fd_dinov2_rules(tmp_path):
    res = snakemake(tmp_path, "-n", "-p", "--cores", "2", "--configfile", str(IMAGENET))
    assert res.returncode == 0, res.stderr[-2000:]
    counts = job_counts(res.stdout)
    assert counts["download_dinov2"] == 1
    assert counts["dinov2_features"] == len(PAPER_SCALES) + 1  # every scale and the reference
    assert counts["fd_dinov2"] == len(PAPER_SCALES)
    features = re.findall(r"-m adm features-dinov2 --images (\S+)", res.stdout)
    assert sorted(features) == sorted(
        ["results/imagenet128/reference/ref.npz"] + [f"results/imagenet128/samples/scale{s}.npz" for s in PAPER_SCALES]
    )
    assert "--device cuda" in res.stdout and "--cache-dir results/imagenet128/feature_cache" in res.stdout
    fd = re.findall(r"-m evaluations\.fd_features (\S+) (\S+) --bootstrap 10 --out (\S+)", res.stdout)
    assert {f[2] for f in fd} == {f"results/imagenet128/metrics/fd_dinov2_scale{s}.json" for s in PAPER_SCALES}
    assert {f[0] for f in fd} == {"results/imagenet128/dinov2/reference.npz"}
    assert "--pinned-sha256" not in res.stdout  # dinov2_sha256 null: the records say unpinned


def test_pinned_sha256_reaches_every_fd_record(tmp_path):
    """evaluation.dinov2_sha256 set: every FD job (Table 1's, the arms', the published batches')
    passes it to evaluations.fd_features, whose record says whether the weights have it."""
    pin = "ab" * 32
    cfg = write_config(tmp_path / "c.yaml", IMAGENET, evaluation__dinov2_sha256=pin)
    res = snakemake(tmp_path, "-n", "-p", "--cores", "2", "--configfile", str(cfg))
    assert res.returncode == 0, res.stderr[-2000:]
    fd = [line for line in res.stdout.splitlines() if "-m evaluations.fd_features" in line]
    assert fd and all(f"--pinned-sha256 {pin}" in line for line in fd)


def test_demo_and_off_configs_list_none(tmp_path):
    res = snakemake(tmp_path, "-n", "--cores", "2", "--configfile", str(SMOKE))
    assert res.returncode == 0, res.stderr[-2000:]
    assert not {"download_dinov2", "dinov2_features", "fd_dinov2"} & set(job_counts(res.stdout))
    cfg = write_config(tmp_path / "c.yaml", IMAGENET, evaluation__fd_dinov2=False)
    res = snakemake(tmp_path, "-n", "--cores", "2", "--configfile", str(cfg))
    assert res.returncode == 0, res.stderr[-2000:]
    assert not {"download_dinov2", "dinov2_features", "fd_dinov2"} & set(job_counts(res.stdout))


def test_download_rule_refuses_weights_of_another_network(tmp_path):
    """download_dinov2 against a file:// "server" holding an ADM checkpoint under DINOv2's name:
    the job fails with one line naming the problem, and nothing is kept."""
    import torch

    server = tmp_path / "server"
    server.mkdir()
    torch.save({"input_blocks.0.0.weight": torch.zeros(2)}, server / "dinov2_vitl14_pretrain.pth")
    url = (server / "dinov2_vitl14_pretrain.pth").as_uri()
    cfg = write_config(
        tmp_path / "c.yaml",
        IMAGENET,
        run="dl",
        evaluation__dinov2_url=url,
        evaluation__cache_dir=str(tmp_path / "cache"),
    )
    weights = "results/dl/dinov2/dinov2_vitl14_pretrain.pth"
    res = snakemake(tmp_path, weights, "--cores", "1", "--configfile", str(cfg))
    assert res.returncode != 0
    log = (tmp_path / "results/dl/logs/download_dinov2.log").read_text().strip()
    assert len(log.splitlines()) == 1 and "not DINOv2 weights" in log and "nothing was kept" in log, log
    assert not (tmp_path / weights).exists()


def shape_only_dinov2(path) -> str:
    """A file with DINOv2 ViT-L/14's keys and shapes whose tensors all view one float16 zero (33 kB:
    the role check reads keys and shapes only); its sha256."""
    import torch

    from adm.features.dinov2 import DinoV2
    from evaluations.npzio import sha256_file

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in DinoV2().state_dict().items()}
    zero = torch.zeros(1, dtype=torch.float16)
    torch.save({k: zero.reshape([1] * len(s)).expand(s) for k, s in shapes.items()}, path)
    return sha256_file(path)


def test_dinov2_sha256_pin_over_http(tmp_path):
    """evaluation.dinov2_sha256 through download_dinov2, against a local HTTP server: null records
    the served file's sha256 in the run's provenance lock and trusts that record after (a cached
    file changed since is refused); a wrong pin is refused in one line and nothing is kept; the
    right pin is accepted."""
    import json

    import rehearsal_fixtures as rf

    served = tmp_path / "served"
    served.mkdir()
    true_sha = shape_only_dinov2(served / "dinov2_vitl14_pretrain.pth")
    lock = "provenance/dinov2.lock"

    def download(run: str, pin, cache: str):
        cfg = write_config(
            tmp_path / f"{run}.yaml",
            IMAGENET,
            run=run,
            evaluation__dinov2_url=f"{server.url}/dinov2_vitl14_pretrain.pth",
            evaluation__dinov2_sha256=pin,
            evaluation__cache_dir=str(tmp_path / cache),
        )
        res = snakemake(tmp_path, f"results/{run}/{lock}", "--cores", "1", "--configfile", str(cfg))
        log = tmp_path / f"results/{run}/logs/download_dinov2.log"
        return res, (log.read_text().strip() if log.exists() else "")

    with rf.FileServer(served) as server:
        res, _ = download("null", None, "cache")
        assert res.returncode == 0, res.stderr[-3000:]
        assert json.loads((tmp_path / f"results/null/{lock}").read_text())["sha256"] == true_sha
        # trusted after: the cached copy no longer has the recorded sha256 -> refused, one line
        cached = next((tmp_path / "cache").rglob("dinov2_vitl14_pretrain.pth"))
        cached.write_bytes(cached.read_bytes() + b"\0")
        res, log = download("again", None, "cache")
        assert res.returncode != 0 and len(log.splitlines()) == 1, log
        assert "differs from the sha256 recorded at download" in log and true_sha in log, log
        assert not (tmp_path / f"results/again/{lock}").exists()

        res, log = download("wrong", "0" * 64, "cache_wrong")
        assert res.returncode != 0 and len(log.splitlines()) == 1, log
        assert "sha256" in log and "0" * 64 in log and "nothing was kept" in log, log
        assert not (tmp_path / "results/wrong/dinov2/dinov2_vitl14_pretrain.pth").exists()
        assert not [p for p in (tmp_path / "cache_wrong").rglob("*") if p.is_file() and not p.name.endswith(".lock")]

        res, _ = download("right", true_sha, "cache_right")
        assert res.returncode == 0, res.stderr[-3000:]
        assert json.loads((tmp_path / f"results/right/{lock}").read_text())["sha256"] == true_sha
