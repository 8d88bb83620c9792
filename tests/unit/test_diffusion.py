"""Diffusion math: closed-form identities, the hybrid loss's gradients, timestep samplers.

Parity with OpenAI's reference lives in test_parity_diffusion.py; nothing here imports it.
"""

import math

import numpy as np
import pytest
import torch

from adm.diffusion.gaussian import (
    LossAwareSampler,
    UniformSampler,
    hybrid_loss,
    make_timestep_sampler,
    p_mean_variance,
    predict_eps_from_xstart,
    predict_xstart_from_eps,
    q_posterior,
    q_sample,
    split_output,
    vb_terms_bpd,
)
from adm.diffusion.losses import approx_standard_normal_cdf, discretized_gaussian_log_likelihood, normal_kl
from adm.diffusion.schedule import cosine_schedule, linear_schedule

torch.set_num_threads(1)


# ---------------------------------------------------------------- closed forms


def test_q_sample_moments():
    s = cosine_schedule(100)
    k = torch.full((20000,), 40)
    x0 = torch.full((20000, 1, 1, 1), 0.7)
    xt = q_sample(s, x0, k, torch.randn(20000, 1, 1, 1, generator=torch.Generator().manual_seed(0)))
    ab = s.alphas_cumprod[40]
    # x_t | x_0 ~ N(sqrt(alpha_bar) x_0, (1 - alpha_bar) I)
    assert xt.mean().item() == pytest.approx(math.sqrt(ab) * 0.7, abs=0.02)
    assert xt.var().item() == pytest.approx(1 - ab, rel=0.03)


def test_posterior_closed_form(make_batch):
    s = linear_schedule(50)
    x0, noise, _ = make_batch(3)
    k = torch.tensor([1, 20, 49])
    xt = q_sample(s, x0, k, noise)
    mean, var, logvar = q_posterior(s, x0, xt, k)
    for i, kk in enumerate(k.tolist()):
        a, b, abp = s.alphas[kk], s.betas[kk], s.alphas_cumprod_prev[kk]
        # product of Gaussians q(x_t | x_{t-1}) q(x_{t-1} | x_0): precision = alpha/beta + 1/(1 - abp)
        v = 1.0 / (a / b + 1.0 / (1.0 - abp))
        m = v * (math.sqrt(a) / b * xt[i].double() + math.sqrt(abp) / (1 - abp) * x0[i].double())
        assert var[i, 0, 0, 0].item() == pytest.approx(v, rel=1e-5)
        assert torch.allclose(mean[i].double(), m, atol=1e-5)
    assert torch.equal(logvar[0], torch.full_like(logvar[0], float(np.log(s.posterior_variance[1]))))


def test_eps_xstart_round_trip(make_batch):
    s = cosine_schedule(100)
    x0, noise, _ = make_batch(4)
    k = torch.tensor([0, 10, 50, 99])
    xt = q_sample(s, x0, k, noise)
    assert torch.allclose(predict_xstart_from_eps(s, xt, k, noise), x0, atol=1e-3)
    k2 = torch.tensor([0, 10, 50, 90])
    xt2 = q_sample(s, x0, k2, noise)
    assert torch.allclose(predict_eps_from_xstart(s, xt2, k2, x0), noise, atol=1e-3)


def test_learned_range_endpoints():
    s = linear_schedule(100)
    x = torch.zeros(2, 3, 4, 4)
    k = torch.tensor([0, 50])
    for v, target in [(1.0, np.log(s.betas)), (-1.0, s.posterior_log_variance_clipped)]:
        out = torch.cat([torch.zeros_like(x), torch.full_like(x, v)], dim=1)
        p = p_mean_variance(s, out, x, k)
        assert torch.allclose(p["log_variance"][:, 0, 0, 0], torch.tensor(target[[0, 50]]).float())
    assert split_output(out, learn_sigma=False)[1] is None


def test_clipping_and_fixed_variance():
    s = linear_schedule(100)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(3)) * 3
    k = torch.tensor([99, 0])
    out = torch.cat([torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(4)), torch.zeros(2, 3, 4, 4)], 1)
    raw, clipped = (p_mean_variance(s, out, x, k, clip_denoised=c) for c in (False, True))
    assert raw["pred_xstart"].abs().max() > 1  # so the clip below is not vacuous
    assert torch.equal(clipped["pred_xstart"], raw["pred_xstart"].clamp(-1, 1))
    # "fixedlarge": Sigma = beta_t, with beta_tilde_1 at t = 0 (the v channels are absent)
    # (at t = 10, not near T, where beta_t and beta_tilde_t differ by far more than float rounding)
    fixed = p_mean_variance(s, out[:, :3], x, torch.tensor([10, 0]), learn_sigma=False)
    assert torch.allclose(fixed["variance"][:, 0, 0, 0], torch.tensor([s.betas[10], s.posterior_variance[1]]).float())


