"""The reference sampler's fixtures, shared by bench_sampling.py, time_to_gold.py and the studies: the
cases (networks, schedule, batch, steps, scale), the reference's networks (guided_diffusion,
PyPI guided-diffusion-sdk, a test/bench-only dependency) holding the same seeded random weights
as ours, and a runner that drives its p_sample_loop the way its classifier_sample.py does, on our
per-sample noise.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ (common puts the repository on sys.path)

import common  # noqa: E402, F401  (imported for its side effect: the repository on sys.path)

from adm.nets.classifier import Classifier  # noqa: E402
from adm.nets.config import ClassifierConfig, UNetConfig  # noqa: E402
from adm.nets.presets import get_preset  # noqa: E402
from adm.nets.unet import UNet  # noqa: E402
from adm.sampling.rng import randn_per_sample  # noqa: E402

# (b) a mid-size ADM: the ImageNet-64 architecture (4 levels, attention at 32/16/8, AdaGN,
# BigGAN up/down) at width 64 instead of 192, with a classifier of the same width.
MID64_UNET = UNetConfig(
    image_size=64,
    model_channels=64,
    num_res_blocks=2,
    attention_resolutions=(32, 16, 8),
    channel_mult=(1, 2, 3, 4),
    num_classes=1000,
    num_head_channels=32,
    use_new_attention_order=True,
)
MID64_CLF = ClassifierConfig(
    image_size=64, model_channels=64, num_res_blocks=2, channel_mult=(1, 2, 3, 4), num_head_channels=32
)

# case -> (UNet config, classifier config, noise schedule, batch, respacing, guidance scale)
CASES = {
    # the demo's networks and batch (config/config.yaml); 4 of its 25 steps keep the run short on
    # a shared machine (ms per image-step does not depend on the step count)
    "demo": (get_preset("demo-digits"), get_preset("demo-digits-classifier"), "cosine", 250, "4", 1.0),
    "mid64": (MID64_UNET, MID64_CLF, "cosine", 4, "2", 1.0),
}


def randomise_(net: torch.nn.Module, seed: int, std: float = 0.05) -> torch.nn.Module:
    """Non-zero weights (a fresh ADM outputs exactly 0, which would make every sampler agree)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return net.eval()


def reference_nets(ucfg: UNetConfig, ccfg: ClassifierConfig):
    from guided_diffusion import unet as gu

    unet = gu.UNetModel(
        image_size=ucfg.image_size,
        in_channels=ucfg.in_channels,
        model_channels=ucfg.model_channels,
        out_channels=ucfg.out_channels,
        num_res_blocks=ucfg.num_res_blocks,
        attention_resolutions=tuple(ucfg.image_size // r for r in ucfg.attention_resolutions),
        dropout=ucfg.dropout,
        channel_mult=ucfg.channel_mult,
        num_classes=ucfg.num_classes,
        num_heads=ucfg.num_heads,
        num_head_channels=ucfg.num_head_channels,
        num_heads_upsample=ucfg.num_heads_upsample,
        use_scale_shift_norm=ucfg.use_scale_shift_norm,
        resblock_updown=ucfg.resblock_updown,
        use_new_attention_order=ucfg.use_new_attention_order,
    )
    clf = gu.EncoderUNetModel(
        image_size=ccfg.image_size,
        in_channels=ccfg.in_channels,
        model_channels=ccfg.model_channels,
        out_channels=ccfg.num_classes,
        num_res_blocks=ccfg.num_res_blocks,
        attention_resolutions=tuple(ccfg.image_size // r for r in ccfg.attention_resolutions),
        dropout=ccfg.dropout,
        channel_mult=ccfg.resolved_channel_mult,
        num_head_channels=ccfg.num_head_channels,
        use_scale_shift_norm=ccfg.use_scale_shift_norm,
        resblock_updown=ccfg.resblock_updown,
        pool=ccfg.pool,
    )
    return randomise_(unet, 0), randomise_(clf, 1, std=0.1)


def case_networks(ucfg: UNetConfig, ccfg: ClassifierConfig):
    """(reference UNet, reference classifier, our UNet, our classifier), ours holding the same seeded
    random weights, copied by OpenAI's key names."""
    ref_unet, ref_clf = reference_nets(ucfg, ccfg)
    unet, clf = UNet(ucfg).eval(), Classifier(ccfg).eval()
    unet.load_state_dict(ref_unet.state_dict(), strict=True)
    clf.load_state_dict(ref_clf.state_dict(), strict=True)
    return ref_unet, ref_clf, unet, clf


def reference_runner(ref_unet, ref_clf, schedule_name: str, spec: str, scale: float, n: int, hw: int):
    """run(noise, y, gens) -> x_0 by guided_diffusion's p_sample_loop, as classifier_sample.py calls it."""
    from guided_diffusion import gaussian_diffusion as gd
    from guided_diffusion import respace as gr

    diffusion = gr.SpacedDiffusion(
        use_timesteps=gr.space_timesteps(1000, spec),
        betas=gd.get_named_beta_schedule(schedule_name, 1000),
        model_mean_type=gd.ModelMeanType.EPSILON,
        model_var_type=gd.ModelVarType.LEARNED_RANGE,
        loss_type=gd.LossType.MSE,
    )

    def cond_fn(x, t, y=None):  # classifier_sample.py's cond_fn
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            log_probs = F.log_softmax(ref_clf(x_in, t), dim=-1)
            selected = log_probs[range(len(log_probs)), y.view(-1)]
            return torch.autograd.grad(selected.sum(), x_in)[0] * scale

    def run(noise, y, gens):
        real = gd.th.randn_like
        gd.th.randn_like = lambda x, *a, **k: randn_per_sample(gens, x.shape[1:]).to(x.dtype)
        try:
            return diffusion.p_sample_loop(
                ref_unet, (n, 3, hw, hw), noise=noise, cond_fn=cond_fn, model_kwargs={"y": y}
            )
        finally:
            gd.th.randn_like = real

    return run
