"""DPM-Solver++(2M)/(3M) and its SDE variant against an independent implementation: diffusers'
DPMSolverMultistepScheduler (algorithm_type="dpmsolver++" / "sde-dpmsolver++", test-only dependency
pinned in pyproject's `test` extra), on the same
denoiser, the same nodes and the same x_T; unguided, classifier-guided (the guided eps handed to
diffusers as its model output), classifier-free guided (our model_fn transform), with static
clipping and with dynamic thresholding.

Setup of the reference: our betas as ``trained_betas``; its alpha_bar replaced by our float64 one
(diffusers builds it in float32, a 1e-5-relative difference at t = 999 that would dominate the
comparison); ``set_timesteps(timesteps=...)`` with our nodes; ``final_sigmas_type="zero"`` and
``lower_order_final`` (its last step is first order to sigma = 0, as ours). Its 3rd-order solver
also drops to 2nd order at the second-to-last step below 15 steps: the 3M cases use 20. The SDE
solver's per-step noise is drawn from our per-sample generators and handed to diffusers as
``variance_noise``, the same tensors in the same order (its default midpoint form, as ours).
"""

import pytest
import torch

from adm.diffusion.schedule import linear_schedule, step_schedule
from adm.sampling.guidance import classifier_free_guidance
from adm.sampling.rng import randn_per_sample, sample_generators
from adm.sampling.solvers import dpmpp_2m_sample, dpmpp_2m_sde_sample, dpmpp_3m_sample

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers on numpy 2

BASE = linear_schedule(1000)
AB = torch.from_numpy(BASE.alphas_cumprod)
NULL = 10
W = torch.randn(3, 3, generator=torch.Generator().manual_seed(1)) * 0.5


def net(x, t, y):
    """A denoiser with the right scale (the exact eps of N(0, 0.25) data) plus a label- and
    time-dependent nonlinearity; 6 channels as a learned-variance net (the last 3 unused)."""
    a, sg = AB[t].sqrt().view(-1, 1, 1, 1).float(), (1 - AB[t]).sqrt().view(-1, 1, 1, 1).float()
    eps = sg * x / (a * a * 0.25 + sg * sg)
    eps = eps + 0.2 * torch.tanh(torch.einsum("ij,njhw->nihw", W, x)) * (1 + 0.05 * y.view(-1, 1, 1, 1))
    return torch.cat([eps, torch.zeros_like(x)], dim=1)


def cond_fn(x, t, y):
    return -0.5 * (x - 0.1 * y.view(-1, 1, 1, 1))  # s * grad log N(x; 0.1 y, I), s = 0.5


def reference(model_fn, cond, schedule, x, y, order, clip, algorithm="dpmsolver++", generators=None):
    kw = dict(thresholding=True, dynamic_thresholding_ratio=clip, sample_max_value=1e9) if clip else {}
    if clip == "static":  # s = clamp(quantile, 1, sample_max_value = 1) = 1: clip to [-1, 1]
        kw = dict(thresholding=True, sample_max_value=1.0)
    sched = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, trained_betas=BASE.betas, solver_order=order, algorithm_type=algorithm,
        lower_order_final=True, final_sigmas_type="zero", **kw,
    )  # fmt: skip
    sched.alphas_cumprod = AB.clone()
    sched.set_timesteps(timesteps=[int(t) for t in schedule.timesteps[::-1]])
    for t in sched.timesteps:
        tt = torch.full((len(x),), int(t))
        eps = model_fn(x, tt, y)[:, :3]
        if cond is not None:  # eps~ = eps - sqrt(1 - alpha_bar_t) s grad log p(y | x_t)
            eps = eps - (1 - AB[int(t)]).sqrt().float() * cond(x, tt, y)
        kw = {}
        if generators is not None:  # the SDE's fresh noise; the last step (to sigma = 0) scales it by 0
            last = int(t) == int(sched.timesteps[-1])
            kw["variance_noise"] = torch.zeros_like(x) if last else randn_per_sample(generators, x.shape[1:])
        x = sched.step(eps, t, x, **kw).prev_sample
    return x


@pytest.mark.parametrize("kind", ["uniform", "logsnr", "karras"])
@pytest.mark.parametrize("guidance", ["none", "classifier", "cfg"])
@pytest.mark.parametrize("order,clip", [(2, None), (2, "static"), (2, 0.9), (3, None), (3, 0.9)])
def test_matches_diffusers(kind, guidance, order, clip):
    schedule = step_schedule(BASE, kind, 20)
    x_T = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 4, 9])
    model_fn = classifier_free_guidance(net, 1.5, NULL) if guidance == "cfg" else net
    cond = cond_fn if guidance == "classifier" else None
    sampler = dpmpp_2m_sample if order == 2 else dpmpp_3m_sample
    ours = sampler(
        model_fn, x_T, schedule, y, cond,
        clip_denoised=clip == "static",
        dynamic_threshold_ratio=clip if isinstance(clip, float) else None,
    )  # fmt: skip
    ref = reference(model_fn, cond, schedule, x_T, y, order, clip)
    assert 0.1 < ours.abs().max() < 5
    # measured: max |ours - diffusers| = 8.0e-6 over these 45 cases, outputs up to 3.3 (float32)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["uniform", "logsnr", "karras"])
@pytest.mark.parametrize("guidance", ["none", "classifier", "cfg"])
@pytest.mark.parametrize("clip", [None, "static", 0.9])
def test_sde_matches_diffusers(kind, guidance, clip):
    schedule = step_schedule(BASE, kind, 20)
    y = torch.tensor([0, 4, 9])
    model_fn = classifier_free_guidance(net, 1.5, NULL) if guidance == "cfg" else net
    cond = cond_fn if guidance == "classifier" else None
    gens = sample_generators(7, range(3))  # x_T, then one draw per step, from each sample's stream
    x_T = randn_per_sample(gens, (3, 8, 8))
    ours = dpmpp_2m_sde_sample(
        model_fn, x_T, schedule, y, cond, gens,
        clip_denoised=clip == "static",
        dynamic_threshold_ratio=clip if isinstance(clip, float) else None,
    )  # fmt: skip
    gens = sample_generators(7, range(3))
    x_T = randn_per_sample(gens, (3, 8, 8))
    ref = reference(model_fn, cond, schedule, x_T, y, 2, clip, "sde-dpmsolver++", gens)
    assert 0.1 < ours.abs().max() < 5
    # the noise moves x_0 by O(1): a sampler that ignored it (or drew other noise) is far off
    ode = dpmpp_2m_sample(model_fn, x_T, schedule, y, cond, clip_denoised=clip == "static")
    assert (ours - ode).abs().max() > 0.1
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