def test_kl_and_discretized_likelihood():
    m = torch.randn(5)
    assert torch.allclose(normal_kl(m, torch.zeros(5) + 0.3, m, torch.zeros(5) + 0.3), torch.zeros(5))
    assert normal_kl(torch.tensor(1.0), 0.0, torch.tensor(0.0), 0.0).item() == pytest.approx(0.5)
    # KL(N(m1, s1^2) || N(m2, s2^2)) = log(s2/s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2
    m1, lv1, m2, lv2 = 1.0, 0.5, -1.0, -0.3
    expected = 0.5 * (lv2 - lv1) + (math.exp(lv1) + (m1 - m2) ** 2) / (2 * math.exp(lv2)) - 0.5
    assert normal_kl(torch.tensor(m1), lv1, torch.tensor(m2), lv2).item() == pytest.approx(expected, rel=1e-6)
    # the decoder's tanh approximation of Phi stays within 2e-4 of the exact normal CDF
    z = torch.linspace(-6, 6, 2001, dtype=torch.float64)
    assert (approx_standard_normal_cdf(z) - 0.5 * (1 + torch.erf(z / math.sqrt(2)))).abs().max() < 2.5e-4
    bins = torch.arange(256).float() / 127.5 - 1
    for mean, log_scale in [(0.0, -1.0), (0.3, -3.0), (-0.99, -4.0), (0.5, 0.5)]:
        lp = discretized_gaussian_log_likelihood(
            bins, means=torch.full_like(bins, mean), log_scales=torch.full_like(bins, log_scale)
        )
        assert lp.exp().sum().item() == pytest.approx(1.0, abs=2e-3)


def _hybrid_loss_of_leaf(make_batch, k):
    """hybrid_loss on a network whose raw output is a leaf tensor, so d loss / d output is exact."""
    s = linear_schedule(100)
    x0, noise, y = make_batch(len(k))
    g = torch.Generator().manual_seed(5)
    eps = torch.randn(len(k), 3, 8, 8, generator=g)
    v = torch.rand(len(k), 3, 8, 8, generator=g) * 1.6 - 0.8  # v inside (-1, 1), as trained nets give
    out = torch.cat([eps, v], 1).requires_grad_(True)
    return out, noise, hybrid_loss(lambda x, t, yy: out, s, x0, k, y, noise)


@pytest.mark.parametrize("k", [[0, 30, 99], [1, 2, 50]])  # k = 0 is the decoder NLL term, k > 0 the KL
def test_hybrid_loss_detaches_mean_in_vb(make_batch, k):
    """IDDPM Sec. 3.1: L_vlb trains Sigma only; the mean (eps channels) is learned from L_simple alone."""
    out, noise, losses = _hybrid_loss_of_leaf(make_batch, torch.tensor(k))
    (g_vb,) = torch.autograd.grad(losses["vb"].sum(), out, retain_graph=True)
    assert torch.count_nonzero(g_vb[:, :3]) == 0  # eps is detached inside the vb term
    assert (g_vb[:, 3:].abs().flatten(1).amax(1) > 0).all()  # ... and v learns from it in every sample
    (g,) = torch.autograd.grad(losses["loss"].sum(), out)
    # d/d eps mean_pixels (noise - eps)^2 = -2 (noise - eps) / D, D = 3 * 8 * 8: L_simple alone
    assert torch.allclose(g[:, :3], -2 * (noise - out[:, :3].detach()) / 192, rtol=1e-5, atol=1e-8)
    assert torch.equal(g[:, 3:], g_vb[:, 3:])  # the variance channels get nothing from L_simple
    assert torch.allclose(losses["loss"], losses["mse"] + losses["vb"])


