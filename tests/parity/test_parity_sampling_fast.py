"""The sampler's default fast path (frozen networks, UNet under inference_mode, label range checked
once per batch) against the reference sampler: guided DDPM x_0 equal to 1e-4, same weights and noise.

The reference is guided_diffusion (PyPI guided-diffusion-sdk), driven as its classifier_sample.py
drives it, with its per-step torch.randn_like fed from our per-sample generators.
"""

import pytest
import torch
import torch.nn.functional as F

from adm.diffusion.schedule import make_schedule, respace
from adm.nets.classifier import Classifier
from adm.nets.presets import get_preset
from adm.nets.unet import UNet
from adm.sampling.guidance import classifier_guidance
from adm.sampling.precision import FastPath, sampling_classifier_fn, sampling_model_fn
from adm.sampling.rng import randn_per_sample, sample_generators
from adm.sampling.samplers import ddpm_sample

gd = pytest.importorskip("guided_diffusion.gaussian_diffusion")
gr = pytest.importorskip("guided_diffusion.respace")
gu = pytest.importorskip("guided_diffusion.unet")

torch.set_num_threads(1)
N, SCALE, SPEC = 4, 20.0, "10"


def _reference_nets(randomise):
    u, c = get_preset("demo-digits"), get_preset("demo-digits-classifier")
    unet = gu.UNetModel(
        image_size=8,
        in_channels=3,
        model_channels=u.model_channels,
        out_channels=6,
        num_res_blocks=u.num_res_blocks,
        attention_resolutions=(2,),
        channel_mult=u.channel_mult,
        num_classes=10,
        num_head_channels=u.num_head_channels,
        use_scale_shift_norm=True,
        resblock_updown=True,
        use_new_attention_order=True,
    )
    clf = gu.EncoderUNetModel(
        image_size=8,
        in_channels=3,
        model_channels=c.model_channels,
        out_channels=10,
        num_res_blocks=c.num_res_blocks,
        attention_resolutions=(2,),
        channel_mult=c.channel_mult,
        num_head_channels=c.num_head_channels,
        use_scale_shift_norm=True,
        resblock_updown=True,
        pool="attention",
    )
    return randomise(unet, 0, std=0.1), randomise(clf, 1, std=0.1)


def test_default_fast_path_equals_reference_trajectory(randomise, monkeypatch):
    ref_unet, ref_clf = _reference_nets(randomise)
    unet, clf = UNet(get_preset("demo-digits")), Classifier(get_preset("demo-digits-classifier"))
    unet.load_state_dict(ref_unet.state_dict()), clf.load_state_dict(ref_clf.state_dict())
    y = torch.tensor([3, 1, 4, 1])

    def ref_cond(x, t, y=None):
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            lp = F.log_softmax(ref_clf(x_in, t), dim=-1)
            return torch.autograd.grad(lp[range(len(lp)), y.view(-1)].sum(), x_in)[0] * SCALE

    gens = sample_generators(5, range(N))
    noise = randn_per_sample(gens, (3, 8, 8))
    monkeypatch.setattr(gd.th, "randn_like", lambda x, *a, **k: randn_per_sample(gens, x.shape[1:]))
    diffusion = gr.SpacedDiffusion(
        use_timesteps=gr.space_timesteps(1000, SPEC),
        betas=gd.get_named_beta_schedule("cosine", 1000),
        model_mean_type=gd.ModelMeanType.EPSILON,
        model_var_type=gd.ModelVarType.LEARNED_RANGE,
        loss_type=gd.LossType.MSE,
    )
    theirs = diffusion.p_sample_loop(ref_unet, (N, 3, 8, 8), noise=noise, cond_fn=ref_cond, model_kwargs={"y": y})
    monkeypatch.undo()

    gens = sample_generators(5, range(N))
    model_fn = sampling_model_fn(unet, FastPath(), "cpu")
    cond_fn = classifier_guidance(sampling_classifier_fn(clf, FastPath(), "cpu"), SCALE)
    mine = ddpm_sample(
        model_fn, randn_per_sample(gens, (3, 8, 8)), respace(make_schedule("cosine", 1000), SPEC), y, cond_fn, gens
    )
    unguided = ddpm_sample(
        model_fn,
        randn_per_sample(sample_generators(5, range(N)), (3, 8, 8)),
        respace(make_schedule("cosine", 1000), SPEC),
        y,
        None,
        sample_generators(5, range(N)),
    )
    assert (mine - unguided).abs().max() > 0.05  # guidance moves x_0, so the comparison sees it
    assert (mine - theirs).abs().max().item() < 1e-4
