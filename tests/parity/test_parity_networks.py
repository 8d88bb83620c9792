"""Networks against OpenAI's code (guided-diffusion-sdk, import `guided_diffusion`, an oracle only):
checkpoint compatibility (keys, shapes) and numerical parity in fp32 (and fp16 on CUDA).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from adm.nets import blocks as adm_nn
from adm.nets.build import build_model
from adm.nets.classifier import Classifier
from adm.nets.config import ClassifierConfig, UNetConfig
from adm.nets.presets import CLASSIFIER_PRESETS, UNET_PRESETS
from adm.nets.unet import UNet

gd_unet = pytest.importorskip("guided_diffusion.unet")
gd_script = pytest.importorskip("guided_diffusion.script_util")
gd_nn = pytest.importorskip("guided_diffusion.nn")

torch.set_num_threads(1)

# MODEL_FLAGS of openai/guided-diffusion's README (commit 27c20a8), minus sampling-only flags
# (use_fp16, diffusion_steps, noise_schedule). Each builds the reference through script_util.
COMMON = dict(learn_sigma=True, resblock_updown=True, use_scale_shift_norm=True)
README_MODEL_FLAGS = {
    "imagenet64-cond": dict(
        attention_resolutions="32,16,8",
        class_cond=True,
        dropout=0.1,
        image_size=64,
        num_channels=192,
        num_head_channels=64,
        num_res_blocks=3,
        use_new_attention_order=True,
    ),
    "imagenet128-cond": dict(
        attention_resolutions="32,16,8",
        class_cond=True,
        image_size=128,
        num_channels=256,
        num_heads=4,
        num_res_blocks=2,
    ),
    "imagenet256-cond": dict(
        attention_resolutions="32,16,8",
        class_cond=True,
        image_size=256,
        num_channels=256,
        num_head_channels=64,
        num_res_blocks=2,
    ),
    "imagenet256-uncond": dict(
        attention_resolutions="32,16,8",
        class_cond=False,
        image_size=256,
        num_channels=256,
        num_head_channels=64,
        num_res_blocks=2,
    ),
    "imagenet512-cond": dict(
        attention_resolutions="32,16,8",
        class_cond=True,
        image_size=512,
        num_channels=256,
        num_head_channels=64,
        num_res_blocks=2,
    ),
}
README_SR_FLAGS = {
    "upsample64-256": dict(
        attention_resolutions="32,16,8",
        class_cond=True,
        large_size=256,
        small_size=64,
        num_channels=192,
        num_heads=4,
        num_res_blocks=2,
    ),
    "upsample128-512": dict(
        attention_resolutions="32,16",
        class_cond=True,
        large_size=512,
        small_size=128,
        num_channels=192,
        num_head_channels=64,
        num_res_blocks=2,
    ),
}
README_CLASSIFIER_FLAGS = {  # --classifier_width 128 --classifier_pool attention; 64×64 uses depth 4
    f"imagenet{size}-classifier": dict(image_size=size, classifier_depth=4 if size == 64 else 2)
    for size in (64, 128, 256, 512)
}


def reference_from_readme(name: str) -> torch.nn.Module:
    """OpenAI's network for a released checkpoint, built from the README flags via script_util."""
    if name in README_MODEL_FLAGS:
        args = {**gd_script.model_and_diffusion_defaults(), **COMMON, **README_MODEL_FLAGS[name]}
        keep = set(gd_script.create_model.__code__.co_varnames[: gd_script.create_model.__code__.co_argcount])
        return gd_script.create_model(**{k: v for k, v in args.items() if k in keep})
    if name in README_SR_FLAGS:
        args = {**gd_script.sr_model_and_diffusion_defaults(), **COMMON, **README_SR_FLAGS[name]}
        keep = set(gd_script.sr_create_model.__code__.co_varnames[: gd_script.sr_create_model.__code__.co_argcount])
        return gd_script.sr_create_model(**{k: v for k, v in args.items() if k in keep})
    args = {**gd_script.classifier_defaults(), **README_CLASSIFIER_FLAGS[name]}
    return gd_script.create_classifier(**args)


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