def test_hybrid_loss_vb_weight_is_lambda_times_K(make_batch):
    """vb = lambda * K * L_t with lambda = 1e-3 and K = len(schedule) (IDDPM Eq. 16, L_vlb estimate)."""
    k = torch.tensor([0, 40, 99])
    out, noise, losses = _hybrid_loss_of_leaf(make_batch, k)
    s = linear_schedule(100)
    x0, _, _ = make_batch(3)
    x_t = q_sample(s, x0, k, noise)
    # L_t by hand at t > 0: KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) in bits per dimension
    p = p_mean_variance(s, out.detach(), x_t, k, clip_denoised=False)
    mean, _, log_var = q_posterior(s, x0, x_t, k)
    kl = normal_kl(mean, log_var, p["mean"], p["log_variance"]).flatten(1).mean(1) / math.log(2.0)
    assert torch.allclose(losses["vb"][1:], 1e-3 * 100 * kl[1:], rtol=1e-5)
    # L_0 by hand: -log p(x_0 | x_1) of the discretized decoder, log scale = log Sigma / 2, in bits
    nll = -discretized_gaussian_log_likelihood(x0[:1], means=p["mean"][:1], log_scales=0.5 * p["log_variance"][:1])
    assert torch.allclose(losses["vb"][0], 0.1 * nll.mean() / math.log(2.0), rtol=1e-5)
    assert torch.allclose(losses["vb"], 0.1 * vb_terms_bpd(s, out.detach(), x0, x_t, k), rtol=1e-6)
    assert torch.allclose(losses["mse"], ((noise - out[:, :3]) ** 2).flatten(1).mean(1))


def test_fixed_variance_loss_is_mse(tiny_net, make_batch):
    s = linear_schedule(100)
    net = tiny_net(out_ch=3)
    x0, noise, y = make_batch(2)
    out = hybrid_loss(lambda x, t, yy: net(x, t, yy), s, x0, torch.tensor([3, 70]), y, noise, learn_sigma=False)
    assert torch.equal(out["loss"], out["mse"]) and torch.equal(out["vb"], torch.zeros(2))


# ---------------------------------------------------------------- timestep samplers


def test_uniform_sampler_reproducible():
    smp = make_timestep_sampler("uniform", 50)
    k1, w1 = smp.sample(1000, torch.Generator().manual_seed(3))
    k2, _ = smp.sample(1000, torch.Generator().manual_seed(3))
    assert torch.equal(k1, k2) and k1.min() >= 0 and k1.max() < 50 and torch.equal(w1, torch.ones(1000))


def test_loss_aware_sampler():
    smp = LossAwareSampler(4, history_per_term=2, uniform_prob=0.0)
    assert isinstance(make_timestep_sampler("loss-second-moment", 4), LossAwareSampler)
    smp.update(torch.tensor([0, 1, 2, 3, 0, 1, 2]), torch.tensor([1.0, 1, 1, 1, 1, 1, 1]))
    assert not smp.warmed_up()
    smp.update([3, 3, 3], [3.0, 3.0, 3.0])  # FIFO: history of k=3 becomes [3, 3]
    assert smp.warmed_up()
    assert np.allclose(smp.weights(), [1 / 6, 1 / 6, 1 / 6, 1 / 2])
    k, w = smp.sample(4000, torch.Generator().manual_seed(0))
    assert (k == 3).float().mean().item() == pytest.approx(0.5, abs=0.03)
    # importance weights 1 / (K p_k) keep the objective unbiased
    assert w[k == 3][0].item() == pytest.approx(0.5) and w[k == 0][0].item() == pytest.approx(1.5)
    with pytest.raises(ValueError):
        make_timestep_sampler("nope", 4)
    assert isinstance(UniformSampler(3).state_dict(), dict)


def test_loss_aware_weights_are_root_mean_square_mixed_with_uniform():
    """p_k = (1 - u) sqrt(E[L_k^2]) / sum_j sqrt(E[L_j^2]) + u / K (IDDPM Sec. 3.3)."""
    smp = LossAwareSampler(3, history_per_term=2, uniform_prob=0.3)
    smp.update([0, 0, 1, 1, 2, 2], [1.0, 3.0, 2.0, 2.0, 0.0, 4.0])
    rms = np.sqrt([5.0, 4.0, 8.0])  # sqrt(mean([1, 9])), sqrt(mean([4, 4])), sqrt(mean([0, 16]))
    assert np.allclose(smp.weights(), 0.7 * rms / rms.sum() + 0.3 / 3, rtol=1e-12)
    assert smp.weights().sum() == pytest.approx(1.0)
    restored = LossAwareSampler(3, history_per_term=2, uniform_prob=0.3)
    restored.load_state_dict(smp.state_dict())
    assert np.array_equal(restored.weights(), smp.weights())
