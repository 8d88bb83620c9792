"""Data-parallel training equals one process: torchrun (gloo, 2 CPU ranks) vs a world of one.

Both trainers draw every random number (data order, flips, timesteps, noise) for the GLOBAL
batch and each rank keeps its share, so 2 ranks x B/2 compute the same per-example losses as
1 rank x B, and DDP's all-reduce (mean over ranks of per-rank means) is the global mean.

Two comparisons, and why their tolerances differ:
* vs one process with the same global batch in microbatches of B/2: EXACTLY equal. It adds the
  same two half-batch gradients: g0/2 + g1/2 (DDP divides each rank's gradient by the world size,
  then gloo sums two numbers, which is commutative; the one process scales each microbatch's
  loss by 1/2 and accumulates), and scaling by a power of two is exact in float32.
* vs one process with the whole batch in one pass: equal within float32 rounding, which Adam
  amplifies: its first update is lr * g/|g| per weight, so a gradient that is 0 up to rounding
  (~1e-7 relative of its neighbours) moves by up to +-lr in either direction. The measured gap at
  6 steps is 8.7e-4 = 0.43 lr (the same gap as 1 process in microbatches vs whole batch: it is
  rounding, not DDP), so we allow 2 lr. Rank-dependent noise, the bug this file was written
  for, moved weights by 0.022 = 11 lr.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from adm.data.datasets import prepare_digits
from adm.nets.presets import get_preset
from adm.training.classifier import train_classifier
from adm.training.diffusion import train_diffusion
from adm.training.distributed import choose_device
from adm.training.presets import resolve_train_config

REPO = Path(__file__).resolve().parents[2]
STEPS, SAVE = 6, 2
BATCH = 8  # global batch: 4 per rank under torchrun
LR = 2e-3  # both demo presets' lr


# ----------------------------------------------------------------------------- device choice (fast)


@pytest.mark.parametrize(
    "env, count, want",
    [
        ({}, 0, "cpu"),
        ({"LOCAL_RANK": "3"}, 8, "cpu"),
    ],
)
def test_cpu_ignores_local_rank(env, count, want):
    assert choose_device("cpu", env, count) == want


@pytest.mark.parametrize("local, count", [(0, 1), (0, 8), (1, 8), (7, 8)])
def test_each_local_rank_gets_its_own_gpu(local, count):
    assert choose_device("cuda", {"LOCAL_RANK": str(local)}, count) == f"cuda:{local}"


def test_gpu_devices_of_a_node_are_all_different():
    names = [choose_device("cuda", {"LOCAL_RANK": str(r), "WORLD_SIZE": "4"}, 4) for r in range(4)]
    assert names == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]


def test_plain_python_uses_gpu_0():
    assert choose_device("cuda", {}, 2) == "cuda:0"


@pytest.mark.parametrize(
    "env, count, message",
    [
        ({"LOCAL_RANK": "2"}, 2, "LOCAL_RANK 2 has no GPU of its own: this process sees 2"),
        ({"LOCAL_RANK": "1", "CUDA_VISIBLE_DEVICES": "5"}, 1, "CUDA_VISIBLE_DEVICES=5"),
        ({}, 0, "CUDA is not available"),
    ],
)
def test_no_gpu_for_this_rank_is_a_clear_error(env, count, message):
    with pytest.raises(ValueError, match=message):
        choose_device("cuda", env, count)


# ----------------------------------------------------------------------------- torchrun vs one process


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    d = tmp_path_factory.mktemp("digits")
    prepare_digits(d / "train.npz", d / "heldout.npz", 0.2, 0)
    return d


def _cli(kind: str, data: Path, out: Path, steps: int) -> list[str]:
    preset = "demo-digits" if kind == "diffusion" else "demo-digits-classifier"
    argv = [
        "-m",
        "adm",
        f"train-{kind}",
        "--data",
        str(data / "train.npz"),
        "--out-dir",
        str(out),
        "--model-preset",
        preset,
        "--steps",
        str(steps),
        "--batch-size",
        str(BATCH),
        "--save-interval",
        str(SAVE),
        "--log-interval",
        "1",
        "--threads",
        "1",
        "--no-progress",
    ]
    if kind == "classifier":
        argv += ["--heldout", str(data / "heldout.npz"), "--eval-interval", "3"]
    return argv


def _torchrun(argv: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *argv]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]


def _kill_after_first_checkpoint(proc: subprocess.Popen, ckpt: Path) -> int:
    """kill -9 torchrun and both ranks (by PID, as a job scheduler would) once a checkpoint exists."""
    deadline = time.time() + 240
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    family = psutil.Process(proc.pid).children(recursive=True) + [psutil.Process(proc.pid)]
    for p in family:  # ranks first, so none outlives the agent and writes on
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    psutil.wait_procs(family, timeout=10)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in family)
    return int(torch.load(ckpt, weights_only=True)["step"])


def _one_process(kind: str, data: Path, out: Path, microbatch: int):
    torch.set_num_threads(1)
    flags = dict(steps=STEPS, batch_size=BATCH, save_interval=SAVE, log_interval=1, microbatch=microbatch)
    if kind == "diffusion":
        cfg = resolve_train_config("demo-digits", **flags)
        assert cfg.lr == LR
        train_diffusion(
            data / "train.npz",
            out,
            get_preset("demo-digits"),
            get_preset("demo-digits", "diffusion"),
            cfg,
            progress=False,
        )
    else:
        cfg = resolve_train_config("demo-digits-classifier", eval_interval=3, **flags)
        assert cfg.lr == LR
        train_classifier(
            data / "train.npz",
            data / "heldout.npz",
            out,
            get_preset("demo-digits-classifier"),
            get_preset("demo-digits-classifier", "diffusion"),
            cfg,
            progress=False,
        )
    return torch.load(out / "checkpoint.pt", weights_only=True)


def _weights(state: dict) -> dict[str, torch.Tensor]:
    """Model parameters plus, for the diffusion model, every EMA copy."""
    out = {f"model.{k}": v for k, v in state["model"].items()}
    for rate, ema in state.get("ema", {}).items():
        out.update({f"ema{rate}.{k}": v for k, v in ema.items()})
    return out


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["diffusion", "classifier"])
def test_torchrun_two_ranks_equals_one_process_and_resumes_after_kill(kind, digits, tmp_path):
    full = _torchrun(_cli(kind, digits, tmp_path / "ddp", STEPS))
    killed = _torchrun(_cli(kind, digits, tmp_path / "killed", STEPS))
    at = _kill_after_first_checkpoint(killed, tmp_path / "killed" / "checkpoint.pt")
    assert SAVE <= at < STEPS
    resume = _torchrun(_cli(kind, digits, tmp_path / "killed", STEPS))
    halves = _one_process(kind, digits, tmp_path / "halves", microbatch=BATCH // 2)  # while torchrun works
    whole = _one_process(kind, digits, tmp_path / "whole", microbatch=0)
    _finish(full)
    _finish(resume)

    ddp = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    resumed = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert ddp["step"] == resumed["step"] == halves["step"] == whole["step"] == STEPS
    w_ddp, w_halves, w_whole = _weights(ddp), _weights(halves), _weights(whole)
    gap = _max_diff(w_ddp, w_whole)
    print(
        f"{kind}: max |w_ddp - w_1proc| = {_max_diff(w_ddp, w_halves):.3g} (microbatch B/2), "
        f"{gap:.3g} = {gap / LR:.2f} lr (whole batch) after {STEPS} steps"
    )
    assert _max_diff(w_ddp, w_halves) == 0.0, "2 ranks differ from 1 process adding the same half-batch gradients"
    assert gap <= 2 * LR, f"2 ranks differ from 1 process by {gap:.3g} > 2 lr"
    assert _max_diff(w_ddp, _weights(resumed)) == 0.0, "the killed-and-resumed run differs from the uninterrupted one"
    for a, b in zip(ddp["rng"], resumed["rng"]):  # every rank's RNG state continues identically
        assert torch.equal(a["torch"], b["torch"])
    assert torch.equal(ddp["opt"]["state"][0]["exp_avg_sq"], resumed["opt"]["state"][0]["exp_avg_sq"])
