"""Guided samplers against OpenAI's reference end to end: same weights, same noise, each side's own
networks and its own guidance path.

Ours: adm.nets.unet.UNet + adm.nets.classifier.Classifier (demo presets, random non-zero weights),
adm.sampling.guidance.classifier_guidance, ddpm_sample / ddim_sample.
Reference (guided-diffusion-sdk): its UNetModel / EncoderUNetModel holding the same state dict,
a cond_fn written to the reference's own contract (``cond_fn(x, t, y=...)``, called by
``p_sample_loop`` through ``condition_mean`` and by ``ddim_sample_loop`` through
``condition_score``, at timesteps mapped by SpacedDiffusion), and its samplers. The reference
cond_fn differentiates ``-cross_entropy`` rather than indexing a log-softmax, so a bug in our
guidance function cannot appear on both sides.
"""

import pytest
import torch
import torch.nn.functional as F

from adm.diffusion.schedule import make_schedule, respace
from adm.nets.presets import get_preset
from adm.sampling.guidance import classifier_guidance
from adm.sampling.rng import randn_per_sample, sample_generators
from adm.sampling.samplers import ddim_sample, ddpm_sample

gd = pytest.importorskip("guided_diffusion.gaussian_diffusion")
respace_ref = pytest.importorskip("guided_diffusion.respace")
ref_unet = pytest.importorskip("guided_diffusion.unet")

torch.set_num_threads(1)
ATOL = 1e-4
N, HW = 4, 8


def reference_nets(ours_unet, ours_clf):
    """The reference's networks with the demo presets' architecture, loaded with our weights."""
    u, c = get_preset("demo-digits"), get_preset("demo-digits-classifier")
    unet = ref_unet.UNetModel(
        image_size=u.image_size,
        in_channels=3,
        model_channels=u.model_channels,
        out_channels=u.out_channels,
        num_res_blocks=u.num_res_blocks,
        attention_resolutions=tuple(u.image_size // r for r in u.attention_resolutions),
        channel_mult=u.channel_mult,
        num_classes=u.num_classes,
        num_heads=u.num_heads,
        num_head_channels=u.num_head_channels,
        use_scale_shift_norm=u.use_scale_shift_norm,
        resblock_updown=u.resblock_updown,
        use_new_attention_order=u.use_new_attention_order,
    )
    clf = ref_unet.EncoderUNetModel(
        image_size=c.image_size,
        in_channels=3,
        model_channels=c.model_channels,
        out_channels=c.num_classes,
        num_res_blocks=c.num_res_blocks,
        attention_resolutions=tuple(c.image_size // r for r in c.attention_resolutions),
        channel_mult=c.resolved_channel_mult,
        num_head_channels=c.num_head_channels,
        use_scale_shift_norm=c.use_scale_shift_norm,
        resblock_updown=c.resblock_updown,
        pool=c.pool,
    )
    unet.load_state_dict(ours_unet.state_dict(), strict=True)
    clf.load_state_dict(ours_clf.state_dict(), strict=True)
    return unet.eval(), clf.eval()


@pytest.fixture(scope="module")
def both(demo_nets):
    return demo_nets, reference_nets(*demo_nets)


def reference_cond_fn(classifier, scale):
    """s * grad_x log p(y | x_t) in the reference's cond_fn contract (keyword y, returns the gradient)."""

    def cond_fn(x, t, y=None):
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            # sum_i log p(y_i | x_i) = -cross_entropy summed over the batch
            log_p = -F.cross_entropy(classifier(x_in, t), y, reduction="sum")
            return torch.autograd.grad(log_p, x_in)[0] * scale

    return cond_fn


def ref_sampler(T, spec, schedule):
    return respace_ref.SpacedDiffusion(
        use_timesteps=respace_ref.space_timesteps(T, spec),
        betas=gd.get_named_beta_schedule(schedule, T),
        model_mean_type=gd.ModelMeanType.EPSILON,
        model_var_type=gd.ModelVarType.LEARNED_RANGE,
        loss_type=gd.LossType.MSE,
    )


def inputs(seed):
    gens = sample_generators(seed, range(N))
    noise = randn_per_sample(gens, (3, HW, HW))  # x_T: the first draw of each sample's stream
    return noise, torch.tensor([3, 1, 4, 1]), gens


def run_reference(monkeypatch, method, diffusion, unet, cond_fn, seed, **kw):
    """The reference sampler with its per-step torch.randn_like fed from our per-sample streams."""
    noise, y, gens = inputs(seed)
    monkeypatch.setattr(gd.th, "randn_like", lambda x, *a, **k: randn_per_sample(gens, x.shape[1:]))
    out = getattr(diffusion, method)(unet, (N, 3, HW, HW), noise=noise, cond_fn=cond_fn, model_kwargs={"y": y}, **kw)
    monkeypatch.undo()
    return out


# A random tiny classifier has small gradients, so large scales make guidance matter: at s = 100
# (DDPM) the guided x_0 moves by 0.1-0.3 from the unguided one, at s = 10 (DDIM) by 0.09-0.15,
# i.e. ~1000x ATOL. The reference is given its cond_fn at scale 0 too (OpenAI's script always
# passes one), so scale 0 compares our unguided path with the reference's zero-gradient path.
CASES = [(100, "10", "cosine", 0.0), (100, "10", "cosine", 100.0), (1000, "25", "linear", 100.0)]


@pytest.mark.parametrize("T,spec,sched,scale", CASES)
def test_ddpm_parity(monkeypatch, both, T, spec, sched, scale):
    (unet, clf), (r_unet, r_clf) = both
    noise, y, gens = inputs(7)
    mine = ddpm_sample(
        lambda x, t, yy: unet(x, t, yy),
        noise,
        respace(make_schedule(sched, T), spec),
        y,
        classifier_guidance(clf, scale),
        gens,
    )
    theirs = run_reference(
        monkeypatch, "p_sample_loop", ref_sampler(T, spec, sched), r_unet, reference_cond_fn(r_clf, scale), 7
    )
    assert (mine - theirs).abs().max().item() < ATOL


@pytest.mark.parametrize("eta", [0.0, 0.5])
@pytest.mark.parametrize("scale", [0.0, 10.0])
def test_ddim_parity(monkeypatch, both, eta, scale):
    (unet, clf), (r_unet, r_clf) = both
    noise, y, gens = inputs(11)
    sched = respace(make_schedule("linear", 1000), "ddim10")
    mine = ddim_sample(lambda x, t, yy: unet(x, t, yy), noise, sched, y, classifier_guidance(clf, scale), gens, eta=eta)
    theirs = run_reference(
        monkeypatch,
        "ddim_sample_loop",
        ref_sampler(1000, "ddim10", "linear"),
        r_unet,
        reference_cond_fn(r_clf, scale),
        11,
        eta=eta,
    )
    assert (mine - theirs).abs().max().item() < ATOL


def test_guidance_matters_at_the_tested_scales(both):
    """Guards the parity cases above: a wrong guidance term would move x_0 far beyond ATOL."""
    (unet, clf), _ = both
    sched = respace(make_schedule("linear", 1000), "ddim10")
    runs = [
        ddim_sample(
            lambda x, t, yy: unet(x, t, yy),
            *inputs(11)[:1],
            sched,
            inputs(11)[1],
            classifier_guidance(clf, s),
            inputs(11)[2],
        )
        for s in (0.0, 10.0)
    ]
    assert (runs[0] - runs[1]).abs().max().item() > 100 * ATOL