RELEASED = [*README_MODEL_FLAGS, *README_SR_FLAGS, *README_CLASSIFIER_FLAGS]


@pytest.mark.parametrize("name", RELEASED)
def test_released_state_dict_keys_and_shapes_equal_openai(name):
    cfg = {**UNET_PRESETS, **CLASSIFIER_PRESETS}[name]
    with torch.device("meta"):  # no weights are allocated
        ours, ref = build_model(cfg), reference_from_readme(name)
    ours_shapes, ref_shapes = shapes(ours), shapes(ref)
    assert list(ours_shapes) == list(ref_shapes)  # same keys in the same order
    assert ours_shapes == ref_shapes


# ---------------------------------------------------------------- numerical parity (fp32)


def reference_unet(cfg: UNetConfig) -> torch.nn.Module:
    """OpenAI's UNetModel / SuperResModel with the same architecture as `cfg`."""
    cls = gd_unet.SuperResModel if cfg.super_res else gd_unet.UNetModel
    return cls(
        image_size=cfg.image_size,
        in_channels=cfg.image_channels,
        model_channels=cfg.model_channels,
        out_channels=cfg.out_channels,
        num_res_blocks=cfg.num_res_blocks,
        attention_resolutions=tuple(cfg.image_size // r for r in cfg.attention_resolutions),
        dropout=cfg.dropout,
        channel_mult=cfg.channel_mult,
        num_classes=cfg.num_classes,
        num_heads=cfg.num_heads,
        num_head_channels=cfg.num_head_channels,
        num_heads_upsample=cfg.num_heads_upsample,
        use_scale_shift_norm=cfg.use_scale_shift_norm,
        resblock_updown=cfg.resblock_updown,
        use_new_attention_order=cfg.use_new_attention_order,
    )


def reference_classifier(cfg: ClassifierConfig) -> torch.nn.Module:
    return gd_unet.EncoderUNetModel(
        image_size=cfg.image_size,
        in_channels=cfg.in_channels,
        model_channels=cfg.model_channels,
        out_channels=cfg.num_classes,
        num_res_blocks=cfg.num_res_blocks,
        attention_resolutions=tuple(cfg.image_size // r for r in cfg.attention_resolutions),
        dropout=cfg.dropout,
        channel_mult=cfg.resolved_channel_mult,
        num_head_channels=cfg.num_head_channels,
        use_scale_shift_norm=cfg.use_scale_shift_norm,
        resblock_updown=cfg.resblock_updown,
        pool=cfg.pool,
    )


def paired(ours: torch.nn.Module, ref: torch.nn.Module, seed: int = 0) -> None:
    """Same random non-zero weights in both (the zero-initialised convs would hide any difference)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval(), ref.eval()


TINY = UNET_PRESETS["tiny-test"]
UNET_CASES = {
    "cond-legacy-heads": dataclasses.replace(TINY, num_head_channels=-1, num_heads=2),
    "uncond-new-headch": dataclasses.replace(TINY, num_classes=None, use_new_attention_order=True),
    "legacy-headch-noupdown": dataclasses.replace(TINY, resblock_updown=False),
    "new-heads-noscaleshift": dataclasses.replace(
        TINY, num_head_channels=-1, num_heads=4, use_new_attention_order=True, use_scale_shift_norm=False
    ),
    "heads-upsample-dropout": dataclasses.replace(
        TINY, num_head_channels=-1, num_heads=2, num_heads_upsample=1, dropout=0.1, learn_sigma=False
    ),
    "three-levels-attn-two-res": dataclasses.replace(
        TINY, channel_mult=(1, 1, 2), attention_resolutions=(8, 4), num_res_blocks=2, model_channels=32
    ),
    "superres": dataclasses.replace(TINY, in_channels=6, super_res=True),
}


@pytest.mark.parametrize("case", list(UNET_CASES))
def test_unet_matches_reference(case):
    cfg = UNET_CASES[case]
    ours, ref = UNet(cfg), reference_unet(cfg)
    paired(ours, ref)
    g = torch.Generator().manual_seed(1)
    n, s = 3, cfg.image_size
    x = torch.randn(n, cfg.image_channels, s, s, generator=g)
    t = torch.randint(0, 1000, (n,), generator=g)
    y = torch.randint(0, 10, (n,), generator=g) if cfg.num_classes else None
    kwargs = {"y": y} if y is not None else {}
    low = torch.randn(n, cfg.image_channels, s // 2, s // 2, generator=g) if cfg.super_res else None
    with torch.no_grad():
        expected = ref(x, t, low_res=low, **kwargs) if cfg.super_res else ref(x, t, **kwargs)
        got = ours(x, t, y, low_res=low)
    assert got.shape == (n, cfg.out_channels, s, s)
    diff = (got - expected).abs().max().item()
    assert diff <= 1e-5 * max(1.0, expected.abs().max().item()), diff


@pytest.mark.parametrize("pool", ["attention", "adaptive"])
def test_classifier_matches_reference(pool):
    cfg = dataclasses.replace(CLASSIFIER_PRESETS["tiny-test-classifier"], pool=pool, num_res_blocks=2)
    ours, ref = Classifier(cfg), reference_classifier(cfg)
    paired(ours, ref, seed=3)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 3, cfg.image_size, cfg.image_size, generator=g)
    t = torch.randint(0, 1000, (3,), generator=g)
    with torch.no_grad():
        expected, got = ref(x, t), ours(x, t)
    assert got.shape == (3, cfg.num_classes)
    assert (got - expected).abs().max().item() <= 1e-5 * max(1.0, expected.abs().max().item())


@pytest.mark.parametrize("new_order", [False, True])
@pytest.mark.parametrize("heads", [1, 3])
def test_sdpa_attention_equals_einsum_formulation(new_order, heads):
    qkv = torch.randn(2, 3 * heads * 16, 25, generator=torch.Generator().manual_seed(heads))
    ref = (gd_unet.QKVAttention if new_order else gd_unet.QKVAttentionLegacy)(heads)
    got = adm_nn.qkv_attention(qkv, heads, new_order)
    assert (got - ref(qkv)).abs().max().item() <= 1e-5


def test_timestep_embedding_equals_reference():
    t = torch.tensor([0, 1, 17, 999, 500])
    for dim in (32, 33, 192):
        assert torch.equal(adm_nn.timestep_embedding(t, dim), gd_nn.timestep_embedding(t, dim))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 mode is CUDA-only")
def test_fp16_mode_as_accurate_as_reference_fp16_on_cuda():
    cfg = dataclasses.replace(TINY, num_head_channels=-1, num_heads=2)
    ours, ref = UNet(cfg), reference_unet(cfg)
    paired(ours, ref)
    ours, ref = ours.cuda(), ref.cuda()
    g = torch.Generator().manual_seed(4)
    x, t, y = torch.randn(4, 3, 16, 16, generator=g), torch.tensor([1, 10, 100, 999]), torch.tensor([0, 1, 2, 3])
    x, t, y = x.cuda(), t.cuda(), y.cuda()
    with torch.no_grad():
        exact = ref(x, t, y=y)  # fp32
        ours.convert_to_fp16()
        ref.convert_to_fp16(), setattr(ref, "dtype", torch.float16)
        got, expected = ours(x, t, y), ref(x, t, y=y)
    assert got.dtype == torch.float32 and ours.input_blocks[0][0].weight.dtype == torch.float16
    assert ours.out[0].weight.dtype == torch.float32 and ours.time_embed[0].weight.dtype == torch.float32
    # fp16 rounding differs between the SDPA kernel and the einsum: compare errors against fp32
    ours_err, ref_err = (got - exact).abs().max(), (expected - exact).abs().max()
    assert ours_err <= 2 * ref_err + 1e-3 * exact.abs().max()
    assert (got - expected).abs().max() <= 1e-2 * exact.abs().max()
