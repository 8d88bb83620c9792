"""Resume safety: a checkpoint is continued only by the settings that made it; the log survives.

Mutants these tests were checked against (each made a test fail, then was reverted):
- resume compares only model/diffusion/seed/batch (the old check)      -> changed-setting cases
- no `step > steps` guard                                              -> test_checkpoint_past_steps...
- --restart-on-change ignored (raise anyway) / stale checkpoint kept   -> test_restart_on_change...
- train_config.json written before the resume check                    -> changed-setting cases
- the log written to the declared log.csv (deleted by Snakemake)       -> test_kill9_resume_log...
- the unfinished log interval not restored from the checkpoint         -> test_kill9_resume_log...
- no clean_stale_temps(out_dir) at the start of a run                  -> test_unchanged_settings...
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from adm import cli
from adm.data.datasets import save_npz
from adm.nets.presets import get_preset
from adm.training.classifier import train_classifier
from adm.training.diffusion import train_diffusion
from adm.training.log import DIFFUSION_COLUMNS, TIMING_COLUMNS
from adm.training.presets import resolve_train_config

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]


def _images(seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8), rng.integers(0, 10, 40)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    save_npz(d / "a.npz", *_images(0))
    save_npz(d / "b.npz", *_images(1))  # same shape, other images: only its hash tells them apart
    return d


def _train(data_file, out, **overrides):
    cfg = resolve_train_config("tiny-test", **{"steps": 2, **overrides})
    return train_diffusion(
        data_file, out, get_preset("tiny-test"), get_preset("tiny-test", "diffusion"), cfg, progress=False
    )


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A finished 2-step run (checkpoint.pt at step 2)."""
    out = tmp_path_factory.mktemp("run")
    _train(data / "a.npz", out)
    return out


def _copy_run(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"lr": 2e-3}, "lr"),
        ({"batch_size": 4}, "batch_size"),
        ({"microbatch": 4}, "microbatch"),
        ({"weight_decay": 0.1}, "weight_decay"),
        ({"ema_rates": (0.5,)}, "ema_rates"),
        ({"schedule_sampler": "loss-second-moment"}, "schedule_sampler"),
        ({"lr_anneal_steps": 9}, "lr_anneal_steps"),
        ({"grad_clip": 1.0}, "grad_clip"),
        ({"precision": "bf16"}, "precision"),
        ({"seed": 1}, "seed"),
        ({"random_flip": False}, "random_flip"),
        ({"log_interval": 2}, "log_interval"),
        ({"data": "b.npz"}, "data.train_sha256"),
    ],
)
def test_a_changed_setting_is_refused_naming_the_field(data, trained, tmp_path, overrides, field):
    run = _copy_run(trained, tmp_path)
    before = (run / "train_config.json").read_text()
    data_file = data / overrides.pop("data", "a.npz")
    with pytest.raises(ValueError) as err:
        _train(data_file, run, **overrides, steps=3)
    msg = str(err.value)
    assert f"({field}: checkpoint " in msg and "--restart-on-change" in msg and "\n" not in msg
    assert (run / "train_config.json").read_text() == before  # never claims settings it was not trained with
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 2  # left as it was


def test_checkpoint_past_steps_is_refused(data, trained, tmp_path):
    run = _copy_run(trained, tmp_path)
    with pytest.raises(ValueError, match=r"checkpoint.pt is at step 2, past this run's --steps 1"):
        _train(data / "a.npz", run, steps=1)


def test_unchanged_settings_continue_and_a_longer_run_extends_exactly(data, trained, tmp_path):
    run = _copy_run(trained, tmp_path)
    stale = run / ".adm-tmp.checkpoint.pt.k1ll3d00.tmp"  # what a kill during a save leaves
    stale.write_bytes(b"half a checkpoint")
    assert _train(data / "a.npz", run, steps=2)["resumed_from"] == 2  # nothing to do: same weights
    assert not stale.exists()  # removed by the next run, although it saved no checkpoint
    assert _train(data / "a.npz", run, steps=3)["resumed_from"] == 2
    _train(data / "a.npz", tmp_path / "straight", steps=3)
    assert (run / "ema.pt").read_bytes() == (tmp_path / "straight" / "ema.pt").read_bytes()


def test_restart_on_change_trains_a_fresh_model(data, trained, tmp_path, capsys):
    """What the workflow does after a params change: the new lr's model, never the old weights."""
    run = _copy_run(trained, tmp_path)
    argv = [
        "train-diffusion",
        "--data",
        str(data / "a.npz"),
        "--model-preset",
        "tiny-test",
        "--steps",
        "2",
        "--lr",
        "0.002",
        "--no-progress",
    ]
    assert cli.main(argv + ["--out-dir", str(run), "--restart-on-change"]) == 0
    err = capsys.readouterr().err
    notice = [line for line in err.splitlines() if line.startswith("notice:")]
    assert len(notice) == 1 and "lr: checkpoint 0.001, now 0.002" in notice[0] and "starting fresh" in notice[0]
    assert cli.main(argv + ["--out-dir", str(tmp_path / "fresh")]) == 0
    assert (run / "ema.pt").read_bytes() == (tmp_path / "fresh" / "ema.pt").read_bytes()
    assert json.loads((run / "train_config.json").read_text())["train"]["lr"] == 0.002
    assert (run / "log.csv").read_bytes().count(b"\n") == 3  # header + 2 rows: the old run's rows are gone


