"""Samplers: parity with the reference for the same weights and injected noise, per-sample
determinism, original timesteps, the uint8 conversion.

Parity networks are the reference's own UNetModel / EncoderUNetModel at tiny widths with random
weights (their zero-initialised output layers would make every output 0), called identically on
both sides, so only the sampler math is compared.
"""

import numpy as np
import pytest
import torch

from adm.guidance import classifier_guidance
from adm.rng import randn_per_sample, sample_generators
from adm.sampling import ddim_sample, ddpm_sample, to_uint8
from adm.schedule import make_schedule, respace

gd = pytest.importorskip("guided_diffusion.gaussian_diffusion")
respace_ref = pytest.importorskip("guided_diffusion.respace")
ref_unet = pytest.importorskip("guided_diffusion.unet")

torch.set_num_threads(1)
ATOL = 1e-4
N, HW, NUM_CLASSES = 4, 8, 10


def _randomize(module, seed, std=0.05):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module.eval()


def make_nets():
    unet = ref_unet.UNetModel(
        image_size=HW, in_channels=3, model_channels=32, out_channels=6, num_res_blocks=1,
        attention_resolutions=(2,), channel_mult=(1, 2), num_classes=NUM_CLASSES, num_heads=2,
        use_scale_shift_norm=True, resblock_updown=True)
    clf = ref_unet.EncoderUNetModel(
        image_size=HW, in_channels=3, model_channels=32, out_channels=NUM_CLASSES, num_res_blocks=1,
        attention_resolutions=(2,), channel_mult=(1, 2), num_head_channels=32,
        use_scale_shift_norm=True, resblock_updown=True, pool="attention")
    return _randomize(unet, 0), _randomize(clf, 1, std=0.1)


@pytest.fixture(scope="module")
def nets():
    return make_nets()


def model_fn_of(unet):
    return lambda x, t, y: unet(x, t, y)


def ref_sampler(T, spec, schedule):
    return respace_ref.SpacedDiffusion(
        use_timesteps=respace_ref.space_timesteps(T, spec), betas=gd.get_named_beta_schedule(schedule, T),
        model_mean_type=gd.ModelMeanType.EPSILON, model_var_type=gd.ModelVarType.LEARNED_RANGE,
        loss_type=gd.LossType.MSE)


def inputs(seed=0, indices=range(N)):
    gens = sample_generators(seed, indices)
    noise = randn_per_sample(gens, (3, HW, HW))  # x_T from each sample's own stream
    y = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6][: len(noise)])
    return noise, y, gens


def run_reference(monkeypatch, method, diffusion, unet, cond_fn, seed, **kw):
    """The reference sampler with its per-step torch.randn_like fed from our per-sample streams."""
    noise, y, gens = inputs(seed)  # x_T was the first draw of each stream, as in our sampler
    monkeypatch.setattr(gd.th, "randn_like", lambda x, *a, **k: randn_per_sample(gens, x.shape[1:]))
    out = getattr(diffusion, method)(unet, (N, 3, HW, HW), noise=noise, cond_fn=cond_fn,
                                     model_kwargs={"y": y}, **kw)
    monkeypatch.undo()
    return out


# The random tiny classifier has small gradients, so large scales are used to make guidance matter:
# at s = 100 (DDPM) / 30 (DDIM) the guided x_0 moves by ~0.1-0.26 from the unguided one.
CASES = [(100, "10", "cosine", 0.0), (100, "10", "cosine", 100.0), (1000, "25", "linear", 100.0)]


@pytest.mark.parametrize("T,spec,sched,scale", CASES)
def test_ddpm_parity(monkeypatch, nets, T, spec, sched, scale):
    unet, clf = nets
    cond_fn = classifier_guidance(clf, scale)
    noise, y, gens = inputs(7)
    mine = ddpm_sample(model_fn_of(unet), noise, respace(make_schedule(sched, T), spec), y, cond_fn, gens)
    theirs = run_reference(monkeypatch, "p_sample_loop", ref_sampler(T, spec, sched), unet, cond_fn, 7)
    assert (mine - theirs).abs().max().item() < ATOL


