"""Training the super-resolution model (adm train-upsampler) and the area downsampling it uses.

What each test catches (mutants tried by hand, see the helper's report):
- low-res made another way than OpenAI's super_res_train.py (F.interpolate mode="area"):
  strided subsampling, bilinear                                 -> test_area_downsample_is_torch_area
- the condition taken from other images than the loss target     -> test_loss_is_conditioned_on_the_same_images
- a resumed run that differs from an uninterrupted one           -> test_resume_equals_an_uninterrupted_run
- a checkpoint of another low-res size or a base model continued -> test_another_low_res_size_is_refused
- the upsample program reading the low-res size as image_size/4  -> test_trained_upsampler_runs_without_low_res_flag,
  test_low_res_size_order_flag_json_preset_ratio (JSON ignored, preset ignored)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adm.data.datasets import save_npz, to_float
from adm.nets.presets import get_preset, preset_low_res_size
from adm.training.draws import batch_indices
from adm.training.presets import resolve_train_config
from adm.training.upsampler import area_downsample, area_downsample_uint8, downsample_npz, train_upsampler

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]
UP = get_preset("tiny-test-upsample")  # 4x4 -> 16x16
DIFF = get_preset("tiny-test-upsample", "diffusion")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("updata")
    save_npz(d / "train.npz", rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8), rng.integers(0, 10, 24))
    return d / "train.npz"


def _cfg(**kw):
    return resolve_train_config("tiny-test", **{"steps": 4, "batch_size": 4, "save_interval": 2, **kw})


def test_area_downsample_is_torch_area():
    """OpenAI's super-res training: F.interpolate(large_batch, small_size, mode="area")."""
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for size in (8, 4, 2):
        torch.testing.assert_close(area_downsample(x, size), F.interpolate(x, size, mode="area"), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="must divide"):
        area_downsample(x, 5)


def test_uint8_downsample_rounds_the_block_mean(tmp_path):
    img = np.zeros((2, 4, 4, 3), np.uint8)
    img[0, :2, :2, 0] = [[0, 1], [1, 1]]  # mean 0.75 -> 1
    img[1, 2:, 2:, 2] = [[255, 255], [255, 254]]  # mean 254.75 -> 255
    small = area_downsample_uint8(img, 2)
    assert small.shape == (2, 2, 2, 3) and small[0, 0, 0, 0] == 1 and small[1, 1, 1, 2] == 255
    save_npz(tmp_path / "s.npz", img, np.array([3, 7]))
    info = downsample_npz(tmp_path / "s.npz", tmp_path / "lo.npz", 2)
    with np.load(tmp_path / "lo.npz") as f:
        np.testing.assert_array_equal(f["arr_0"], small)
        np.testing.assert_array_equal(f["arr_1"], [3, 7])
    assert info["from_size"] == 4 and info["low_res_size"] == 2


def test_loss_is_conditioned_on_the_same_images(data, tmp_path, monkeypatch):
    """Every forward pass sees low_res = area_downsample(x_0) of exactly the batch whose loss it computes."""
    import adm.training.diffusion as td

    seen = []
    real_build = td.build_model

    def spy_build(cfg):
        net = real_build(cfg)
        forward = net.forward

        def recording(x, t, y=None, low_res=None):
            seen.append(low_res.detach().clone())
            return forward(x, t, y, low_res=low_res)

        net.forward = recording
        return net

    monkeypatch.setattr(td, "build_model", spy_build)
    cfg = _cfg(steps=2, random_flip=False)
    train_upsampler(data, tmp_path / "run", UP, DIFF, cfg, 4, progress=False)
    with np.load(data) as f:
        images = f["arr_0"]
    assert len(seen) == 2  # one forward per step (no microbatching)
    for step, low in enumerate(seen):
        idx, _ = batch_indices(cfg.seed, step, cfg.batch_size, len(images))
        want = area_downsample(to_float(images[idx]), 4)
        torch.testing.assert_close(low, want, rtol=0, atol=0)


def _weights(path):
    return torch.load(path, weights_only=True)


