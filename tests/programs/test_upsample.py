"""The upsample program: shard invariance, image i from (seed, i) and low-res i only, merge, bad input.

Networks are tiny-test-upsample (4x4 -> 16x16) with every parameter random and non-zero
(conftest ``randomise_``): a fresh UNet's zero output head would make every image a function of
the noise alone and hide a low-res image or label sent to the wrong sample. Equality with the
reference implementation is tests/parity/test_parity_upsample.py.
"""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch

from adm import cli
from adm.nets.build import build_model
from adm.nets.checkpoints import save_model
from adm.nets.presets import get_preset
from adm.programs.shards import merge_shards
from adm.programs.upsample import UpsampleConfig, upsample_generators, upsample_shard
from adm.sampling.rng import randn_per_sample, sample_generators

torch.set_num_threads(1)
N = 7
UP = get_preset("tiny-test-upsample")
DIFF = get_preset("tiny-test-upsample", "diffusion")


@pytest.fixture(scope="module")
def files(tmp_path_factory, randomise):
    """Saved upsampler (random non-zero weights) and a low-res npz of N 4x4 images with labels."""
    d = tmp_path_factory.mktemp("upsample")
    save_model(randomise(build_model(UP), seed=20, std=0.1), UP, d / "up.pt", diffusion=DIFF)
    rng = np.random.default_rng(0)
    low = rng.integers(0, 256, (N, 4, 4, 3), dtype=np.uint8)
    np.savez(d / "low.npz", arr_0=low, arr_1=rng.integers(0, 10, N))
    return d


def _run(files, out, low="low.npz", **kw):
    cfg = UpsampleConfig(
        **{
            **dict(
                model=str(files / "up.pt"), low_res=str(files / low), out=str(out), respacing="4", batch_size=2, seed=5
            ),
            **kw,
        }
    )
    upsample_shard(cfg, progress=False)
    with np.load(out) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("respacing", ["4", "ddim3"])
def test_union_of_shards_is_the_unsharded_run_and_merges(files, tmp_path, respacing):
    whole = _run(files, tmp_path / "whole.npz", respacing=respacing)
    shards = [tmp_path / f"s{k}.npz" for k in range(3)]
    for k, path in enumerate(shards):
        _run(files, path, respacing=respacing, shard=k, num_shards=3)
    merge_shards(shards, tmp_path / "merged.npz", N, progress=False)  # num_classes read from the shards' JSON
    with np.load(tmp_path / "merged.npz") as f:
        merged = {k: f[k] for k in f.files}
    assert whole["arr_0"].shape == (N, 16, 16, 3) and whole["arr_0"].dtype == np.uint8
    assert merged["arr_0"].tobytes() == whole["arr_0"].tobytes()
    with np.load(files / "low.npz") as f:
        assert (merged["arr_1"] == f["arr_1"]).all()  # labels are the low-res file's
    assert len({whole["arr_0"][i].tobytes() for i in range(N)}) == N
    assert json.loads((tmp_path / "s0.json").read_text())["num_classes"] == 10


def test_batch_size_changes_no_image_beyond_rounding(files, tmp_path):
    # float32 CPU kernels round differently per batch size (~1e-7 a forward, see
    # tests/unit/test_invariance.py), so a byte may move by one level; noise or low-res tied to the
    # position in the batch instead of the index i would move whole images
    a = _run(files, tmp_path / "b2.npz", batch_size=2)["arr_0"].astype(int)
    b = _run(files, tmp_path / "b3.npz", batch_size=3)["arr_0"].astype(int)
    assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.01


def test_bf16_runs_in_bf16_and_stays_close_to_fp32(files, tmp_path):
    a = _run(files, tmp_path / "fp32.npz")["arr_0"].astype(int)
    b = _run(files, tmp_path / "bf16.npz", precision="bf16")["arr_0"].astype(int)
    assert (a != b).any() and np.abs(a - b).mean() < 1.0  # the autocast ran; measured ~0.06 levels


def test_image_i_depends_on_low_res_i_only(files, tmp_path):
    with np.load(files / "low.npz") as f:
        low, labels = f["arr_0"].copy(), f["arr_1"]
    low[3] = 255 - low[3]  # change one low-res image, same label
    np.savez(tmp_path / "changed.npz", arr_0=low, arr_1=labels)
    a = _run(files, tmp_path / "a.npz")
    b = _run(files, tmp_path / "b.npz", low=tmp_path / "changed.npz")
    same = [i for i in range(N) if a["arr_0"][i].tobytes() == b["arr_0"][i].tobytes()]
    assert same == [0, 1, 2, 4, 5, 6]  # image 2 shares 3's batch and still does not move


