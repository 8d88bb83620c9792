"""DPM-Solver++ (adm.sampling.solvers) and the solver step schedules: closed-form checks on a Gaussian
toy, the order-1 limit equal to DDIM, the shared contract (guidance, batch independence), and the
SDE variant's output distribution and per-sample noise.
Parity with diffusers' DPMSolverMultistepScheduler is tests/parity/test_parity_solvers.py."""

import math

import numpy as np
import pytest
import torch

from adm.diffusion.schedule import cosine_schedule, linear_schedule, respace, step_schedule
from adm.sampling.rng import randn_per_sample, sample_generators
from adm.sampling.samplers import ddim_sample
from adm.sampling.solvers import _multistep, dpmpp_2m_sample, dpmpp_2m_sde_sample, dpmpp_3m_sample, dynamic_threshold

MU, S = 0.3, 0.5  # data ~ N(MU, S^2) per pixel
BASE = linear_schedule(1000)


def gaussian_eps(schedule):
    """The exact eps of N(MU, S^2) data: x_t ~ N(alpha MU, alpha^2 S^2 + sigma^2), so
    eps*(x_t) = sigma (x_t - alpha MU) / (alpha^2 S^2 + sigma^2) (the denoiser is linear)."""
    ab = torch.from_numpy(schedule.alphas_cumprod)

    def model_fn(x, t, y):
        a, sg = ab[t].sqrt().view(-1, 1, 1, 1), (1 - ab[t]).sqrt().view(-1, 1, 1, 1)
        return (sg * (x - a * MU) / (a * a * S * S + sg * sg)).to(x.dtype)

    return model_fn


def exact_x0(x_T):
    """The probability-flow ODE of Gaussian data moves each point along its standardized value
    z = (x_t - alpha_t MU) / sqrt(alpha_t^2 S^2 + sigma_t^2) (the only monotone map between the
    marginals), solved exactly from t = T-1 to t = 0, then the solvers' own last step (x_0 = the
    data prediction at t = 0, which every solver takes as is)."""
    ab_T, ab_0 = BASE.alphas_cumprod[-1], BASE.alphas_cumprod[0]
    z = (x_T - math.sqrt(ab_T) * MU) / math.sqrt(ab_T * S * S + 1 - ab_T)
    x_t0 = math.sqrt(ab_0) * MU + math.sqrt(ab_0 * S * S + 1 - ab_0) * z
    eps = gaussian_eps(BASE)(x_t0, torch.zeros(len(x_T), dtype=torch.long), None)
    return (x_t0 - math.sqrt(1 - ab_0) * eps) / math.sqrt(ab_0)


def _noise(n=2, dtype=torch.float64):
    return torch.randn(n, 3, 4, 4, dtype=dtype, generator=torch.Generator().manual_seed(0))


def _err(sampler, kind, steps):
    x_T = _noise()
    x0 = sampler(gaussian_eps(BASE), x_T, step_schedule(BASE, kind, steps), clip_denoised=False)
    return (x0 - exact_x0(x_T)).abs().max().item()


@pytest.mark.parametrize("kind", ["logsnr", "karras"])
def test_2m_error_shrinks_quadratically_on_the_gaussian_toy(kind):
    # measured (float64): logsnr 9.2e-3 at 32 steps, ratio 3.6 from 16; karras 2.9e-2, ratio 4.0
    e16, e32 = _err(dpmpp_2m_sample, kind, 16), _err(dpmpp_2m_sample, kind, 32)
    assert e32 < 0.05 and 3.0 < e16 / e32 < 6.0


@pytest.mark.parametrize("kind", ["logsnr", "karras"])
def test_3m_is_third_order_and_beats_2m(kind):
    # measured: logsnr 4.1e-3 at 32 steps (ratio 6.3 from 16), karras 1.6e-3 (ratio 31)
    e16, e32 = _err(dpmpp_3m_sample, kind, 16), _err(dpmpp_3m_sample, kind, 32)
    assert e16 / e32 > 5.0 and e32 < _err(dpmpp_2m_sample, kind, 32)


