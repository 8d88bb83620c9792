"""Diffusion math: closed-form identities and parity with OpenAI's reference (same weights, same noise).

The parity network is a tiny conv net whose output depends on x_t, t and y; both sides call the
same module, so any difference is in the diffusion math.
"""

import math

import numpy as np
import pytest
import torch

from adm.diffusion import (LossAwareSampler, UniformSampler, hybrid_loss, make_timestep_sampler,
                           p_mean_variance, predict_eps_from_xstart, predict_xstart_from_eps,
                           q_posterior, q_sample, split_output, vb_terms_bpd)
from adm.losses import discretized_gaussian_log_likelihood, normal_kl
from adm.schedule import cosine_schedule, linear_schedule, respace

gd = pytest.importorskip("guided_diffusion.gaussian_diffusion")
respace_ref = pytest.importorskip("guided_diffusion.respace")

torch.set_num_threads(1)
ATOL = 1e-4


class TinyNet(torch.nn.Module):
    """(x_t, t, y) -> (N, out_ch, H, W); random weights, depends on all three inputs."""

    def __init__(self, ch=3, out_ch=6, num_classes=10, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv2d(ch, out_ch, 3, padding=1)
        self.t_emb = torch.nn.Parameter(torch.randn(out_ch, generator=g) * 0.3)
        self.y_emb = torch.nn.Parameter(torch.randn(num_classes, out_ch, generator=g) * 0.3)
        with torch.no_grad():
            for p in self.conv.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)

    def forward(self, x, t, y=None):
        h = self.conv(x) + (torch.sin(t.float() / 37.0)[:, None] * self.t_emb)[:, :, None, None]
        if y is not None:
            h = h + self.y_emb[y][:, :, None, None]
        return torch.tanh(h)  # keeps v in [-1, 1] like a trained network's variance channels


def ref_diffusion(T, spec, schedule="linear", learn_sigma=True, rescaled=True):
    betas = gd.get_named_beta_schedule(schedule, T)
    return respace_ref.SpacedDiffusion(
        use_timesteps=respace_ref.space_timesteps(T, spec or str(T)), betas=betas,
        model_mean_type=gd.ModelMeanType.EPSILON,
        model_var_type=gd.ModelVarType.LEARNED_RANGE if learn_sigma else gd.ModelVarType.FIXED_LARGE,
        loss_type=gd.LossType.RESCALED_MSE if rescaled else gd.LossType.MSE)


def ours(T, spec, schedule="linear"):
    base = linear_schedule(T) if schedule == "linear" else cosine_schedule(T)
    return respace(base, spec)


def batch(n=4, seed=1, hw=8):
    g = torch.Generator().manual_seed(seed)
    x0 = (torch.randint(0, 256, (n, 3, hw, hw), generator=g).float() / 127.5 - 1)
    noise = torch.randn(n, 3, hw, hw, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return x0, noise, y


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


def test_posterior_closed_form():
    s = linear_schedule(50)
    x0, noise, _ = batch(3)
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


def test_eps_xstart_round_trip():
    s = cosine_schedule(100)
    x0, noise, _ = batch(4)
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


def test_kl_and_discretized_likelihood():
    m = torch.randn(5)
    assert torch.allclose(normal_kl(m, torch.zeros(5) + 0.3, m, torch.zeros(5) + 0.3), torch.zeros(5))
    assert normal_kl(torch.tensor(1.0), 0.0, torch.tensor(0.0), 0.0).item() == pytest.approx(0.5)
    bins = torch.arange(256).float() / 127.5 - 1
    for mean, log_scale in [(0.0, -1.0), (0.3, -3.0), (-0.99, -4.0), (0.5, 0.5)]:
        lp = discretized_gaussian_log_likelihood(
            bins, means=torch.full_like(bins, mean), log_scales=torch.full_like(bins, log_scale))
        assert lp.exp().sum().item() == pytest.approx(1.0, abs=2e-3)


def test_hybrid_loss_detaches_mean_in_vb():
    s = linear_schedule(100)
    net = TinyNet()
    x0, noise, y = batch(2)
    losses = hybrid_loss(lambda x, t, yy: net(x, t, yy), s, x0, torch.tensor([0, 30]), y, noise)
    # vb's gradient reaches the variance channels only: d vb / d eps-output == 0
    out = net(q_sample(s, x0, torch.tensor([0, 30]), noise), torch.tensor([0, 30]), y)
    out = out.detach().requires_grad_(True)
    eps, v = split_output(out, True)
    vb = vb_terms_bpd(s, torch.cat([eps.detach(), v], 1), x0, q_sample(s, x0, torch.tensor([0, 30]), noise),
                      torch.tensor([0, 30]))
    (g,) = torch.autograd.grad(vb.sum(), out)
    assert g[:, :3].abs().max() == 0 and g[:, 3:].abs().max() > 0
    assert torch.allclose(losses["loss"], losses["mse"] + losses["vb"])


# ---------------------------------------------------------------- parity with the reference

@pytest.mark.parametrize("T,spec,sched", [(100, "", "linear"), (100, "10", "cosine"), (1000, "25", "linear")])
@pytest.mark.parametrize("learn_sigma", [True, False])
def test_p_mean_variance_parity(T, spec, sched, learn_sigma):
    s, ref = ours(T, spec, sched), ref_diffusion(T, spec, sched, learn_sigma)
    net = TinyNet(out_ch=6 if learn_sigma else 3)
    x0, noise, y = batch(4)
    k = torch.tensor([0, 1, len(s) // 2, len(s) - 1])
    xt = q_sample(s, x0, k, noise)
    assert torch.allclose(xt, ref.q_sample(x0, k, noise), atol=1e-6)
    t_orig = torch.from_numpy(s.timesteps)[k]
    for clip in (True, False):
        mine = p_mean_variance(s, net(xt, t_orig, y), xt, k, clip, learn_sigma)
        theirs = ref.p_mean_variance(net, xt, k, clip_denoised=clip, model_kwargs={"y": y})
        for key in ("mean", "variance", "log_variance", "pred_xstart"):
            assert (mine[key] - theirs[key]).abs().max().item() < ATOL, key


@pytest.mark.parametrize("T,sched,rescaled",
                         [(100, "cosine", True), (1000, "linear", True), (1000, "linear", False)])
def test_training_loss_parity(T, sched, rescaled):
    s, ref = ours(T, "", sched), ref_diffusion(T, "", sched, rescaled=rescaled)
    net = TinyNet()
    x0, noise, y = batch(6)
    k = torch.tensor([0, 1, 2, T // 2, T - 2, T - 1])
    mine = hybrid_loss(lambda x, t, yy: net(x, t, yy), s, x0, k, y, noise)
    theirs = ref.training_losses(net, x0, k, model_kwargs={"y": y}, noise=noise)
    for key in ("loss", "mse", "vb"):
        assert (mine[key] - theirs[key]).abs().max().item() < ATOL, key


def test_fixed_variance_loss_is_mse():
    s = linear_schedule(100)
    net = TinyNet(out_ch=3)
    x0, noise, y = batch(2)
    out = hybrid_loss(lambda x, t, yy: net(x, t, yy), s, x0, torch.tensor([3, 70]), y, noise,
                      learn_sigma=False)
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
