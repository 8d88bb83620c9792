"""Networks without the reference: released parameter counts, zero-initialised heads, precision
modes, gradient checkpointing, input checks. Parity with OpenAI's code: test_parity_networks.py.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from adm.nets import blocks as adm_nn
from adm.nets.build import build_model
from adm.nets.classifier import Classifier
from adm.nets.config import UNetConfig
from adm.nets.presets import CLASSIFIER_PRESETS, UNET_PRESETS
from adm.nets.unet import UNet

torch.set_num_threads(1)
TINY = UNET_PRESETS["tiny-test"]


@pytest.mark.parametrize(
    "name, params, entries",
    [
        ("imagenet128-cond", 421_529_606, 493),  # counts of OpenAI's 128x128_diffusion.pt
        ("imagenet128-classifier", 42_568_040, 221),  # 128x128_classifier.pt
        ("imagenet512-cond", 558_997_638, None),  # 512x512_diffusion.pt
    ],
)
def test_parameter_counts_of_released_models(name, params, entries):
    with torch.device("meta"):
        model = build_model({**UNET_PRESETS, **CLASSIFIER_PRESETS}[name])
    assert sum(p.numel() for p in model.parameters()) == params
    if entries is not None:
        assert len(model.state_dict()) == entries


def test_fresh_unet_outputs_zero_and_classifier_starts_finite():
    """Zero-initialised output conv: a new UNet predicts exactly 0 (residual branches start as identity)."""
    torch.manual_seed(0)
    model = UNet(TINY)
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([1, 2]), torch.tensor([3, 4])
    assert torch.count_nonzero(model(x, t, y)) == 0
    logits = Classifier(CLASSIFIER_PRESETS["tiny-test-classifier"])(x, t)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


def test_every_demo_and_test_preset_runs():
    for name in ("demo-digits", "tiny-test", "demo-digits-classifier", "tiny-test-classifier"):
        cfg = {**UNET_PRESETS, **CLASSIFIER_PRESETS}[name]
        model = build_model(cfg).eval()
        x, t = torch.randn(2, 3, cfg.image_size, cfg.image_size), torch.tensor([0, 999])
        out = model(x, t, torch.tensor([0, 9])) if name in UNET_PRESETS else model(x, t)
        assert out.shape == ((2, 6, cfg.image_size, cfg.image_size) if name in UNET_PRESETS else (2, 10))


# ---------------------------------------------------------------- precision


def test_bf16_autocast_runs_on_cpu(randomise):
    model = randomise(UNet(TINY), 5, std=0.3)
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([5, 600]), torch.tensor([1, 2])
    with torch.no_grad():
        ref = model(x, t, y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, t, y)
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()


def test_groupnorm32_normalises_in_float32():
    norm = adm_nn.normalization(64)
    x = (torch.randn(2, 64, 4, 4) * 100 + 1000).to(torch.bfloat16)
    out = norm(x)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, torch.nn.functional.group_norm(x.float(), 32, norm.weight, norm.bias).to(torch.bfloat16))


def test_fp16_mode_refuses_cpu():
    with pytest.raises(ValueError, match="CUDA"):
        UNet(TINY).convert_to_fp16()
    with pytest.raises(ValueError, match="CUDA"):
        Classifier(CLASSIFIER_PRESETS["tiny-test-classifier"]).convert_to_fp16()


# ---------------------------------------------------------------- gradient checkpointing


def test_gradient_checkpointing_gives_same_gradients(randomise):
    cfg = dataclasses.replace(TINY, use_checkpoint=True)
    plain, ckpt = UNet(TINY), UNet(cfg)
    randomise(plain, 7, std=0.3).train()
    ckpt.load_state_dict(plain.state_dict())
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([3, 300]), torch.tensor([0, 5])
    grads = []
    for model in (plain, ckpt):
        model.zero_grad()
        model(x, t, y).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(x=torch.randn(2, 3, 8, 8)), r"x must have shape \(N, 3, 16, 16\)"),
        (dict(x=torch.randn(2, 1, 16, 16)), r"x must have shape \(N, 3, 16, 16\)"),
        (dict(y=torch.tensor([0, 10])), r"labels must lie in \[0, 10\)"),
        (dict(y=torch.tensor([-1, 0])), r"labels must lie in \[0, 10\)"),
        (dict(y=None), "y .class labels. is required"),
        (dict(y=torch.tensor([0.0, 1.0])), "integer tensor"),
        (dict(t=torch.tensor([1])), r"t must have shape \(2,\)"),
        (dict(low_res=torch.randn(2, 3, 8, 8)), "not a super-resolution model"),
    ],
)
def test_unet_rejects_bad_input_with_clear_message(change, message):
    args = dict(x=torch.randn(2, 3, 16, 16), t=torch.tensor([1, 2]), y=torch.tensor([0, 1]), low_res=None)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        UNet(TINY)(**args)


def test_unconditional_and_superres_input_checks():
    uncond = UNet(dataclasses.replace(TINY, num_classes=None))
    with pytest.raises(ValueError, match="unconditional"):
        uncond(torch.randn(1, 3, 16, 16), torch.tensor([1]), torch.tensor([0]))
    sr = UNet(dataclasses.replace(TINY, in_channels=6, super_res=True))
    with pytest.raises(ValueError, match="low_res is required"):
        sr(torch.randn(1, 3, 16, 16), torch.tensor([1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="x must have shape"):
        sr(torch.randn(1, 6, 16, 16), torch.tensor([1]), torch.tensor([0]), torch.randn(1, 3, 8, 8))
    classifier = Classifier(CLASSIFIER_PRESETS["tiny-test-classifier"])
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3, 16, 16\)"):
        classifier(torch.randn(1, 3, 32, 32), torch.tensor([1]))


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="not divisible by num_head_channels"):
        UNet(dataclasses.replace(TINY, num_head_channels=48))
    with pytest.raises(ValueError, match="multiple of 32"):
        UNetConfig(image_size=16, model_channels=24, num_res_blocks=1, attention_resolutions=(), channel_mult=(1,))
    with pytest.raises(ValueError, match="divisible by 2"):
        UNetConfig(image_size=10, model_channels=32, num_res_blocks=1, attention_resolutions=(), channel_mult=(1, 1, 1))
