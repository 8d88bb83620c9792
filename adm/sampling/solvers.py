"""Fast solvers as pure functions beside ddpm_sample / ddim_sample: DPM-Solver++(2M), (3M) and 2M SDE.

Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
Models" (arXiv:2211.01095), multistep, in data-prediction form. Same contract as
:mod:`adm.sampling.samplers`::

    dpmpp_2m_sample(model_fn, noise, schedule, labels=None, cond_fn=None, generators=None, ...) -> x_0

* ``schedule`` is any respaced :class:`~adm.diffusion.schedule.Schedule`; its K steps are the
  solver's nodes t_{K-1} > ... > t_0, plus a last node at sigma = 0 (x_0 itself), so a run costs
  K network evaluations, as DDIM with the same schedule. Build it with
  :func:`adm.diffusion.schedule.step_schedule` (time-uniform, logSNR-uniform or Karras rho = 7;
  the doc there says how continuous noise levels become the network's integer t) or ``respace``.
* ``model_fn`` is called at the ORIGINAL timestep of each node; only its eps channels are read.
  The learned variance (IDDPM's v channels) is NOT used: the probability-flow ODE these solvers
  integrate has no variance term.
* The ODE solvers (2M, 3M) are deterministic given x_T = ``noise``: no noise is drawn after x_T, so
  sample i depends on its own x_T (its own seed) only, whatever the batch; ``generators`` is
  accepted (and checked) for the shared signature. The SDE solver (2M SDE) draws fresh noise at
  every step but the last, from ``generators`` as DDPM does (the global torch RNG without them).
* Guidance: ``cond_fn`` (s * grad log p(y | x_t), :func:`adm.sampling.guidance.classifier_guidance`)
  enters as the guided noise prediction eps~ = eps - sigma_t * cond_fn with sigma_t =
  sqrt(1 - alpha_bar_t) (Dhariwal & Nichol Alg. 2 / Sec. 4.2); CFG and any other model_fn
  transform arrive through ``model_fn``. So every guidance method runs with every solver.

Notation (VP, DPM-Solver++ Sec. 2): alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t),
lambda_t = log(alpha_t / sigma_t) (half the log-SNR), h_i = lambda_{t_i} - lambda_{t_{i-1}},
x_theta = D the data prediction (x_0_hat).
"""

from __future__ import annotations

import math

import torch

from adm.diffusion.gaussian import original_timesteps
from adm.sampling.samplers import _check, _randn_like, _step_indices

__all__ = ["dpmpp_2m_sample", "dpmpp_3m_sample", "dpmpp_2m_sde_sample", "dynamic_threshold", "SOLVERS"]


def dynamic_threshold(x0: torch.Tensor, ratio: float) -> torch.Tensor:
    """Dynamic thresholding (Saharia et al. 2022 Sec. 2.3, used by DPM-Solver++ Sec. 5 for large
    guidance scales): per sample, s = max(1, the ``ratio`` quantile of |x0|); x0 -> clamp(x0, -s, s) / s."""
    flat = x0.reshape(len(x0), -1).abs().float()
    s = torch.quantile(flat, ratio, dim=1).clamp(min=1.0).view(-1, *([1] * (x0.ndim - 1)))
    return (x0.clamp(-s, s) / s).to(x0.dtype)