def test_resume_with_another_schedule_sampler_names_it(data, trained, tmp_path, capsys):
    run = _copy_run(trained, tmp_path)
    rc = cli.main(
        [
            "train-diffusion",
            "--data",
            str(data / "a.npz"),
            "--out-dir",
            str(run),
            "--model-preset",
            "tiny-test",
            "--steps",
            "3",
            "--schedule-sampler",
            "loss-second-moment",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "schedule_sampler: checkpoint 'uniform', now 'loss-second-moment'" in err and "loss_history" not in err


def test_classifier_resume_compares_its_settings_too(data, tmp_path):
    def run(**kw):
        cfg = resolve_train_config("tiny-test-classifier", **{"steps": 2, **kw})
        return train_classifier(
            data / "a.npz",
            data / "b.npz",
            tmp_path,
            get_preset("tiny-test-classifier"),
            get_preset("tiny-test-classifier", "diffusion"),
            cfg,
            progress=False,
        )

    run()
    with pytest.raises(ValueError, match=r"\(weight_decay: checkpoint 0.05, now 0.0\)"):
        run(weight_decay=0.0, steps=3)
    assert run(ema_rates=(0.5,), steps=3)["resumed_from"] == 2  # the classifier keeps no EMA: not compared


def _log_rows(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in csv.DictReader(f)]


@pytest.mark.slow
def test_kill9_resume_log_equals_an_uninterrupted_run(data, tmp_path):
    """Snakemake deletes the declared log.csv before the rerun; the resumed log still has every
    row, equal to an uninterrupted run's (log every 2 steps, checkpoint every 3: the interval
    that was running at the kill is restored from the checkpoint)."""
    steps, flags = 12, dict(save_interval=3, log_interval=2)
    _train(data / "a.npz", tmp_path / "ref", steps=steps, **flags)
    cmd = [
        sys.executable,
        "-m",
        "adm",
        "train-diffusion",
        "--data",
        str(data / "a.npz"),
        "--out-dir",
        str(tmp_path / "run"),
        "--model-preset",
        "tiny-test",
        "--steps",
        str(steps),
        "--save-interval",
        "3",
        "--log-interval",
        "2",
        "--threads",
        "1",
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    deadline = time.time() + 60
    while proc.poll() is None and time.time() < deadline:
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["step"] % 2:  # mid log interval
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = torch.load(ckpt, weights_only=True)["step"]
    assert 3 <= killed_at < steps
    (tmp_path / "run" / "log.csv").unlink(missing_ok=True)  # as Snakemake does with a declared output
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ref, got = _log_rows(tmp_path / "ref" / "log.csv"), _log_rows(tmp_path / "run" / "log.csv")
    assert [int(r["step"]) for r in got] == list(range(2, steps + 1, 2))
    assert got == ref
    with open(tmp_path / "run" / "log.csv", newline="") as f:
        assert next(csv.reader(f)) == DIFFUSION_COLUMNS


def test_data_digest_of_a_large_set_reads_labels_and_sampled_rows(monkeypatch):
    import adm.training.resume as tu

    images, labels = _images(0)
    whole = tu.array_digest(images, labels)
    monkeypatch.setattr(tu, "DIGEST_FULL_BYTES", 1000)  # as if the 40 images were tens of GB
    monkeypatch.setattr(tu, "DIGEST_ROWS", 5)
    sampled = tu.array_digest(images, labels)
    assert sampled != whole
    other = labels.copy()
    other[1] = (other[1] + 1) % 10  # a label change is always seen
    assert tu.array_digest(images, other) != sampled
    changed = images.copy()
    changed[-1] ^= 1  # the last row is always sampled
    assert tu.array_digest(changed, labels) != sampled


def test_a_checkpoint_from_before_settings_were_recorded_is_refused_plainly(data, trained, tmp_path):
    run = _copy_run(trained, tmp_path)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["meta"] = {"command": "train-diffusion", "model": state["meta"]["model"], "seed": 0, "batch_size": 8}
    torch.save(state, run / "checkpoint.pt")  # the old format: four fields only
    with pytest.raises(ValueError, match="older adm version that did not record all its settings"):
        _train(data / "a.npz", run, steps=3)


def test_meter_states_of_all_ranks_merge_for_another_rank_count():
    """Resumed on another number of ranks, rank 0 carries the saved interval's sums (means() adds ranks)."""
    from adm.training.resume import merge_meter_states

    a = {"sums": {"loss": 1.0, "mse": 2.0}, "counts": {"loss": 2.0, "mse": 2.0}}
    b = {"sums": {"loss": 3.0}, "counts": {"loss": 2.0}}
    assert merge_meter_states([a, b]) == {"sums": {"loss": 4.0, "mse": 2.0}, "counts": {"loss": 4.0, "mse": 2.0}}
