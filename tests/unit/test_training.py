"""Training loops: kill -9 + resume is bit-exact, NaN stops cleanly, classifier logs, CLI errors."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from adm import cli
from adm.errors import TrainingDiverged
from adm.nets.checkpoints import load_model
from adm.nets.presets import get_preset
from adm.training.classifier import train_classifier
from adm.training.diffusion import train_diffusion
from adm.training.presets import resolve_train_config

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_kill9_and_resume_is_bit_exact(tiny_data, tmp_path):
    steps, flags = 14, dict(save_interval=3, schedule_sampler="loss-second-moment", microbatch=4, grad_clip=1.0)
    cfg = resolve_train_config("tiny-test", steps=steps, **flags)
    train_diffusion(
        tiny_data, tmp_path / "ref", get_preset("tiny-test"), get_preset("tiny-test", "diffusion"), cfg, progress=False
    )

    cmd = [
        sys.executable,
        "-m",
        "adm",
        "train-diffusion",
        "--data",
        str(tiny_data),
        "--out-dir",
        str(tmp_path / "run"),
        "--model-preset",
        "tiny-test",
        "--steps",
        str(steps),
        "--save-interval",
        "3",
        "--microbatch",
        "4",
        "--grad-clip",
        "1",
        "--schedule-sampler",
        "loss-second-moment",
        "--threads",
        "1",
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    deadline = time.time() + 60
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.05)  # land somewhere after the first checkpoint, mid-step or mid-save
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = torch.load(ckpt, weights_only=True)["step"]
    assert 3 <= killed_at < steps
    assert not (tmp_path / "run" / "ema.pt").exists()

    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ref = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=True)
    got = torch.load(ckpt, weights_only=True)
    assert got["step"] == steps
    assert _states_equal(ref["model"], got["model"])
    for rate in ref["ema"]:
        assert _states_equal(ref["ema"][rate], got["ema"][rate])
    assert torch.equal(ref["sampler"]["loss_history"], got["sampler"]["loss_history"])
    assert _states_equal(torch.load(tmp_path / "ref" / "ema.pt"), torch.load(tmp_path / "run" / "ema.pt"))
    with open(tmp_path / "run" / "log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, steps + 1))  # no duplicate rows


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_data, tmp_path, monkeypatch, capsys):
    import adm.training.diffusion as td

    real, calls = td.hybrid_loss, {"n": 0}

    def poisoned(*args, **kwargs):  # NaN from the 5th step on
        calls["n"] += 1
        out = real(*args, **kwargs)
        if calls["n"] >= 5:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(td, "hybrid_loss", poisoned)
    cfg = resolve_train_config("tiny-test", steps=8, save_interval=2)
    with pytest.raises(TrainingDiverged, match="not finite .* at step 5"):
        train_diffusion(
            tiny_data,
            tmp_path / "a",
            get_preset("tiny-test"),
            get_preset("tiny-test", "diffusion"),
            cfg,
            progress=False,
        )
    state = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values())
    calls["n"] = 0
    rc = cli.main(
        [
            "train-diffusion",
            "--data",
            str(tiny_data),
            "--out-dir",
            str(tmp_path / "b"),
            "--model-preset",
            "tiny-test",
            "--steps",
            "8",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 3 and "error: loss is not finite" in err and "Traceback" not in err


def test_full_disk_at_a_checkpoint_save_is_one_line(tiny_data, tmp_path, monkeypatch, capsys):
    """torch's checkpoint writer raises RuntimeError (not OSError) on a full disk; the first saves
    succeed, a later one hits the full disk: one line naming the file and what was kept, exit 2."""
    real, calls = torch.save, {"n": 0}

    def full_disk(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0\nframes: ...")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    argv = ["train-diffusion", "--data", str(tiny_data), "--out-dir", str(tmp_path), "--model-preset", "tiny-test"]
    rc = cli.main([*argv, "--steps", "4", "--save-interval", "2", "--no-progress"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"error: {tmp_path}/") and "could not write the checkpoint (" in lines[0], lines[0]
    assert "unexpected pos 64 vs 0)" in lines[0] and ("is kept" in lines[0] or "nothing was written" in lines[0])
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name or p.name.startswith(".")]


def test_classifier_training_logs_accuracies_and_saves(tiny_data, tmp_path):
    cfg = resolve_train_config("tiny-test-classifier", steps=4, eval_interval=2, microbatch=3)
    out = train_classifier(
        tiny_data,
        tiny_data,
        tmp_path,
        get_preset("tiny-test-classifier"),
        get_preset("tiny-test-classifier", "diffusion"),
        cfg,
        progress=False,
    )
    assert 0.0 <= out["heldout_clean_acc@1"] <= out["heldout_clean_acc@5"] <= 1.0
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[1]["heldout_acc@1"] != "" and rows[0]["heldout_acc@1"] == ""
    model, model_cfg = load_model(tmp_path / "model.pt", expect_kind="classifier")
    assert model_cfg == get_preset("tiny-test-classifier")


def test_train_presets_and_overrides():
    paper = resolve_train_config("imagenet128")
    assert (paper.batch_size, paper.lr, paper.ema_rates) == (256, 1e-4, (0.9999,))
    cfg = resolve_train_config("demo-digits", lr=1e-3, ema_rates=[0.9, 0.99])
    assert cfg.lr == 1e-3 and cfg.ema_rates == (0.9, 0.99) and cfg.steps == resolve_train_config("demo-digits").steps
    with pytest.raises(KeyError, match="unknown training preset"):
        resolve_train_config("nope")
    with pytest.raises(ValueError, match="precision"):
        resolve_train_config(None, precision="fp8")


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["train-diffusion", "--data", "/nonexistent.npz", "--out-dir", "X", "--model-preset", "tiny-test"],
            "not found",
        ),
        (["train-diffusion", "--data", "D", "--out-dir", "X", "--model-preset", "no-such"], "unknown model preset"),
        (["train-classifier", "--data", "D", "--out-dir", "X", "--model-preset", "tiny-test"], "not a classifier"),
    ],
)
def test_cli_user_errors_exit_2_without_traceback(argv, message, capsys, tiny_data):
    argv = [str(tiny_data) if a == "D" else a for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_cli_size_mismatch_in_a_real_process(tmp_path, tiny_data):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "adm",
            "train-diffusion",
            "--data",
            str(tiny_data),
            "--out-dir",
            str(tmp_path),
            "--model-preset",
            "demo-digits",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "16x16 but the model preset expects 8x8" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "checkpoint.pt").exists()