def _data_prediction(model_fn, x, t, labels, cond_fn, alpha, sigma, channels, clip, threshold):
    """x_theta(x_t, t) = (x_t - sigma_t eps~) / alpha_t (DPM-Solver++ Eq. 4), eps~ the guided eps."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32  # float64 only in closed-form tests
    eps = model_fn(x, t, labels)[:, :channels].to(dtype)  # eps channels only: no learned variance
    if cond_fn is not None:
        # eps~ = eps - sqrt(1 - alpha_bar_t) * s grad log p(y | x_t)  (Dhariwal & Nichol Alg. 2)
        eps = eps - sigma * cond_fn(x, t, labels).to(dtype)
    x0 = (x - sigma * eps) / alpha
    if threshold is not None:
        return dynamic_threshold(x0, threshold)
    return x0.clamp(-1, 1) if clip else x0


def _update(x, history, lam_t, alpha_t, sigma_t, sigma_s, order):
    """One multistep DPM-Solver++ step from node s = history[-1] to t, order <= len(history).

    history holds (lambda, D) of the previous nodes, newest last. The step integrates
    x_t = sigma_t/sigma_s x_s + sigma_t int_{lambda_s}^{lambda_t} e^lambda x_theta dlambda
    (DPM-Solver++ Eq. 8) with x_theta extrapolated from the last ``order`` data predictions.
    """
    lam_s, d0 = history[-1]
    h = lam_t - lam_s
    phi_1 = math.expm1(-h)  # e^{-h} - 1
    # first order (= DDIM, DPM-Solver++ Eq. 9): x_t = sigma_t/sigma_s x_s - alpha_t (e^{-h} - 1) D_s
    x = (sigma_t / sigma_s) * x - (alpha_t * phi_1) * d0
    if order == 1:
        return x
    lam_1, d1 = history[-2]
    r0 = (lam_s - lam_1) / h
    d1_0 = (d0 - d1) / r0  # h * (first divided difference in lambda)
    if order == 2:
        # DPM-Solver++(2M) (Alg. 2): D_i = (1 + 1/(2 r_i)) x_theta_{i-1} - 1/(2 r_i) x_theta_{i-2},
        # i.e. the first-order step plus -alpha_t (e^{-h} - 1) / 2 * (x_theta_{i-1} - x_theta_{i-2}) / r_i
        return x - (0.5 * alpha_t * phi_1) * d1_0
    lam_2, d2 = history[-3]
    r1 = (lam_1 - lam_2) / h
    d1_1 = (d1 - d2) / r1
    # third order (DPM-Solver++ App. B, multistep 3rd order, data prediction): D1 ~ h x_theta',
    # D2 ~ h^2 x_theta''/2 from the divided differences of the last three nodes
    dd1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
    dd2 = (d1_0 - d1_1) / (r0 + r1)
    phi_2 = phi_1 / h + 1.0  # (e^{-h} - 1)/h + 1
    phi_3 = phi_2 / h - 0.5  # ((e^{-h} - 1 + h)/h^2 - 1/2)
    return x + (alpha_t * phi_2) * dd1 - (alpha_t * phi_3) * dd2


def _sde_update(x, history, lam_t, alpha_t, sigma_t, sigma_s, order, z):
    """One SDE-DPM-Solver++ step from node s = history[-1] to t (Lu et al. 2022, the SDE solvers:
    the reverse diffusion SDE in data-prediction form), z ~ N(0, I) fresh for this step.

    Solving the reverse SDE exactly in its linear part gives
    x_t = sigma_t/sigma_s e^{-h} x_s + 2 alpha_t int_{lambda_s}^{lambda_t} e^{-2(lambda_t - lambda)} x_theta dlambda
          + sigma_t sqrt(1 - e^{-2h}) z,
    with x_theta constant (first order) or linear in lambda through the last two data predictions
    (second order, multistep). The noise term keeps Var[x_t | x_s] exact for a point-mass x_0.
    """
    lam_s, d0 = history[-1]
    h = lam_t - lam_s
    e2 = -math.expm1(-2.0 * h)  # 1 - e^{-2h}
    # SDE-DPM-Solver++(1): x_t = sigma_t/sigma_s e^{-h} x_s + alpha_t (1 - e^{-2h}) D_s + sigma_t sqrt(1 - e^{-2h}) z
    x = (sigma_t / sigma_s * math.exp(-h)) * x + (alpha_t * e2) * d0 + (sigma_t * math.sqrt(e2)) * z
    if order == 1:
        return x
    lam_1, d1 = history[-2]
    r0 = (lam_s - lam_1) / h
    # SDE-DPM-Solver++(2M), midpoint form: + alpha_t (1 - e^{-2h}) / 2 * (x_theta_{i-1} - x_theta_{i-2}) / r_i
    # (the exact integral of the linear term has 1 - (1 - e^{-2h}) / (2h) in place of (1 - e^{-2h}) / 2;
    # both are h + O(h^2), and the midpoint form is the one diffusers and k-diffusion ship by default)
    return x + (0.5 * alpha_t * e2) * ((d0 - d1) / r0)


@torch.no_grad()
def _multistep(
    model_fn, noise, schedule, labels, cond_fn, generators, order, clip, learn_sigma, progress, threshold, sde=False
):
    _check(noise, labels, cond_fn, generators)
    if threshold is not None and not 0 < threshold <= 1:
        raise ValueError(f"dynamic threshold ratio must be in (0, 1], got {threshold}")
    channels = noise.shape[1]  # learned-sigma models return 2C channels; the solver reads C (eps)
    alpha_bar = schedule.alphas_cumprod  # float64 [K]; the coefficients are per step, not per sample
    x, history = noise, []  # x_T ~ N(0, I); (lambda, x_theta) of the nodes so far
    desc = f"dpm-solver++({order}m{' sde' if sde else ''})"
    for k in _step_indices(schedule, len(x), x.device, progress, desc):
        i = int(k[0])
        alpha_s, sigma_s = math.sqrt(alpha_bar[i]), math.sqrt(1.0 - alpha_bar[i])
        t = original_timesteps(schedule, k)
        d = _data_prediction(model_fn, x, t, labels, cond_fn, alpha_s, sigma_s, channels, clip, threshold)
        history = (history + [(math.log(alpha_s / sigma_s), d)])[-order:]
        if i == 0:
            # the last node is sigma = 0, lambda = inf: every order's update tends to x_0 = x_theta
            # (e^{-h} -> 0, r_i -> 0 weights the older terms by 0); k-diffusion and diffusers
            # (lower_order_final) take this first-order limit too
            return d
        alpha_t, sigma_t = math.sqrt(alpha_bar[i - 1]), math.sqrt(1.0 - alpha_bar[i - 1])
        # the first steps have fewer past nodes: orders 1, 2, ... (Alg. 2's first step is first order)
        lam_t = math.log(alpha_t / sigma_t)
        if sde:  # fresh noise each step, from each sample's own generator
            z = _randn_like(x, generators).to(d.dtype)
            x = _sde_update(x, history, lam_t, alpha_t, sigma_t, sigma_s, len(history), z)
        else:
            x = _update(x, history, lam_t, alpha_t, sigma_t, sigma_s, len(history))
    return x


def dpmpp_2m_sample(
    model_fn,
    noise,
    schedule,
    labels=None,
    cond_fn=None,
    generators=None,
    clip_denoised=True,
    learn_sigma=True,
    progress=False,
    dynamic_threshold_ratio=None,
):
    """DPM-Solver++(2M) x_T -> x_0 (Lu et al. 2022, Alg. 2): multistep second order in
    data-prediction form, first-order first step and first-order (limit) last step to sigma = 0.

    ``clip_denoised`` clips each x_theta to [-1, 1] (static thresholding, as the reference DDIM
    clips x_0_hat); ``dynamic_threshold_ratio`` (e.g. 0.995; default None = off) replaces it with
    dynamic thresholding for large guidance scales. The thresholding applies to the guided x_theta.
    The learned variance is not used (``learn_sigma`` is accepted for the shared signature)."""
    return _multistep(
        model_fn, noise, schedule, labels, cond_fn, generators, 2, clip_denoised, learn_sigma, progress,
        dynamic_threshold_ratio,
    )  # fmt: skip


def dpmpp_3m_sample(
    model_fn,
    noise,
    schedule,
    labels=None,
    cond_fn=None,
    generators=None,
    clip_denoised=True,
    learn_sigma=True,
    progress=False,
    dynamic_threshold_ratio=None,
):
    """DPM-Solver++(3M) x_T -> x_0: multistep third order (Lu et al. 2022, App. B), warming up with
    orders 1 and 2; otherwise as :func:`dpmpp_2m_sample`. Lu et al. recommend 2M for guided
    sampling (large scales make high orders unstable); 3M earns its place unguided and at small
    scales, where it reaches a given error in fewer evaluations."""
    return _multistep(
        model_fn, noise, schedule, labels, cond_fn, generators, 3, clip_denoised, learn_sigma, progress,
        dynamic_threshold_ratio,
    )  # fmt: skip


def dpmpp_2m_sde_sample(
    model_fn,
    noise,
    schedule,
    labels=None,
    cond_fn=None,
    generators=None,
    clip_denoised=True,
    learn_sigma=True,
    progress=False,
    dynamic_threshold_ratio=None,
):
    """SDE-DPM-Solver++(2M) x_T -> x_0 (Lu et al. 2022, the SDE variant of Alg. 2): the reverse
    diffusion SDE instead of the probability-flow ODE, multistep second order in data-prediction
    form, one network evaluation per step, fresh noise from ``generators`` at every step but the
    last (to sigma = 0, where the noise term vanishes and x_0 = x_theta). A stochastic sampler
    can correct part of an imperfect model's error that an ODE carries to the end, so it may come
    closer to DDPM ancestral sampling where the ODE solvers plateau (the frontier measures whether
    it does). Otherwise as
    :func:`dpmpp_2m_sample` (thresholding, guidance; the learned variance is not used)."""
    return _multistep(
        model_fn, noise, schedule, labels, cond_fn, generators, 2, clip_denoised, learn_sigma, progress,
        dynamic_threshold_ratio, sde=True,
    )  # fmt: skip


SOLVERS = {"dpmpp-2m": dpmpp_2m_sample, "dpmpp-3m": dpmpp_3m_sample, "dpmpp-2m-sde": dpmpp_2m_sde_sample}