def test_2m_converges_to_the_exact_ode_solution_with_many_steps():
    # time-uniform steps of the linear schedule: large logSNR steps at the end, so the
    # asymptotic regime starts late (2.2e-2 at 100 steps, 8.1e-4 at 500)
    assert _err(dpmpp_2m_sample, "uniform", 500) < 2e-3 < _err(dpmpp_2m_sample, "uniform", 100)


def test_first_order_is_ddim():
    # DPM-Solver++ Eq. 9: the first-order update is DDIM (eta 0) in data-prediction form
    x_T, sch = _noise(dtype=torch.float32), step_schedule(BASE, "uniform", 10)
    model = gaussian_eps(BASE)
    ours = _multistep(model, x_T, sch, None, None, None, 1, True, False, False, None)
    ddim = ddim_sample(model, x_T, sch, clip_denoised=True, learn_sigma=False)
    torch.testing.assert_close(ours, ddim, rtol=0, atol=1e-5)


def _toy_net(x, t, y):
    """A nonlinear eps with a learned-variance half (that the solvers must ignore)."""
    eps = gaussian_eps(BASE)(x, t, y) + 0.1 * torch.tanh(x.flip(1)) + 0.01 * y.view(-1, 1, 1, 1)
    return torch.cat([eps, torch.full_like(x, float("nan"))], dim=1)


def _cond_fn(x, t, y):
    return -(x - 0.1 * y.view(-1, 1, 1, 1).to(x.dtype))  # s * grad log N(x; 0.1 y, I)


@pytest.mark.parametrize("sampler", [dpmpp_2m_sample, dpmpp_3m_sample])
def test_batch_independent_and_variance_unused(sampler):
    x_T, y = _noise(5, torch.float32), torch.tensor([0, 1, 2, 3, 4])
    sch = step_schedule(BASE, "karras", 8)
    whole = sampler(_toy_net, x_T, sch, labels=y, cond_fn=_cond_fn)
    assert torch.isfinite(whole).all()  # the NaN variance channels were never read
    parts = torch.cat(
        [sampler(_toy_net, x_T[i : i + 2], sch, labels=y[i : i + 2], cond_fn=_cond_fn) for i in (0, 2, 4)]
    )
    torch.testing.assert_close(whole, parts, rtol=0, atol=1e-6)


def test_guidance_changes_samples_and_needs_labels():
    x_T, y, sch = _noise(3, torch.float32), torch.tensor([0, 5, 9]), step_schedule(BASE, "logsnr", 8)
    assert not torch.equal(dpmpp_2m_sample(_toy_net, x_T, sch, y), dpmpp_2m_sample(_toy_net, x_T, sch, y, _cond_fn))
    with pytest.raises(ValueError, match="needs labels"):
        dpmpp_2m_sample(_toy_net, x_T, sch, cond_fn=_cond_fn)


def test_dynamic_threshold():
    x = torch.tensor([[0.5, -3.0, 2.0, 0.1]]).view(1, 1, 2, 2)
    s = torch.quantile(x.abs().flatten(), 0.75).item()  # 2.25 > 1: clamp to [-s, s], divide by s
    torch.testing.assert_close(dynamic_threshold(x, 0.75), x.clamp(-s, s) / s)
    small = torch.tensor([[0.5, -0.2]]).view(1, 1, 1, 2)
    assert torch.equal(dynamic_threshold(small, 0.995), small)  # s = max(1, q): inside [-1, 1] untouched
    with pytest.raises(ValueError, match="ratio"):
        dpmpp_2m_sample(
            _toy_net, _noise(1, torch.float32), step_schedule(BASE, "uniform", 3), dynamic_threshold_ratio=2
        )


