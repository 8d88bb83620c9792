"""Label dropout in diffusion training (the null class of classifier-free guidance, Ho & Salimans
2021): the fraction dropped is P, the draws depend on (seed, step, global-batch position) only,
P = 0 trains today's weights bit for bit, the null class reaches the saved network, resume exact."""

import hashlib
import json
import math

import numpy as np
import pytest
import torch

from adm import cli
from adm.nets.checkpoints import load_model
from adm.nets.config import to_dict
from adm.nets.presets import get_preset
from adm.nets.unet import UNet
from adm.training import diffusion as td
from adm.training.draws import label_dropout_mask, with_null_class
from adm.training.presets import TrainConfig, resolve_train_config
from adm.training.resume import run_settings

torch.set_num_threads(1)

# Goldens of the code BEFORE label dropout existed (commit 6d422f4, torch 2.13.0 CPU, 1 thread):
# tiny-test preset, 4 steps, microbatch 4, on the `data` fixture below; sha256 over the sorted
# (key, float32 bytes) of the weights, and of the ema.json bytes. Written by running that commit's
# train_diffusion (same arguments as _train here) from a worktree of 6d422f4. Float weights depend
# on the CPU's kernels, so there is one pair per torch CPU capability, each measured on a machine
# of that kind: AVX2 on 2026-12-02 (before any edit for this feature), AVX512 (AMD EPYC with
# avx512_bf16) on 2026-12-03, where this tree's code gave the same three digests as 6d422f4's.
GOLDEN_WEIGHTS = {  # capability -> (ema_0.9.pt, checkpoint.pt's model)
    "AVX2": (
        "769724c5b471d5e9674e0cdccf78092d73a8737ce0f8d56ed36f12788568efdb",
        "429cb3018626f10e577fd466bbf8eb94b86a489c11a1b1c837c216c1d85e245c",
    ),
    "AVX512": (
        "903b5dbaca6e29baa9f9c801b95fdd75a3c8694e628332125c1406e9155145aa",
        "92a1e66002ede14028a4e890b12af488228b58595ed4fcf7b12fb5a32d78e3f2",
    ),
}
GOLDEN_EMA_JSON = "d8e298937d0419fb77a868a14922a4a50ff0ce99705fe29756eea6d04574709a"


@pytest.fixture(scope="module")
def data(tiny_data):
    """The golden's data: conftest's tiny_data (default_rng(0): images, then labels)."""
    return tiny_data


def _train(data, out, preset="tiny-test", **overrides):
    cfg = resolve_train_config(preset, **overrides)
    td.train_diffusion(data, out, get_preset("tiny-test"), get_preset("tiny-test", "diffusion"), cfg, progress=False)
    return cfg


def _digest(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].contiguous().numpy().tobytes())
    return h.hexdigest()


# --- the draws -------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_fraction_dropped_is_p_within_a_binomial_bound(p):
    n_steps, batch = 40, 256
    dropped = sum(int(label_dropout_mask(7, s, batch, p).sum()) for s in range(n_steps))
    n = n_steps * batch
    sd = math.sqrt(n * p * (1 - p))
    assert abs(dropped - n * p) < 5 * sd, f"{dropped} of {n} dropped at p={p} (expected {n * p:.0f} +- {5 * sd:.0f})"
    assert not label_dropout_mask(7, 0, batch, 0.0).any()


def test_draws_depend_on_seed_and_step_and_ranks_share_one_global_draw():
    whole = label_dropout_mask(3, 5, 64, 0.3)
    halves = np.concatenate([label_dropout_mask(3, 5, 64, 0.3, rank=r, world=2) for r in range(2)])
    quarters = np.concatenate([label_dropout_mask(3, 5, 64, 0.3, rank=r, world=4) for r in range(4)])
    assert np.array_equal(whole, halves) and np.array_equal(whole, quarters)
    assert not np.array_equal(whole, label_dropout_mask(3, 6, 64, 0.3))  # another step
    assert not np.array_equal(whole, label_dropout_mask(4, 5, 64, 0.3))  # another seed


def _labels_seen(monkeypatch, data, tmp_path, **overrides) -> list[torch.Tensor]:
    """Every step's labels as the loss saw them, microbatches concatenated in batch order."""
    seen: list[torch.Tensor] = []
    real = td.hybrid_loss

    def spy(model_fn, schedule, x0, k, y, noise, **kw):
        seen.append(y.clone())
        return real(model_fn, schedule, x0, k, y, noise, **kw)

    monkeypatch.setattr(td, "hybrid_loss", spy)
    cfg = _train(data, tmp_path, **overrides)
    per_step = len(seen) // cfg.steps
    return [torch.cat(seen[s * per_step : (s + 1) * per_step]) for s in range(cfg.steps)]


def test_microbatches_see_the_labels_one_pass_sees_and_the_null_class_replaces_exactly_the_drawn(
    monkeypatch, data, tmp_path
):
    from adm.training.draws import batch_indices

    flags = dict(steps=4, label_dropout=0.4, save_interval=100)
    whole = _labels_seen(monkeypatch, data, tmp_path / "whole", **flags)
    micro = _labels_seen(monkeypatch, data, tmp_path / "micro", microbatch=2, **flags)
    labels = np.load(data)["arr_1"]
    for step, (a, b) in enumerate(zip(whole, micro)):
        assert torch.equal(a, b), f"step {step}: microbatches saw other labels"
        drop = label_dropout_mask(0, step, 8, 0.4)
        idx, _ = batch_indices(0, step, 8, len(labels))
        expected = np.where(drop, 10, labels[idx])
        assert np.array_equal(a.numpy(), expected)
    assert sum(int((a == 10).sum()) for a in whole) > 0  # some labels were dropped at all