def test_seed_moves_images_and_noise_is_not_the_base_samplers(files, tmp_path):
    a, b = _run(files, tmp_path / "a.npz"), _run(files, tmp_path / "b.npz", seed=6)
    assert all(a["arr_0"][i].tobytes() != b["arr_0"][i].tobytes() for i in range(N))
    # same (seed, i): the base sampler's x_T and the upsampler's come from different streams
    base = randn_per_sample(sample_generators(5, [0]), (3, 16, 16))
    ours = randn_per_sample(upsample_generators(5, [0]), (3, 16, 16))
    assert not torch.equal(base, ours)


# ---------------------------------------------------------------- bad input: one line, no file


def _bad_low_res(d, name, **arrays):
    np.savez(d / name, **arrays)
    return d / name


@pytest.fixture(scope="module")
def bad(files, tmp_path_factory, randomise):
    """Files each wrong in one way, by name."""
    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    nan = img.astype(np.float32)
    nan[1, 2, 2, 0] = np.nan
    big = dataclasses.replace(UP, image_size=32)  # a 32px upsampler takes 8x8
    save_model(randomise(build_model(big), seed=1), big, d / "up32.pt", diffusion=DIFF)
    base = get_preset("tiny-test")
    save_model(randomise(build_model(base), seed=2), base, d / "base.pt", diffusion=DIFF)
    torch.save(
        {
            k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
            for k, v in torch.load(files / "up.pt").items()
        },
        d / "nan.pt",
    )
    (d / "nan.json").write_text((files / "up.json").read_text())
    return {
        "8x8": _bad_low_res(
            d, "8x8.npz", arr_0=rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8), arr_1=np.zeros(3, int)
        ),
        "nolabels": _bad_low_res(d, "nolabels.npz", arr_0=img),
        "labels-range": _bad_low_res(d, "range.npz", arr_0=img, arr_1=np.array([0, 10, 1])),
        "nan-images": _bad_low_res(d, "nan.npz", arr_0=nan, arr_1=np.zeros(3, int)),
        "float-images": _bad_low_res(d, "float.npz", arr_0=img / 255.0, arr_1=np.zeros(3, int)),
        "good": _bad_low_res(d, "good.npz", arr_0=img, arr_1=np.zeros(3, int)),
        "up32": d / "up32.pt",
        "base": d / "base.pt",
        "nan-weights": d / "nan.pt",
    }


