"""The sampler's fast path (adm.sampling.precision.FastPath) and memory-aware batches (adm.sampling.batch_memory).

The fast path may change an image only by float rounding: fp32 must equal the plain eager
networks bit for bit, the label range is still refused but checked once per batch instead of
once per step, bf16 really runs in bf16, and `adm sample` refuses fp16 on a CPU in one line.
Parity of the fast path with the reference sampler: test_parity_sampling_fast.py.
"""

import copy
import json

import numpy as np
import pytest
import torch

from adm import cli
from adm.diffusion.schedule import make_schedule, respace
from adm.nets.build import build_model
from adm.nets.checkpoints import save_model
from adm.nets.presets import get_preset
from adm.programs.sample import SampleConfig, sample_shard
from adm.sampling import batch_memory
from adm.sampling.guidance import classifier_guidance
from adm.sampling.precision import FastPath, sampling_classifier_fn, sampling_model_fn
from adm.sampling.rng import randn_per_sample, sample_generators
from adm.sampling.samplers import ddpm_sample

torch.set_num_threads(1)
N = 6


def _run(unet, clf, fast, steps="5", scale=3.0, labels=None):
    sched = respace(make_schedule("cosine", 1000), steps)
    unet, clf = copy.deepcopy(unet), copy.deepcopy(clf)
    if fast is None:
        model_fn, cond_fn = (lambda x, t, y: unet(x, t, y)), classifier_guidance(clf, scale)
    else:
        model_fn = sampling_model_fn(unet, fast, "cpu")
        cond_fn = classifier_guidance(sampling_classifier_fn(clf, fast, "cpu"), scale)
    gens = sample_generators(0, range(N))
    noise = randn_per_sample(gens, (3, 8, 8))
    y = torch.arange(N) % 10 if labels is None else labels
    return ddpm_sample(model_fn, noise, sched, y, cond_fn, gens), unet


def test_fp32_fast_path_equals_plain_networks_bit_for_bit(demo_nets):
    plain, _ = _run(*demo_nets, None)
    fast, unet = _run(*demo_nets, FastPath())
    assert torch.equal(plain, fast)
    assert not any(p.requires_grad for p in unet.parameters())  # frozen: nothing records weight grads


def test_channels_last_only_rounds(demo_nets):
    plain, _ = _run(*demo_nets, None)
    fast, _ = _run(*demo_nets, FastPath(channels_last=True))
    assert (plain - fast).abs().max() < 1e-5


def test_bf16_really_runs_in_bf16_and_stays_close(demo_nets):
    plain, _ = _run(*demo_nets, None)
    bf16, _ = _run(*demo_nets, FastPath(precision="bf16"))
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    diff = (plain - bf16).abs()
    # bf16 has an 8-bit mantissa: not bit-equal, yet the same images. A rare pixel may jump: at
    # t = 999, x_0_hat = sqrt(1/alpha_bar) x_t - sqrt(1/alpha_bar - 1) eps multiplies eps's rounding
    # by ~2e4 (cosine schedule) and the clamp sends it to the other end of [-1, 1] (bench/out/sampling.md,
    # "Why bf16's x_0 drift ..."): one value of the 1152 here. The typical sample moves by ~5e-3.
    assert diff.max() > 0
    assert diff.flatten(1).max(dim=1).values.median() < 0.05
    assert (diff > 0.1).float().mean() < 0.01


def test_label_range_checked_once_per_batch_not_per_step(demo_nets, monkeypatch):
    calls = []
    unet = copy.deepcopy(demo_nets[0])
    real = unet.validate_labels
    monkeypatch.setattr(unet, "validate_labels", lambda y: (calls.append(1), real(y)))
    model_fn = sampling_model_fn(unet, FastPath(), "cpu")
    sched = respace(make_schedule("cosine", 1000), "5")
    ddpm_sample(model_fn, torch.randn(N, 3, 8, 8), sched, torch.arange(N) % 10)
    assert len(calls) == 1 and unet.check_label_values is False  # 5 steps, one check


def test_out_of_range_label_still_refused_with_a_clear_message(demo_nets):
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        _run(*demo_nets, FastPath(), labels=torch.tensor([0, 1, 2, 3, 4, 10]))


def test_fast_path_rejects_unresolved_precision():
    with pytest.raises(ValueError, match="resolve 'auto' first"):
        FastPath(precision="auto")