@pytest.mark.parametrize("eta", [0.0, 0.5])
@pytest.mark.parametrize("scale", [0.0, 30.0])
def test_ddim_parity(monkeypatch, nets, eta, scale):
    unet, clf = nets
    cond_fn = classifier_guidance(clf, scale)
    noise, y, gens = inputs(11)
    sched = respace(make_schedule("linear", 1000), "ddim10")
    mine = ddim_sample(model_fn_of(unet), noise, sched, y, cond_fn, gens, eta=eta)
    theirs = run_reference(monkeypatch, "ddim_sample_loop", ref_sampler(1000, "ddim10", "linear"),
                           unet, cond_fn, 11, eta=eta)
    assert (mine - theirs).abs().max().item() < ATOL


@pytest.mark.parametrize("sampler,kw", [(ddpm_sample, {}), (ddim_sample, {"eta": 1.0})])
def test_sample_independent_of_batch(nets, sampler, kw):
    unet, clf = nets
    sched = respace(make_schedule("cosine", 100), "8")
    cond_fn = classifier_guidance(clf, 2.0)
    noise, y, gens = inputs(5)
    whole = sampler(model_fn_of(unet), noise, sched, y, cond_fn, gens, **kw)
    halves = []
    for idx in (range(0, 2), range(2, 4)):
        n, _, g = inputs(5, idx)
        halves.append(sampler(model_fn_of(unet), n, sched, y[list(idx)], cond_fn, g, **kw))
    assert torch.allclose(whole, torch.cat(halves), atol=1e-6)


def test_scale_zero_is_unguided_bit_for_bit(nets):
    unet, clf = nets
    sched = respace(make_schedule("linear", 1000), "5")
    for sampler in (ddpm_sample, ddim_sample):
        runs = []
        for cond_fn in (None, classifier_guidance(clf, 0.0)):
            noise, y, gens = inputs(2)
            runs.append(sampler(model_fn_of(unet), noise, sched, y, cond_fn, gens))
        assert torch.equal(runs[0], runs[1])
        noise, y, gens = inputs(2)
        guided = sampler(model_fn_of(unet), noise, sched, y, classifier_guidance(clf, 10.0), gens)
        assert not torch.equal(guided, runs[0])


def test_networks_see_original_timesteps():
    sched = respace(make_schedule("linear", 1000), "ddim4")
    seen, seen_clf = [], []

    def model_fn(x, t, y):
        seen.append(t.tolist())
        return torch.zeros(len(x), 6, *x.shape[2:])

    def clf(x, t):
        seen_clf.append(t.tolist())
        return x.flatten(1)[:, :3] * 1.0

    noise = torch.randn(2, 3, 4, 4)
    ddpm_sample(model_fn, noise, sched, torch.tensor([0, 2]), classifier_guidance(clf, 1.0), progress=True)
    assert seen == seen_clf == [[750] * 2, [500] * 2, [250] * 2, [0] * 2]
    with pytest.raises(ValueError, match="labels"):
        ddim_sample(model_fn, noise, sched, None, classifier_guidance(clf, 1.0))


def test_fixed_variance_sampler_runs():
    sched = make_schedule("cosine", 6)
    out = ddpm_sample(lambda x, t, y: torch.zeros_like(x), torch.randn(2, 3, 4, 4), sched, learn_sigma=False)
    assert out.shape == (2, 3, 4, 4) and out.abs().max() <= 1.0 + 1e-6


def test_to_uint8():
    x = torch.tensor([-1.0, -2.0, 0.0, 1.0, 0.999, 3.0]).view(1, 1, 2, 3).expand(2, 3, 2, 3)
    u = to_uint8(x)
    assert u.dtype == np.uint8 and u.shape == (2, 2, 3, 3)
    assert u[0, :, :, 0].ravel().tolist() == [0, 0, 127, 255, 254, 255]
