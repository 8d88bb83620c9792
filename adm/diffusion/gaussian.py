"""Gaussian diffusion math on a :class:`~adm.diffusion.schedule.Schedule`: forward process, posterior,
the adapter from raw network output to p(x_{t-1} | x_t), and the hybrid training loss.

``k`` is always an int64 tensor [N] of step indices into the (possibly respaced) schedule;
the network is called at the ORIGINAL timestep ``schedule.timesteps[k]`` (see
:func:`original_timesteps`). Schedule coefficients are float64 numpy arrays, gathered at k and
then cast to float32, so every result matches the reference implementation's arithmetic.

The gather runs on k's device from a float64 copy of the table made once per (schedule,
device) (:func:`schedule_table`): a per-step ``torch.from_numpy(table).to(cuda)`` would be a
blocking host-to-device copy, i.e. a host-device sync, at every coefficient of every step.

``model_fn(x_t, t_orig, y) -> raw output`` of shape (N, C, ...) for fixed variances or
(N, 2C, ...) with learned variances: the first C channels are eps, the last C the variance
interpolation v in [-1, 1] (IDDPM Eq. 15).
"""

from __future__ import annotations

import math
import weakref
from typing import Callable

import numpy as np
import torch

from adm.diffusion.losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from adm.diffusion.schedule import Schedule
from adm.diffusion.timestep_sampler import LossAwareSampler, UniformSampler, make_timestep_sampler

__all__ = [
    "extract",
    "coef",
    "schedule_table",
    "original_timesteps",
    "q_sample",
    "q_posterior",
    "split_output",
    "predict_xstart_from_eps",
    "predict_eps_from_xstart",
    "p_mean_variance",
    "vb_terms_bpd",
    "hybrid_loss",
    "UniformSampler",
    "LossAwareSampler",
    "make_timestep_sampler",
]

ModelFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


# schedule -> {(table name, device): tensor}; weak, so a schedule's copies go when it does
_TABLES: "weakref.WeakKeyDictionary[Schedule, dict]" = weakref.WeakKeyDictionary()


def schedule_table(schedule: Schedule, name: str, device) -> torch.Tensor:
    """``schedule.<name>`` (float64 coefficients, int64 timesteps) as a tensor on ``device``,
    copied there once and then reused by every step: no per-step host-to-device copy."""
    device = torch.device(device)
    tables = _TABLES.setdefault(schedule, {})
    key = (name, device)
    if key not in tables:
        arr = getattr(schedule, name)
        if not isinstance(arr, np.ndarray) or arr.shape != (len(schedule),):
            raise ValueError(f"{name!r} is not a per-step table of the schedule")
        tables[key] = torch.from_numpy(arr).to(device)
    return tables[key]