CASES = {  # (model, low-res, extra flags) -> the words the one line must hold
    "low-res at the wrong size": ("up", "8x8", [], r"images are 8x8, but the upsampler makes 16x16 from 4x4"),
    "labels missing": ("up", "nolabels", [], r"no labels \(arr_1\), but the upsampler is class-conditional"),
    "labels outside the classes": ("up", "labels-range", [], r"outside the upsampler's 10 classes"),
    "checkpoint for another size": ("up32", "good", [], r"images are 4x4, but the upsampler makes 32x32 from 8x8"),
    "preset for another size": ("up", "good", ["--model-preset", "upsample64-256"], r"weights do not fit"),
    "base model": ("base", "good", [], r"base\.pt: not a super-resolution model .*`adm sample` runs base models"),
    "non-finite low-res": ("up", "nan-images", [], r"non-finite values"),
    "float low-res": ("up", "float-images", [], r"must be uint8"),
    "non-finite weights": ("nan-weights", "good", [], r"weights are not finite"),
    "missing low-res": ("up", "absent", [], r"low-res file not found"),
    "fp16 on cpu": ("up", "good", ["--precision", "fp16"], r"fp16 .* runs on CUDA only"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_one_line_no_output(files, bad, tmp_path, capsys, case):
    model, low, extra, message = CASES[case]
    model_path = files / "up.pt" if model == "up" else bad[model]
    low_path = bad.get(low, tmp_path / "absent.npz")
    out = tmp_path / "out.npz"
    rc = cli.main(
        [
            "upsample",
            "--model",
            str(model_path),
            "--low-res",
            str(low_path),
            "--out",
            str(out),
            "--respacing",
            "2",
            "--no-progress",
            *extra,
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_non_finite_samples_write_nothing(files, bad, tmp_path, monkeypatch, capsys):
    import adm.sampling.samplers

    monkeypatch.setattr(adm.sampling.samplers, "ddpm_sample", lambda model_fn, noise, *a, **k: noise * float("nan"))
    out = tmp_path / "out.npz"
    rc = cli.main(
        [
            "upsample",
            "--model",
            str(files / "up.pt"),
            "--low-res",
            str(bad["good"]),
            "--out",
            str(out),
            "--respacing",
            "2",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "not finite" in err and err.count("\n") == 1 and not out.exists()


def test_unconditional_upsampler_needs_no_labels(tmp_path, randomise):
    cfg = dataclasses.replace(UP, num_classes=None)
    save_model(randomise(build_model(cfg), seed=21, std=0.1), cfg, tmp_path / "up.pt", diffusion=DIFF)
    np.savez(tmp_path / "low.npz", arr_0=np.random.default_rng(2).integers(0, 256, (3, 4, 4, 3), dtype=np.uint8))
    out = _run(tmp_path, tmp_path / "out.npz")
    assert out["arr_0"].shape == (3, 16, 16, 3) and out["arr_1"].tolist() == [0, 0, 0]
    assert json.loads((tmp_path / "out.json").read_text())["num_classes"] is None


# ---------------------------------------------------------------- the bicubic baseline (interpolate_npz)


def _bicubic_reference(images: np.ndarray, size: int) -> np.ndarray:
    """Resize in float64 with torch's bicubic, then round half to even and clip: what the
    baseline must write (written out here, not imported, so a change in either is seen)."""
    x = torch.nn.functional.interpolate(
        torch.from_numpy(images.astype(np.float64)).permute(0, 3, 1, 2),
        size=(size, size),
        mode="bicubic",
        align_corners=False,
    )
    return np.clip(np.rint(x.permute(0, 2, 3, 1).numpy()), 0, 255).astype(np.uint8)


def test_interpolation_baseline_rounds_clips_and_keeps_labels(tmp_path):
    from adm.programs.upsample import interpolate_npz

    rng = np.random.default_rng(3)
    low = rng.integers(0, 256, (N, 4, 4, 3), dtype=np.uint8)
    low[0] = 128  # a flat image stays flat at the same level
    low[1] = np.indices((4, 4)).sum(0)[..., None] % 2 * 255  # a 0/255 checkerboard: bicubic overshoots
    labels = rng.integers(0, 10, N)
    np.savez(tmp_path / "low.npz", arr_0=low, arr_1=labels)
    info = interpolate_npz(tmp_path / "low.npz", tmp_path / "out.npz", 16, chunk=3)  # chunks 3+3+1
    with np.load(tmp_path / "out.npz") as f:
        out, out_labels = f["arr_0"], f["arr_1"]
    assert out.shape == (N, 16, 16, 3) and out.dtype == np.uint8 and out_labels.tolist() == labels.tolist()
    assert (out[0] == 128).all()
    assert out[1].min() == 0 and out[1].max() == 255  # clipped, not wrapped around by the uint8 cast
    assert np.array_equal(out, _bicubic_reference(low, 16))
    assert info["from_size"] == 4 and info["image_size"] == 16 and "bicubic" in info["method"]
    assert json.loads((tmp_path / "out.json").read_text())["n"] == N


def test_interpolation_baseline_bad_input_writes_nothing(tmp_path):
    from adm.programs.upsample import UpsampleError, interpolate_npz

    np.savez(tmp_path / "float.npz", arr_0=np.zeros((2, 4, 4, 3), np.float32))
    np.savez(tmp_path / "big.npz", arr_0=np.zeros((2, 32, 32, 3), np.uint8))
    for src, size, message in (
        ("float.npz", 16, "must be uint8"),
        ("big.npz", 16, "larger than the 16x16"),
        ("absent.npz", 16, "not found"),
    ):
        with pytest.raises(UpsampleError, match=message):
            interpolate_npz(tmp_path / src, tmp_path / "out.npz", size)
        assert not (tmp_path / "out.npz").exists() and not (tmp_path / "out.json").exists()
    with pytest.raises(UpsampleError, match="not one of bicubic, bilinear"):
        interpolate_npz(tmp_path / "big.npz", tmp_path / "out.npz", 64, mode="lanczos")
