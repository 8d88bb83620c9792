"""Samplers as pure functions: DDPM ancestral sampling and DDIM, with optional classifier guidance.

Contract shared by both::

    sampler(model_fn, noise, schedule, labels=None, cond_fn=None, generators=None, ...) -> x_0

* ``model_fn(x_t, t_orig, y)`` returns the raw network output; it is called at the ORIGINAL
  timestep ``t_orig = schedule.timesteps[k]`` of step k, so a respaced schedule needs no
  model wrapper.
* ``noise`` is x_T, shape (N, C, H, W); ``generators`` (one per sample, see :mod:`adm.sampling.rng`)
  supply every per-step noise, so sample i depends on its own seed only, whatever the batch.
  Without generators the global torch RNG is used.
* ``cond_fn(x_t, t_orig, y)`` = s * grad_x log p_phi(y | x_t) (see :mod:`adm.sampling.guidance`); None
  runs the unguided sampler.

The result is the final x_0 (not clipped again: with guidance the last mean shift can leave
[-1, 1] by a hair; :func:`to_uint8` clamps, as the reference does).
"""

from __future__ import annotations

import numpy as np
import torch

from adm.diffusion.gaussian import (
    coef,
    original_timesteps,
    p_mean_variance,
    predict_eps_from_xstart,
    predict_xstart_from_eps,
)
from adm.diffusion.schedule import Schedule
from adm.sampling.rng import randn_per_sample

__all__ = ["ddpm_sample", "ddim_sample", "to_uint8"]


def _check(noise, labels, cond_fn, generators):
    if cond_fn is not None and labels is None:
        raise ValueError("classifier guidance (cond_fn) needs labels")
    if labels is not None and len(labels) != len(noise):
        raise ValueError(f"{len(labels)} labels for a batch of {len(noise)}")
    if generators is not None and len(generators) != len(noise):
        raise ValueError(f"{len(generators)} generators for a batch of {len(noise)}")


def _step_indices(schedule: Schedule, n: int, device, progress: bool, desc: str):
    """k = K-1, ..., 0 as int64 tensors [n] (optionally with a tqdm bar)."""
    ks = range(len(schedule) - 1, -1, -1)
    if progress:
        from tqdm.auto import tqdm

        ks = tqdm(ks, desc=desc, leave=False)
    for k in ks:
        yield torch.full((n,), k, dtype=torch.int64, device=device)


def _randn_like(x, generators):
    """Standard normal noise for this step: from each sample's own generator when given."""
    if generators is None:
        return torch.randn_like(x)
    z = randn_per_sample(generators, x.shape[1:], generators[0].device)  # where they draw
    if z.device == x.device:
        return z.to(x.dtype)
    # A blocking host-to-device copy would wait for the device's queue at every step; from
    # pinned memory the copy is queued behind the running kernels and the host draws on.
    z = z.pin_memory() if x.device.type == "cuda" else z
    return z.to(x.device, x.dtype, non_blocking=True)


def _not_last(k, x):
    """1 where t > 0, 0 at the final step (t = 0), shaped to broadcast over x."""
    return (k != 0).float().view(-1, *([1] * (x.ndim - 1)))


@torch.no_grad()
def ddpm_sample(
    model_fn,
    noise,
    schedule,
    labels=None,
    cond_fn=None,
    generators=None,
    clip_denoised=True,
    learn_sigma=True,
    progress=False,
):
    """Ancestral sampling x_T -> x_0 (Ho et al. Alg. 2; guided: Dhariwal & Nichol Alg. 1)."""
    _check(noise, labels, cond_fn, generators)
    x = noise  # x_T ~ N(0, I)
    for k in _step_indices(schedule, len(x), x.device, progress, "ddpm"):
        t = original_timesteps(schedule, k)
        # mu_theta(x_t, t), Sigma_theta(x_t, t) from the network's eps and v (IDDPM Eqs. 11, 15)
        p = p_mean_variance(schedule, model_fn(x, t, labels), x, k, clip_denoised, learn_sigma)
        z = _randn_like(x, generators)
        mean = p["mean"]
        if cond_fn is not None:
            # Alg. 1: x_{t-1} ~ N(mu + s Sigma grad_x log p_phi(y | x_t), Sigma); s is inside cond_fn
            mean = mean.float() + p["variance"] * cond_fn(x, t, labels).float()
        # x_{t-1} = mu + sigma z, z ~ N(0, I); no noise on the final step to x_0
        x = mean + _not_last(k, x) * torch.exp(0.5 * p["log_variance"]) * z
    return x


@torch.no_grad()
def ddim_sample(
    model_fn,
    noise,
    schedule,
    labels=None,
    cond_fn=None,
    generators=None,
    eta=0.0,
    clip_denoised=True,
    learn_sigma=True,
    progress=False,
):
    """DDIM x_T -> x_0 (Song et al. 2021 Eq. 12; guided: Dhariwal & Nichol Alg. 2). eta=0 is
    deterministic given x_T; eta=1 matches DDPM's posterior variance beta_tilde."""
    _check(noise, labels, cond_fn, generators)
    x = noise  # x_T ~ N(0, I)
    for k in _step_indices(schedule, len(x), x.device, progress, "ddim"):
        t = original_timesteps(schedule, k)
        p = p_mean_variance(schedule, model_fn(x, t, labels), x, k, clip_denoised, learn_sigma)
        alpha_bar = coef(schedule, "alphas_cumprod", k, x)
        alpha_bar_prev = coef(schedule, "alphas_cumprod_prev", k, x)
        # eps consistent with the (clipped) x_0_hat:
        # eps = (x_t - sqrt(alpha_bar_t) x_0_hat) / sqrt(1 - alpha_bar_t)
        eps = predict_eps_from_xstart(schedule, x, k, p["pred_xstart"])
        x0 = p["pred_xstart"]
        if cond_fn is not None:
            # Alg. 2: eps_hat = eps - sqrt(1 - alpha_bar_t) grad_x log p_phi(y | x_t), then
            # x_0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t) (not re-clipped)
            eps = eps - (1 - alpha_bar).sqrt() * cond_fn(x, t, labels).float()
            x0 = predict_xstart_from_eps(schedule, x, k, eps)
        # DDIM Eq. 16: sigma_t(eta) = eta sqrt((1 - alpha_bar_{t-1}) / (1 - alpha_bar_t))
        #                              * sqrt(1 - alpha_bar_t / alpha_bar_{t-1})
        sigma = eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
        # DDIM Eq. 12: x_{t-1} = sqrt(alpha_bar_{t-1}) x_0_hat
        #                      + sqrt(1 - alpha_bar_{t-1} - sigma^2) eps_hat + sigma z
        # (the clamp only guards float32 rounding below 0 at eta = 1)
        x = x0 * torch.sqrt(alpha_bar_prev) + torch.sqrt((1 - alpha_bar_prev - sigma**2).clamp(min=0)) * eps
        if eta > 0:
            x = x + _not_last(k, x) * sigma * _randn_like(x, generators)
    return x


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """x_0 in [-1, 1], NCHW -> uint8 NHWC numpy (the reference's ((x+1)*127.5).clamp(0,255))."""
    return ((x + 1) * 127.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()