def extract(arr: "np.ndarray | torch.Tensor", k: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """arr[k] as float32, shaped (N, 1, 1, ...) to broadcast against ``like``.

    The gather is in the table's own dtype (float64) and the cast comes after, as the reference
    does it; a numpy ``arr`` is copied to k's device on each call (use :func:`coef` per step)."""
    table = arr if isinstance(arr, torch.Tensor) else torch.from_numpy(arr).to(device=k.device)
    return table[k].float().view(-1, *([1] * (like.ndim - 1)))


def coef(schedule: Schedule, name: str, k: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """schedule.<name>[k] as float32 (N, 1, 1, ...), gathered on k's device (no host round trip)."""
    return extract(schedule_table(schedule, name, k.device), k, like)


def original_timesteps(schedule: Schedule, k: torch.Tensor) -> torch.Tensor:
    """t_orig = schedule.timesteps[k]: the timestep the network and classifier were trained on."""
    return schedule_table(schedule, "timesteps", k.device)[k]


def q_sample(schedule: Schedule, x0: torch.Tensor, k: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps  (Ho et al. Eq. 4)."""
    return (
        coef(schedule, "sqrt_alphas_cumprod", k, x0) * x0
        + coef(schedule, "sqrt_one_minus_alphas_cumprod", k, x0) * noise
    )


def q_posterior(schedule: Schedule, x0: torch.Tensor, x_t: torch.Tensor, k: torch.Tensor):
    """q(x_{t-1} | x_t, x_0) = N(mu_tilde, beta_tilde): (mean, variance, clipped log variance).

    mu_tilde = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
             + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t   (Ho et al. Eq. 7)
    """
    mean = coef(schedule, "posterior_mean_coef1", k, x_t) * x0 + coef(schedule, "posterior_mean_coef2", k, x_t) * x_t
    variance = coef(schedule, "posterior_variance", k, x_t).expand_as(x_t)
    log_variance = coef(schedule, "posterior_log_variance_clipped", k, x_t).expand_as(x_t)
    return mean, variance, log_variance


def split_output(out: torch.Tensor, learn_sigma: bool):
    """Raw network output -> (eps, v), v = None when the variance is fixed."""
    if not learn_sigma:
        return out, None
    if out.shape[1] % 2:
        raise ValueError(f"learned-sigma output needs an even channel count, got {out.shape[1]}")
    eps, v = torch.split(out, out.shape[1] // 2, dim=1)
    return eps, v


def predict_xstart_from_eps(schedule, x_t, k, eps):
    """x_0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)  (inverse of Eq. 4)."""
    return (
        coef(schedule, "sqrt_recip_alphas_cumprod", k, x_t) * x_t
        - coef(schedule, "sqrt_recipm1_alphas_cumprod", k, x_t) * eps
    )


def predict_eps_from_xstart(schedule, x_t, k, x0):
    """eps = (x_t / sqrt(alpha_bar_t) - x_0) / sqrt(1 / alpha_bar_t - 1)  (Eq. 4 solved for eps)."""
    return (coef(schedule, "sqrt_recip_alphas_cumprod", k, x_t) * x_t - x0) / coef(
        schedule, "sqrt_recipm1_alphas_cumprod", k, x_t
    )


def _log_variance(schedule, v, x_t, k, learn_sigma):
    """log Sigma_theta: learned interpolation (IDDPM Eq. 15) or "fixedlarge" beta_t."""
    if learn_sigma:
        # log Sigma = frac log beta_t + (1 - frac) log beta_tilde_t, frac = (v + 1) / 2 in [0, 1]
        min_log = coef(schedule, "posterior_log_variance_clipped", k, x_t)
        max_log = coef(schedule, "log_betas", k, x_t)
        frac = (v + 1) / 2
        return frac * max_log + (1 - frac) * min_log
    # Fixed variance: "fixedlarge" sigma_t^2 = beta_t (Ho et al. Sec. 3.2; the reference's
    # default when learn_sigma=False), with beta_tilde_1 at t = 0 for a finite decoder NLL.
    return coef(schedule, "fixed_large_log_variance", k, x_t).expand_as(x_t)


def p_mean_variance(
    schedule: Schedule,
    out: torch.Tensor,
    x_t: torch.Tensor,
    k: torch.Tensor,
    clip_denoised: bool = True,
    learn_sigma: bool = True,
) -> dict:
    """p_theta(x_{t-1} | x_t) = N(mu_theta, Sigma_theta) from the raw network output at step k.

    Returns dict(mean, variance, log_variance, pred_xstart, eps), each shaped like x_t.
    learn_sigma=True: Sigma from the v channels (IDDPM Eq. 15); False: "fixedlarge" beta_t.
    """
    eps, v = split_output(out, learn_sigma)
    if eps.shape != x_t.shape:
        raise ValueError(f"eps {tuple(eps.shape)} does not match x_t {tuple(x_t.shape)}")
    log_variance = _log_variance(schedule, v, x_t, k, learn_sigma)
    pred_xstart = predict_xstart_from_eps(schedule, x_t, k, eps)
    if clip_denoised:
        # x_0 lives in [-1, 1]; clipping x_0_hat keeps early, noisy predictions in range.
        pred_xstart = pred_xstart.clamp(-1, 1)
    # mu_theta(x_t, t) = mu_tilde(x_0_hat, x_t)  (IDDPM Eq. 11 via x_0_hat)
    mean, _, _ = q_posterior(schedule, pred_xstart, x_t, k)
    return {
        "mean": mean,
        "variance": torch.exp(log_variance),
        "log_variance": log_variance,
        "pred_xstart": pred_xstart,
        "eps": eps,
    }


def vb_terms_bpd(
    schedule: Schedule,
    out: torch.Tensor,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    k: torch.Tensor,
    clip_denoised: bool = False,
    learn_sigma: bool = True,
):
    """One term of L_vlb in bits/dim: L_{t-1} = KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t > 0,
    the discretized decoder NLL L_0 = -log p(x_0 | x_1) at t = 0 (Ho et al. Eq. 5)."""
    true_mean, _, true_log_var = q_posterior(schedule, x0, x_t, k)
    p = p_mean_variance(schedule, out, x_t, k, clip_denoised=clip_denoised, learn_sigma=learn_sigma)
    kl = mean_flat(normal_kl(true_mean, true_log_var, p["mean"], p["log_variance"])) / math.log(2.0)
    decoder_nll = -discretized_gaussian_log_likelihood(x0, means=p["mean"], log_scales=0.5 * p["log_variance"])
    decoder_nll = mean_flat(decoder_nll) / math.log(2.0)
    return torch.where(k == 0, decoder_nll, kl)


def hybrid_loss(
    model_fn: ModelFn,
    schedule: Schedule,
    x0: torch.Tensor,
    k: torch.Tensor,
    y: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    learn_sigma: bool = True,
    lambda_vlb: float = 0.001,
) -> dict:
    """IDDPM's L_hybrid = L_simple + lambda L_vlb (Eq. 16, lambda = 0.001), per example: dict of [N].

    L_vlb = sum over all K terms is estimated by K * L_t at the sampled t, so the vb term is
    lambda * K * L_t = (K / 1000) * L_t -- exactly the reference's RESCALED_MSE objective (and,
    at K = 1000 as for every model in the paper, also its plain-MSE default, whose factor is 1).
    The mean is detached inside L_vlb so that only Sigma_theta learns from it (IDDPM Sec. 3.1).
    With learn_sigma=False the loss is L_simple alone and ``vb`` is zeros.
    """
    if noise is None:
        noise = torch.randn_like(x0)
    x_t = q_sample(schedule, x0, k, noise)
    out = model_fn(x_t, original_timesteps(schedule, k), y)
    eps, v = split_output(out, learn_sigma)
    # L_simple = || eps - eps_theta(x_t, t) ||^2, averaged over pixels (Ho et al. Eq. 14)
    mse = mean_flat((noise - eps) ** 2)
    if not learn_sigma:
        return {"loss": mse, "mse": mse, "vb": torch.zeros_like(mse)}
    frozen = torch.cat([eps.detach(), v], dim=1)
    vb = vb_terms_bpd(schedule, frozen, x0, x_t, k, clip_denoised=False) * (lambda_vlb * len(schedule))
    return {"loss": mse + vb, "mse": mse, "vb": vb}