def test_step_schedules():
    for kind in ("uniform", "logsnr", "karras"):
        sch = step_schedule(BASE, kind, 10)
        assert len(sch) == 10 and sch.timesteps[0] == 0 and sch.timesteps[-1] == 999
        np.testing.assert_allclose(sch.alphas_cumprod, BASE.alphas_cumprod[sch.timesteps])
    log_sigma = 0.5 * np.log(1 / step_schedule(BASE, "logsnr", 10).alphas_cumprod - 1)
    # nearest timestep in log sigma: the steps in log sigma are equal up to the quantization
    assert np.ptp(np.diff(log_sigma)) < 0.15 * np.mean(np.diff(log_sigma))
    assert step_schedule(BASE, "uniform", 25).timesteps.tolist() == respace(BASE, "25").timesteps.tolist()
    with pytest.raises(ValueError, match="distinct timesteps"):
        step_schedule(BASE, "logsnr", 100)
    with pytest.raises(ValueError, match="unknown step schedule"):
        step_schedule(BASE, "cosine", 10)


def test_sde_samples_the_gaussian_data_distribution():
    """The reverse SDE of N(MU, S^2) data, solved with the exact denoiser at every one of the 1000
    timesteps, must give samples distributed as the solver's last step makes them: x_0 = D(x_{t_0}),
    the posterior mean at t_0 (alpha_bar_0 = 1 - 1e-4), which is N(MU, S^4 a^2 / (a^2 S^2 + sigma^2))
    when x_{t_0} ~ N(a MU, a^2 S^2 + sigma^2). Every pixel is an independent scalar draw (the
    denoiser is per pixel, the noise i.i.d.), so with n = 96,000 draws the sample mean has standard
    error sqrt(var / n) and the sample variance var * sqrt(2 / (n - 1)); both must lie within 4 of
    them (two-sided 4 sigma: a 6e-5 chance each for a correct sampler). Measured with 200,000 draws
    at 1000 steps, the errors were 5.5e-4 (mean) and 3.5e-5 (variance), inside that run's own
    standard errors (1.1e-3, 7.9e-4): the discretisation bias is below what n resolves. With few
    steps the SDE is biased (uniform 100 steps: variance +2.4e-2), so this checks the solver's
    limit, not its speed."""
    ab0 = BASE.alphas_cumprod[0]
    var = ab0 * S**4 / (ab0 * S * S + 1 - ab0)
    n = 2000 * 3 * 4 * 4
    with torch.random.fork_rng():
        torch.manual_seed(0)  # x_T and the per-step noise from the global RNG (no generators)
        x0 = dpmpp_2m_sde_sample(
            gaussian_eps(BASE), _noise(2000), step_schedule(BASE, "uniform", 1000), clip_denoised=False
        )
    m, v = x0.mean().item(), x0.var().item()
    assert abs(m - MU) < 4 * math.sqrt(var / n), (m, MU)
    assert abs(v - var) < 4 * var * math.sqrt(2 / (n - 1)), (v, var)


def test_sde_sample_is_independent_of_its_batch(demo_nets):
    """Sample 2 alone (batch 1) and inside a batch of 4 is the same: its x_T and every step's noise
    come from its own generator. A randomised demo UNet (non-zero eps and v channels), so the
    network's output moves the trajectory; float32 convolutions round differently for different
    batch sizes (~1e-7 per evaluation), hence the tolerance."""
    unet, _ = demo_nets
    sch = step_schedule(cosine_schedule(1000), "uniform", 6)
    y = torch.tensor([3, 1, 4, 1])

    def model_fn(x, t, y):
        return unet(x, t, y)

    def run(indices):
        gens = sample_generators(11, indices)
        return dpmpp_2m_sde_sample(model_fn, randn_per_sample(gens, (3, 8, 8)), sch, y[indices], None, gens)

    whole, alone = run([0, 1, 2, 3]), run([2])
    with torch.no_grad():
        assert unet(whole, torch.full((4,), 500), y)[:, :3].abs().mean() > 0.05  # the network is not zero
    torch.testing.assert_close(alone[0], whole[2], rtol=0, atol=1e-5)
    assert (whole[2] - whole[3]).abs().max() > 0.1  # different seeds, different samples