# ---------------------------------------------------------------- the sample program


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    d = tmp_path_factory.mktemp("nets")
    torch.manual_seed(0)
    save_model(
        build_model(get_preset("tiny-test")),
        get_preset("tiny-test"),
        d / "ema.pt",
        diffusion=get_preset("tiny-test", "diffusion"),
    )
    save_model(build_model(get_preset("tiny-test-classifier")), get_preset("tiny-test-classifier"), d / "clf.pt")
    return d


def _argv(nets, out, *extra):
    return [
        "sample",
        "--model",
        str(nets / "ema.pt"),
        "--classifier",
        str(nets / "clf.pt"),
        "--scale",
        "1",
        "--num-samples",
        "3",
        "--respacing",
        "2",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]


def test_fp16_on_cpu_is_refused_in_one_line(nets, tmp_path, capsys):
    assert cli.main(_argv(nets, tmp_path / "s.npz", "--precision", "fp16")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--precision fp16" in err[0] and "CUDA only" in err[0]
    assert not (tmp_path / "s.npz").exists()


def test_auto_precision_is_fp32_on_cpu_and_recorded(nets, tmp_path):
    assert cli.main(_argv(nets, tmp_path / "s.npz", "--precision", "auto")) == 0
    assert json.loads((tmp_path / "s.json").read_text())["precision"] == "fp32"


def test_batch_size_auto_gives_the_same_images(nets, tmp_path):
    base = dict(
        model=str(nets / "ema.pt"), classifier=str(nets / "clf.pt"), num_samples=5, scale=2.0, respacing="3", seed=1
    )
    sample_shard(SampleConfig(out=str(tmp_path / "fixed.npz"), batch_size=2, **base), progress=False)
    sample_shard(SampleConfig(out=str(tmp_path / "auto.npz"), batch_size="auto", **base), progress=False)
    with np.load(tmp_path / "fixed.npz") as a, np.load(tmp_path / "auto.npz") as b:
        assert np.array_equal(a["arr_0"], b["arr_0"])
    meta = json.loads((tmp_path / "auto.json").read_text())
    assert 1 <= meta["batch_size"] <= 5 and meta["batch_probe"]["per_image_bytes"] >= 1


def test_out_of_memory_is_one_line_naming_a_size_that_fits(nets, tmp_path, monkeypatch):
    import adm.sampling.samplers

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(adm.sampling.samplers, "ddpm_sample", oom)
    probe = {"batch_size": 3, "fixed_bytes": 2**30, "per_image_bytes": 2**28, "available_bytes": 2**31}
    monkeypatch.setattr(batch_memory, "probe_batch_size", lambda *a, **k: probe)
    cfg = SampleConfig(
        model=str(nets / "ema.pt"),
        classifier=str(nets / "clf.pt"),
        out=str(tmp_path / "s.npz"),
        num_samples=4,
        scale=1.0,
        respacing="2",
        batch_size=4,
    )
    with pytest.raises(ValueError) as e:
        sample_shard(cfg, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "out of memory at batch size 4" in msg and "--batch-size 3 fits" in msg
    assert not (tmp_path / "s.npz").exists()


# ---------------------------------------------------------------- the memory model


def test_affine_fit_and_fitting_batch():
    assert batch_memory.affine_fit(150, 250) == (50, 100)
    # fixed 50 + b * 100 <= 0.8 * 1000 -> b <= 7.5
    assert batch_memory.fitting_batch(50, 100, 1000, cap=64) == 7
    assert batch_memory.fitting_batch(50, 100, 1000, cap=4) == 4
    assert batch_memory.fitting_batch(900, 100, 1000, cap=64) == 0


def test_rss_probe_sees_a_torch_allocation():
    big = 64 * 2**20
    seen = batch_memory.peak_bytes(lambda: torch.ones(big // 4).sum(), torch.device("cpu"))
    assert seen >= 0.9 * big


# ---------------------------------------------------------------- fused attention


def _sdpa_kernels(fn):
    with torch.profiler.profile() as prof:
        fn()
    return {e.key for e in prof.key_averages() if "scaled_dot_product" in e.key}


def test_fused_attention_runs_the_fused_kernel_and_only_rounds():
    from adm.nets.blocks import qkv_attention

    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(2, 3 * 64, 256, generator=g).requires_grad_(True)  # 2 heads of 32, T = 256
    kernels = {
        f: _sdpa_kernels(lambda f=f: qkv_attention(qkv, 2, True, fused=f).sum().backward()) for f in (False, True)
    }
    assert not kernels[False]  # the exact path: SDPA's math path op for op, without SDPA's guard
    assert "aten::_scaled_dot_product_attention_math" not in kernels[True]
    assert any("flash" in k for k in kernels[True])
    for order in (True, False):
        a, b = (qkv_attention(qkv.detach(), 2, order, fused=f) for f in (False, True))
        assert (a - b).abs().max() < 1e-5


def test_fused_attention_fast_path_is_opt_in_and_stays_close(demo_nets):
    plain, unet = _run(*demo_nets, FastPath())
    fused, unet_f = _run(*demo_nets, FastPath(fused_attention=True))
    blocks = [m for m in unet_f.modules() if hasattr(m, "fused_attention")]
    assert blocks and all(m.fused_attention for m in blocks)
    assert not any(m.fused_attention for m in unet.modules() if hasattr(m, "fused_attention"))
    assert (plain - fused).abs().max() < 1e-4


# ---------------------------------------------------------------- named fast paths (--fast)


def test_fast_modes_turn_on_their_fields_and_exact_is_the_default_fastpath():
    from adm.sampling.precision import FAST_MODES, fast_path

    assert fast_path("exact", "fp32") == FastPath() and FAST_MODES["exact"] == {}
    assert fast_path("fast", "fp32") == FastPath(fused_attention=True)
    assert fast_path("compiled", "bf16") == FastPath(precision="bf16", fused_attention=True, compile=True)
    # a field given on top turns on; a False one never turns a mode's field off
    assert fast_path("fast", "fp32", channels_last=True, fused_attention=False) == FastPath(
        fused_attention=True, channels_last=True
    )
    with pytest.raises(ValueError, match="--fast must be one of exact, fast, compiled, got 'turbo'"):
        fast_path("turbo", "fp32")


def test_bad_fast_mode_is_one_line_and_writes_nothing(nets, tmp_path, capsys):
    assert cli.main(_argv(nets, tmp_path / "s.npz", "--fast", "turbo")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--fast must be one of" in err[0] and "'turbo'" in err[0]
    assert not (tmp_path / "s.npz").exists() and not (tmp_path / "s.json").exists()


def test_fast_flag_samples_the_same_images_up_to_rounding_and_exact_keeps_the_bytes(nets, tmp_path):
    runs = {
        "default": (),
        "exact": ("--fast", "exact"),
        "fast": ("--fast",),
        "fused": ("--fused-attention",),
        "cl": ("--fast", "--channels-last"),
    }
    for name, flags in runs.items():
        assert cli.main(_argv(nets, tmp_path / f"{name}.npz", *flags)) == 0
    images = {k: np.load(tmp_path / f"{k}.npz")["arr_0"].astype(int) for k in runs}
    paths = {k: json.loads((tmp_path / f"{k}.json").read_text())["fast_path"] for k in runs}
    assert np.array_equal(images["default"], images["exact"])  # the default's bytes are exact mode's
    assert paths["default"] == paths["exact"] == {**paths["default"], "fused_attention": False, "compile": False}
    assert paths["fast"]["fused_attention"] and not paths["fast"]["channels_last"]
    assert paths["fused"] == paths["fast"]  # the bare flag reaches the same FastPath
    assert paths["cl"]["channels_last"] and paths["cl"]["fused_attention"]
    for k in ("fast", "cl"):  # rounding-level changes only: a uint8 level at most
        assert np.abs(images[k] - images["default"]).max() <= 1


def test_exact_attention_is_sdpas_math_path_byte_for_byte():
    """The exact path spells out SDPA's math path without its masked-row guard: the same bytes,
    forward and gradient, so exact mode's samples stay the reference's (test_parity_sampling*.py)."""
    import torch.nn.functional as F

    from adm.nets.blocks import qkv_attention

    g = torch.Generator().manual_seed(1)
    for heads, ch, length in ((2, 32, 64), (1, 8, 65), (4, 16, 16)):  # 65: the classifier's pooled HW + 1
        qkv = torch.randn(3, 3 * heads * ch, length, generator=g)
        for order in (True, False):
            x1, x2 = qkv.clone().requires_grad_(True), qkv.clone().requires_grad_(True)
            ours = qkv_attention(x1, heads, order, fused=False)
            n = 3
            if order:
                q, k, v = (z.reshape(n * heads, ch, length) for z in x2.chunk(3, dim=1))
            else:
                q, k, v = x2.reshape(n * heads, 3 * ch, length).split(ch, dim=1)
            q, k, v = (z.reshape(n, heads, ch, length).transpose(-1, -2) for z in (q, k, v))
            sdpa = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(n, heads * ch, length)
            assert torch.equal(ours, sdpa)
            w = torch.randn(ours.shape, generator=g)
            (ours * w).sum().backward(), (sdpa * w).sum().backward()
            assert torch.equal(x1.grad, x2.grad)
