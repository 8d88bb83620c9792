"""The upsample program against OpenAI's super-resolution sampling: same weights, same noise, fp32.

Ours: `adm.programs.upsample.upsample_shard` as a user runs it (checkpoint + low-res npz on disk, batches
of 2 over 5 images, so a noise stream or low-res image tied to the batch position rather than
to the global index i shows), its float x_0 captured where it is cast to uint8.
Reference (guided-diffusion-sdk): `SuperResModel` holding the same state dict and
`SpacedDiffusion.p_sample_loop` / `ddim_sample_loop` with model_kwargs {"low_res", "y"}, the
low-res batch made as OpenAI's scripts/super_res_sample.py makes it (uint8 / 127.5 - 1, NCHW),
its x_T and every per-step `randn_like` fed from our per-index generators.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import adm.sampling.samplers
from adm.nets.build import build_model
from adm.nets.checkpoints import save_model
from adm.nets.presets import get_preset
from adm.programs.upsample import UpsampleConfig, upsample_generators, upsample_shard
from adm.sampling.rng import randn_per_sample

gd = pytest.importorskip("guided_diffusion.gaussian_diffusion")
respace_ref = pytest.importorskip("guided_diffusion.respace")
gd_unet = pytest.importorskip("guided_diffusion.unet")

torch.set_num_threads(1)
ATOL = 1e-4
N, SEED = 5, 9
UP = get_preset("tiny-test-upsample")
DIFF = get_preset("tiny-test-upsample", "diffusion")


def reference_superres(cfg, state):
    net = gd_unet.SuperResModel(
        image_size=cfg.image_size,
        in_channels=cfg.image_channels,
        model_channels=cfg.model_channels,
        out_channels=cfg.out_channels,
        num_res_blocks=cfg.num_res_blocks,
        attention_resolutions=tuple(cfg.image_size // r for r in cfg.attention_resolutions),
        channel_mult=cfg.channel_mult,
        num_classes=cfg.num_classes,
        num_heads=cfg.num_heads,
        num_head_channels=cfg.num_head_channels,
        use_scale_shift_norm=cfg.use_scale_shift_norm,
        resblock_updown=cfg.resblock_updown,
        use_new_attention_order=cfg.use_new_attention_order,
    )
    net.load_state_dict(state, strict=True)
    return net.eval()


def reference_diffusion(spec):
    T = DIFF.diffusion_steps
    return respace_ref.SpacedDiffusion(
        use_timesteps=respace_ref.space_timesteps(T, spec),
        betas=gd.get_named_beta_schedule(DIFF.noise_schedule, T),
        model_mean_type=gd.ModelMeanType.EPSILON,
        model_var_type=gd.ModelVarType.LEARNED_RANGE,
        loss_type=gd.LossType.MSE,
    )


@pytest.fixture(scope="module", params=["cond", "uncond"])
def setup(request, tmp_path_factory, randomise):
    """(folder with up.pt and low.npz, our network, the reference network) for a (un)conditional upsampler."""
    d = tmp_path_factory.mktemp(f"parity-{request.param}")
    cfg = UP if request.param == "cond" else dataclasses.replace(UP, num_classes=None)
    ours = randomise(build_model(cfg), seed=30, std=0.1)
    save_model(ours, cfg, d / "up.pt", diffusion=DIFF)
    rng = np.random.default_rng(3)
    np.savez(d / "low.npz", arr_0=rng.integers(0, 256, (N, 4, 4, 3), dtype=np.uint8), arr_1=rng.integers(0, 10, N))
    return d, cfg, reference_superres(cfg, ours.state_dict())


def ours_float(monkeypatch, d, spec):
    """The program's x_0 (float, before the uint8 cast), batch by batch in index order."""
    captured = []
    real = adm.sampling.samplers.to_uint8
    monkeypatch.setattr(adm.sampling.samplers, "to_uint8", lambda x: captured.append(x.clone()) or real(x))
    upsample_shard(
        UpsampleConfig(
            model=str(d / "up.pt"),
            low_res=str(d / "low.npz"),
            out=str(d / f"{spec}.npz"),
            respacing=spec,
            batch_size=2,
            seed=SEED,
        ),
        progress=False,
    )
    monkeypatch.undo()
    return torch.cat(captured)


def reference_x0(monkeypatch, d, cfg, ref, spec, low_scale=127.5):
    """OpenAI's super-res sampling of all N images in one batch, noise from our generators."""
    with np.load(d / "low.npz") as f:
        low, labels = f["arr_0"], f["arr_1"]
    low_res = torch.from_numpy(low).float() / low_scale - 1.0  # super_res_sample.py: batch / 127.5 - 1
    kwargs = {"low_res": low_res.permute(0, 3, 1, 2)}
    if cfg.num_classes:
        kwargs["y"] = torch.from_numpy(labels)
    gens = upsample_generators(SEED, range(N))
    noise = randn_per_sample(gens, (3, cfg.image_size, cfg.image_size))
    with monkeypatch.context() as m:
        m.setattr(gd.th, "randn_like", lambda x, *a, **k: randn_per_sample(gens, x.shape[1:]))
        loop = "ddim_sample_loop" if spec.startswith("ddim") else "p_sample_loop"
        return getattr(reference_diffusion(spec), loop)(
            ref, noise.shape, noise=noise, clip_denoised=True, model_kwargs=kwargs
        )


@pytest.mark.parametrize("spec", ["10", "ddim10"])
def test_upsample_program_equals_reference(monkeypatch, setup, spec):
    d, cfg, ref = setup
    mine = ours_float(monkeypatch, d, spec)
    theirs = reference_x0(monkeypatch, d, cfg, ref, spec)
    assert mine.shape == theirs.shape == (N, 3, 16, 16)
    assert (mine - theirs).abs().max().item() < ATOL


def test_low_res_scaling_matters(monkeypatch, setup):
    """Guards the parity cases: low-res fed unscaled-ish (/255 - 1, in [-1, 0]) moves x_0 far beyond ATOL."""
    d, cfg, ref = setup
    right = reference_x0(monkeypatch, d, cfg, ref, "10")
    wrong = reference_x0(monkeypatch, d, cfg, ref, "10", low_scale=255.0)
    assert (right - wrong).abs().max().item() > 100 * ATOL