def test_resume_equals_an_uninterrupted_run(data, tmp_path):
    """A run stopped after its step-2 checkpoint and started again ends with the weights (EMA and
    raw) and the log rows of a run that never stopped."""
    train_upsampler(data, tmp_path / "ref", UP, DIFF, _cfg(), 4, progress=False)
    run = tmp_path / "run"
    train_upsampler(data, run, UP, DIFF, _cfg(steps=2), 4, progress=False)
    for name in ("ema.pt", "model.pt", "log.csv"):  # what a kill before the end would not have written
        (run / name).unlink()
    out = train_upsampler(data, run, UP, DIFF, _cfg(), 4, progress=False)
    assert out["resumed_from"] == 2
    for name in ("ema.pt", "ema_0.99.pt", "model.pt"):
        a, b = _weights(tmp_path / "ref" / name), _weights(run / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name

    def strip(p):
        return [row.split(",")[:4] for row in p.read_text().splitlines()]  # step, lr, loss..: no timings

    assert strip(run / "log.csv") == strip(tmp_path / "ref" / "log.csv")
    assert not torch.equal(_weights(run / "ema.pt")["out.2.weight"], _weights(run / "model.pt")["out.2.weight"])


def test_another_low_res_size_is_refused(data, tmp_path):
    run = tmp_path / "run"
    train_upsampler(data, run, UP, DIFF, _cfg(steps=2), 4, progress=False)
    with pytest.raises(ValueError, match=r"low_res_size: checkpoint 4, now 8"):
        train_upsampler(data, run, UP, DIFF, _cfg(), 8, progress=False)


def test_a_base_model_preset_is_refused(data, tmp_path):
    with pytest.raises(ValueError, match="super-resolution preset"):
        train_upsampler(data, tmp_path, get_preset("tiny-test"), DIFF, _cfg(), 4, progress=False)


def _cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "adm", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_trained_upsampler_runs_without_low_res_flag(data, tmp_path):
    """The CLI trains demo-upsample-like weights whose JSON names the low-res size, and the upsample
    program then takes 4x4 inputs for an 8x8 model (image_size / 4 would be 2)."""
    assert preset_low_res_size("demo-upsample") == 4 and get_preset("demo-upsample").image_size == 8
    rng = np.random.default_rng(1)
    save_npz(tmp_path / "d8.npz", rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8), rng.integers(0, 10, 16))
    r = _cli(
        "train-upsampler",
        "--data",
        str(tmp_path / "d8.npz"),
        "--out-dir",
        str(tmp_path / "up"),
        "--model-preset",
        "demo-upsample",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr
    for name in ("ema.pt", "model.pt", "log.csv"):
        assert (tmp_path / "up" / name).is_file()
    downsample_npz(tmp_path / "d8.npz", tmp_path / "lo.npz", 4)
    r = _cli(
        "upsample",
        "--model",
        str(tmp_path / "up" / "ema.pt"),
        "--low-res",
        str(tmp_path / "lo.npz"),
        "--respacing",
        "2",
        "--out",
        str(tmp_path / "hi.npz"),
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "hi.npz") as f:
        assert f["arr_0"].shape == (16, 8, 8, 3)
    r = _cli(
        "train-upsampler",
        "--data",
        str(tmp_path / "d8.npz"),
        "--out-dir",
        str(tmp_path / "x"),
        "--model-preset",
        "demo-digits",
        "--steps",
        "1",
        "--no-progress",
    )
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "not a super-resolution preset" in r.stderr


def test_low_res_size_order_flag_json_preset_ratio(tmp_path):
    """--low-res-size, else the checkpoint JSON's low_res_size, else the preset's (by name or by an
    equal config), else image_size / 4: demo-upsample (8x8 from 4x4) is not OpenAI's 4x."""
    import dataclasses
    import json

    from adm.nets.build import build_model
    from adm.nets.checkpoints import save_model
    from adm.programs.upsample import expected_low_res_size

    cfg = get_preset("demo-upsample")
    save_model(build_model(cfg), cfg, tmp_path / "a.pt")  # a JSON without low_res_size
    assert expected_low_res_size(8, None, cfg, tmp_path / "a.pt") == 4  # the preset, by its config
    assert expected_low_res_size(8, None, None, None, "demo-upsample") == 4  # by its name
    other = dataclasses.replace(cfg, model_channels=64)
    assert expected_low_res_size(8, None, other, None) == 2  # no preset: OpenAI's ratio
    side = tmp_path / "a.json"
    side.write_text(json.dumps({**json.loads(side.read_text()), "low_res_size": 2}))
    assert expected_low_res_size(8, None, cfg, tmp_path / "a.pt") == 2  # the JSON before the preset
    assert expected_low_res_size(8, 1, cfg, tmp_path / "a.pt") == 1  # the flag before all