# --- P = 0 is today's run; P > 0 saves a null-class network ------------------------------------


def test_p_zero_trains_todays_weights_bit_for_bit(data, tmp_path):
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in GOLDEN_WEIGHTS:
        pytest.skip(
            f"no golden weights recorded for CPU capability {capability}: run 6d422f4's "
            "train_diffusion with _train's arguments on this machine and add them"
        )
    golden_ema, golden_model = GOLDEN_WEIGHTS[capability]
    _train(data, tmp_path, steps=4, microbatch=4)
    assert _digest(torch.load(tmp_path / "ema_0.9.pt", weights_only=True)) == golden_ema
    assert _digest(torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"]) == golden_model
    assert hashlib.sha256((tmp_path / "ema.json").read_bytes()).hexdigest() == GOLDEN_EMA_JSON
    config = json.loads((tmp_path / "train_config.json").read_text())
    assert "label_dropout" not in config["train"] and "null_class" not in config["model"]


def test_p_positive_saves_a_null_class_network_and_records_it(data, tmp_path):
    cfg = _train(data, tmp_path, preset="tiny-test-cfg", steps=4)
    assert cfg.label_dropout == 0.1
    model, model_cfg = load_model(tmp_path / "ema.pt", expect_kind="unet")  # config from the JSON beside
    assert model_cfg.null_class and model_cfg.num_classes == 10
    assert model.label_emb.weight.shape[0] == 11
    config = json.loads((tmp_path / "train_config.json").read_text())
    assert config["train"]["label_dropout"] == 0.1 and config["model"]["null_class"] is True
    # the null row was trained: it moved away from the initial weights (same seed, same init)
    torch.manual_seed(cfg.seed)
    init = UNet(model_cfg).label_emb.weight[10]
    trained = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"]["label_emb.weight"][10]
    assert (trained - init).abs().max() > 0


def test_resume_with_label_dropout_is_exact_and_another_p_is_refused_naming_it(data, tmp_path):
    _train(data, tmp_path / "full", steps=6, label_dropout=0.5)
    _train(data, tmp_path / "split", steps=4, label_dropout=0.5)
    _train(data, tmp_path / "split", steps=6, label_dropout=0.5)  # continues the 4-step checkpoint
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    with pytest.raises(ValueError, match="label_dropout: checkpoint 0.5, now 0.2"):
        _train(data, tmp_path / "split", steps=8, label_dropout=0.2)
    with pytest.raises(ValueError, match="label_dropout: checkpoint 0.5, now '<absent>'"):
        _train(data, tmp_path / "split", steps=8)


def test_resume_identity_without_the_feature_is_unchanged():
    # a checkpoint written before label dropout existed has neither key: it must still resume
    meta = run_settings(
        "train-diffusion", get_preset("tiny-test"), get_preset("tiny-test", "diffusion"), TrainConfig(), {}
    )
    assert "label_dropout" not in meta["train"] and "null_class" not in meta["model"]
    assert "label_dropout" in to_dict(TrainConfig(label_dropout=0.1))


# --- user mistakes ---------------------------------------------------------------------------


@pytest.mark.parametrize("p", ["1.0", "-0.1", "nan"])
def test_cli_bad_label_dropout_is_one_line(data, tmp_path, capsys, p):
    rc = cli.main(
        [
            "train-diffusion",
            "--data",
            str(data),
            "--out-dir",
            str(tmp_path),
            "--model-preset",
            "tiny-test",
            "--label-dropout",
            p,
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "label_dropout must be in [0, 1)" in err
    assert not list(tmp_path.iterdir())


def test_cli_classifier_refuses_a_label_dropping_preset(data, tmp_path, capsys):
    rc = cli.main(
        [
            "train-classifier",
            "--data",
            str(data),
            "--out-dir",
            str(tmp_path),
            "--model-preset",
            "tiny-test-classifier",
            "--train-preset",
            "tiny-test-cfg",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "classifier trains on every label" in err


def test_null_class_needs_classes_and_the_network_embeds_it():
    with pytest.raises(ValueError, match="--label-dropout needs a class-conditional model"):
        with_null_class(get_preset("imagenet256-uncond"), 0.1)
    assert with_null_class(get_preset("tiny-test"), 0.0) is get_preset("tiny-test")
    cfg = with_null_class(get_preset("tiny-test"), 0.1)
    net = UNet(cfg).eval()
    x, t = torch.zeros(2, 3, 16, 16), torch.tensor([5, 9])
    net(x, t, torch.tensor([10, 3]))  # the null class is a valid label of this network
    with pytest.raises(ValueError, match=r"\[0, 11\)"):
        net(x, t, torch.tensor([11, 3]))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):  # without a null class, 10 is out of range
        UNet(get_preset("tiny-test")).eval()(x, t, torch.tensor([10, 3]))


@pytest.mark.slow
def test_torchrun_two_ranks_drop_the_labels_one_process_drops(data, tmp_path):
    """2 gloo CPU ranks x B/2 with label dropout give EXACTLY the weights of 1 process in
    microbatches of B/2 (see tests/unit/test_ddp.py for why that comparison is exact): a rank-local
    dropout draw, or one tied to the microbatch, would train other labels and other weights."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    argv = [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "adm",
        "train-diffusion",
        "--data",
        str(data),
        "--out-dir",
        str(tmp_path / "ddp"),
        "--model-preset",
        "tiny-test",
        "--steps",
        "4",
        "--label-dropout",
        "0.5",
        "--threads",
        "1",
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *argv], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    _train(data, tmp_path / "one", steps=4, label_dropout=0.5, microbatch=4)
    a = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), "2 ranks trained other weights"
