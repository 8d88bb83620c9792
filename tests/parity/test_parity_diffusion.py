"""Diffusion math against OpenAI's reference (guided-diffusion-sdk): same network, same noise.

The network is TinyNet (conftest), whose output depends on x_t, t and y; both sides call the same
module, so any difference is in the diffusion math (q_sample, posterior, p_mean_variance, losses).
"""

import pytest
import torch

from adm.diffusion.gaussian import hybrid_loss, p_mean_variance, q_sample
from adm.diffusion.schedule import cosine_schedule, linear_schedule, respace

gd = pytest.importorskip("guided_diffusion.gaussian_diffusion")
respace_ref = pytest.importorskip("guided_diffusion.respace")

torch.set_num_threads(1)
ATOL = 1e-4


def ref_diffusion(T, spec, schedule="linear", learn_sigma=True, rescaled=True):
    betas = gd.get_named_beta_schedule(schedule, T)
    return respace_ref.SpacedDiffusion(
        use_timesteps=respace_ref.space_timesteps(T, spec or str(T)),
        betas=betas,
        model_mean_type=gd.ModelMeanType.EPSILON,
        model_var_type=gd.ModelVarType.LEARNED_RANGE if learn_sigma else gd.ModelVarType.FIXED_LARGE,
        loss_type=gd.LossType.RESCALED_MSE if rescaled else gd.LossType.MSE,
    )


def ours(T, spec, schedule="linear"):
    base = linear_schedule(T) if schedule == "linear" else cosine_schedule(T)
    return respace(base, spec)


@pytest.mark.parametrize("T,spec,sched", [(100, "", "linear"), (100, "10", "cosine"), (1000, "25", "linear")])
@pytest.mark.parametrize("learn_sigma", [True, False])
def test_p_mean_variance_parity(tiny_net, make_batch, T, spec, sched, learn_sigma):
    s, ref = ours(T, spec, sched), ref_diffusion(T, spec, sched, learn_sigma)
    net = tiny_net(out_ch=6 if learn_sigma else 3)
    x0, noise, y = make_batch(4)
    k = torch.tensor([0, 1, len(s) // 2, len(s) - 1])
    xt = q_sample(s, x0, k, noise)
    assert torch.allclose(xt, ref.q_sample(x0, k, noise), atol=1e-6)
    t_orig = torch.from_numpy(s.timesteps)[k]
    for clip in (True, False):
        mine = p_mean_variance(s, net(xt, t_orig, y), xt, k, clip, learn_sigma)
        theirs = ref.p_mean_variance(net, xt, k, clip_denoised=clip, model_kwargs={"y": y})
        for key in ("mean", "variance", "log_variance", "pred_xstart"):
            assert (mine[key] - theirs[key]).abs().max().item() < ATOL, key


@pytest.mark.parametrize("T,sched,rescaled", [(100, "cosine", True), (1000, "linear", True), (1000, "linear", False)])
def test_training_loss_parity(tiny_net, make_batch, T, sched, rescaled):
    s, ref = ours(T, "", sched), ref_diffusion(T, "", sched, rescaled=rescaled)
    net = tiny_net()
    x0, noise, y = make_batch(6)
    k = torch.tensor([0, 1, 2, T // 2, T - 2, T - 1])
    mine = hybrid_loss(lambda x, t, yy: net(x, t, yy), s, x0, k, y, noise)
    theirs = ref.training_losses(net, x0, k, model_kwargs={"y": y}, noise=noise)
    for key in ("loss", "mse", "vb"):
        assert (mine[key] - theirs[key]).abs().max().item() < ATOL, key
    # ... and the same gradients: the reference also detaches the mean inside its vb term
    grads = []
    for losses in (mine, theirs):
        net.zero_grad()
        losses["loss"].mean().backward(retain_graph=True)
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)
