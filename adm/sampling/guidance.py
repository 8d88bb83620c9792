"""Classifier guidance as a function transform (Dhariwal & Nichol 2021, Sec. 4).

``classifier_guidance(classifier, s)`` returns ``cond_fn(x_t, t_orig, y) = s * grad_x log p_phi(y | x_t)``.
The samplers use it as Algorithm 1 (DDPM: shift the mean by Sigma * cond_fn) and Algorithm 2
(DDIM: eps_hat = eps - sqrt(1 - alpha_bar_t) * cond_fn). The classifier is evaluated at the
ORIGINAL timestep t (it was trained on noisy x_t at t in 0..T-1), never at a respaced index.

``limited_interval(cond_fn, schedule, (lo, hi))`` restricts any cond_fn to the noise levels
sigma in (lo, hi] (Kynkaanniemi et al. 2024); ``classifier_free_guidance(model_fn, w, null)``
is the model_fn transform of classifier-free guidance (Ho & Salimans 2021), optionally limited
to an interval the same way (``interval_switch``: the plain conditional model outside it), and
``autoguidance(main_fn, guide_fn, w)`` guides a model with a weaker version of itself
(Karras et al. 2024), a model_fn transform too, with the same interval switch.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from adm.diffusion.schedule import Schedule, step_sigmas

__all__ = [
    "classifier_guidance",
    "CondFn",
    "limited_interval",
    "step_sigmas",
    "check_interval",
    "is_full_interval",
    "guided_step_count",
    "classifier_free_guidance",
    "interval_switch",
    "autoguidance",
]

CondFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def classifier_guidance(classifier: Callable, scale: float) -> CondFn | None:
    """s * grad_x log p_phi(y | x_t); None for s == 0, so the sampler runs its unguided path and
    reproduces the unguided samples bit for bit."""
    if scale == 0:
        return None
    scale = float(scale)

    def cond_fn(x_t: torch.Tensor, t_orig: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y is None:
            raise ValueError("classifier guidance needs class labels y")
        # Samplers run under no_grad; the gradient w.r.t. a detached copy of x_t is all we need.
        with torch.enable_grad():
            x_in = x_t.detach().requires_grad_(True)
            log_probs = F.log_softmax(classifier(x_in, t_orig), dim=-1)
            # log p_phi(y_i | x_t,i); rows are independent, so one backward of the sum gives
            # every sample's own gradient.
            selected = log_probs[torch.arange(len(y), device=y.device), y.view(-1)]
            grad = torch.autograd.grad(selected.sum(), x_in)[0]
        return (grad * scale).float()

    return cond_fn


# --- limited-interval guidance (Kynkäänniemi et al. 2024) ------------------------------------


def is_full_interval(interval) -> bool:
    """True for None or any (lo, hi) with lo <= 0 and hi = inf: every sigma > 0 lies inside, so
    guidance is applied at every step."""
    return interval is None or (interval[0] <= 0 and math.isinf(interval[1]) and interval[1] > 0)


def check_interval(interval) -> tuple[float, float] | None:
    """(lo, hi) as floats, or None; a ValueError names what is wrong. lo is finite and >= 0,
    hi > lo (hi = inf: no upper bound); NaN anywhere is refused."""
    if interval is None:
        return None
    if len(interval) != 2:
        raise ValueError(f"--guidance-interval takes two sigma bounds LO HI, got {len(interval)} values")
    lo, hi = float(interval[0]), float(interval[1])
    if not math.isfinite(lo) or lo < 0:
        raise ValueError(f"--guidance-interval LO must be a finite sigma >= 0, got {lo}")
    if math.isnan(hi) or not hi > lo:  # NaN fails every comparison: test it by name
        raise ValueError(f"--guidance-interval needs LO < HI, got LO={lo} HI={hi}")
    return lo, hi


def _sigma_table(schedule: Schedule) -> np.ndarray:
    """sigma indexed by ORIGINAL timestep (float64 [T]); NaN at timesteps this schedule never visits."""
    table = np.full(schedule.num_timesteps_original, np.nan)
    table[schedule.timesteps] = step_sigmas(schedule)
    return table


def guided_step_count(schedule: Schedule, timesteps, interval) -> int:
    """How many of the sampler's steps (their ORIGINAL ``timesteps``) an interval guides: those with
    sigma_lo < sigma(t) <= sigma_hi in ``schedule`` (every step for a full interval), the same
    test :func:`limited_interval` and :func:`interval_switch` apply at each step. Samplers step
    every sample of a batch at the same t, so this is the count of every sample."""
    timesteps = np.asarray(timesteps, dtype=np.int64)
    interval = check_interval(interval)
    if is_full_interval(interval):
        return len(timesteps)
    lo, hi = interval
    sigma = _sigma_table(schedule)[timesteps]
    if np.isnan(sigma).any():
        raise ValueError(f"timesteps {timesteps.tolist()} are not all steps of this schedule")
    return int(((sigma > lo) & (sigma <= hi)).sum())


def limited_interval(cond_fn: CondFn | None, schedule: Schedule, interval) -> CondFn | None:
    """cond_fn applied only where sigma_lo < sigma(t) <= sigma_hi, zero elsewhere.

    Half-open on the low side, as the paper defines it (guidance for sigma in (sigma_lo, sigma_hi]).
    sigma(t) is that of the ORIGINAL timestep t the sampler passes (see :func:`step_sigmas`), so
    the same bounds select the same noise levels at every respacing. A full interval (see
    :func:`is_full_interval`) or cond_fn None returns cond_fn itself: the samples stay bit for bit
    those of today's guidance. Outside the interval the wrapped cond_fn is not called (no
    classifier gradient is paid for; on an accelerator it is computed and masked, which avoids a
    host-device sync per step) and the step's guidance term is 0 (DDPM: exactly the unguided step;
    DDIM: the unguided step up to the rounding of eps -> x_0_hat).
    """
    interval = check_interval(interval)
    if cond_fn is None or is_full_interval(interval):
        return cond_fn
    lo, hi = interval
    table = _sigma_table(schedule)  # sigma by ORIGINAL timestep; NaN at timesteps never visited
    on_device: dict = {}  # device -> the table there, copied once (a per-step copy is a sync)

    def interval_cond_fn(x_t: torch.Tensor, t_orig: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if t_orig.device not in on_device:
            on_device[t_orig.device] = torch.from_numpy(table).to(t_orig.device)
        sigma = on_device[t_orig.device][t_orig]
        inside = (sigma > lo) & (sigma <= hi)  # NaN (a timestep never visited) is outside
        if t_orig.device.type == "cpu":
            # Reading a CPU tensor is free: refuse unknown timesteps, and pay no classifier
            # gradient where no sample is inside. On an accelerator either test would be a
            # host-device sync per step, so there the gradient is computed and masked instead.
            if torch.isnan(sigma).any():
                raise ValueError(f"timesteps {t_orig.tolist()} are not all steps of this schedule")
            if not inside.any():
                return torch.zeros_like(x_t, dtype=torch.float32)
            if inside.all():
                return cond_fn(x_t, t_orig, y)
        g = cond_fn(x_t, t_orig, y)
        mask = inside.view(-1, *([1] * (g.ndim - 1)))
        return torch.where(mask, g, torch.zeros_like(g))

    return interval_cond_fn


# --- classifier-free guidance (Ho & Salimans 2021) -------------------------------------------


def classifier_free_guidance(
    model_fn: Callable,
    w: float,
    null_label: int,
    learn_sigma: bool = True,
    schedule: Schedule | None = None,
    interval=None,
) -> Callable:
    """model_fn'(x_t, t, y): eps~ = (1 + w) eps(x_t, y) - w eps(x_t, null) (the CFG paper's w).

    w = 0 is the plain conditional model and returns ``model_fn`` itself (bit for bit). With
    ``learn_sigma`` the output's second half (the variance interpolation v of IDDPM) is taken
    from the CONDITIONAL pass: the CFG paper fixes its variance rather than learning it, and
    GLIDE (Nichol et al. 2022), the learned-variance model sampled with CFG, keeps each pass's
    own variance channels, so the conditional sample uses the conditional v. The two passes are
    separate forwards on the same batch (no 2N concatenation), so sample i still depends on its
    own batch only, as in unguided sampling. ``null_label`` is the class index the model saw
    for a dropped label (num_classes for a model trained with ``train-diffusion
    --label-dropout``); a label y equal to it is refused, once per label tensor.

    ``interval`` (sigma bounds, with the ``schedule`` whose ORIGINAL timesteps the sampler
    passes) guides only where sigma_lo < sigma(t) <= sigma_hi, and returns the plain conditional
    output elsewhere, as Kynkaanniemi et al. 2024 apply their interval to CFG; a full interval
    is the same as none.
    """
    if not math.isfinite(w) or w < 0:
        raise ValueError(f"classifier-free guidance weight w must be a finite number >= 0, got {w}")
    if isinstance(null_label, bool) or not isinstance(null_label, (int, np.integer)) or null_label < 0:
        raise ValueError(f"null_label must be a class index >= 0, got {null_label!r}")
    interval = check_interval(interval)
    if w == 0:
        return model_fn
    w, null_label = float(w), int(null_label)
    checked: list = [None]  # the label tensor last checked (samplers pass the same y every step)
    nulls: dict = {}  # id(y) -> its null-label tensor, built once per batch, not per step

    def cfg_model_fn(x_t: torch.Tensor, t_orig: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y is None:
            raise ValueError("classifier-free guidance needs class labels y")
        if y is not checked[0]:
            # once per label tensor (one read-back per batch, not per step); a "meta" tensor
            # holds no values (shape-only runs): nothing to check
            if y.device.type != "meta" and bool((y == null_label).any()):
                raise ValueError(
                    f"labels include the null class {null_label}: classifier-free guidance "
                    f"guides towards a real class, never the null one"
                )
            checked[0] = y
            nulls.clear()
            nulls[id(y)] = torch.full_like(y, null_label)
        cond = model_fn(x_t, t_orig, y)
        uncond = model_fn(x_t, t_orig, nulls[id(y)])
        c = cond.shape[1] // 2 if learn_sigma else cond.shape[1]
        eps = (1 + w) * cond[:, :c] - w * uncond[:, :c]  # = uncond + (1 + w)(cond - uncond)
        return torch.cat([eps, cond[:, c:]], dim=1)

    if is_full_interval(interval):
        return cfg_model_fn
    if schedule is None:
        raise ValueError("a guidance interval needs the schedule the sampler runs")
    return interval_switch(cfg_model_fn, model_fn, schedule, interval)


def interval_switch(inside_fn: Callable, outside_fn: Callable, schedule: Schedule, interval) -> Callable:
    """model_fn that is ``inside_fn`` for samples with sigma_lo < sigma(t) <= sigma_hi and
    ``outside_fn`` for the rest (sigma of the ORIGINAL timestep, as :func:`limited_interval`).

    The decision reads t back to the host once per step (a sync on an accelerator): it is what
    lets the steps outside the interval skip the unconditional forward, which costs far more.
    Samplers step every sample of a batch together, so the per-sample mix (both functions
    evaluated) only happens for a batch with mixed timesteps.
    """
    lo, hi = check_interval(interval)
    table = _sigma_table(schedule)

    def switched(x_t: torch.Tensor, t_orig: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        sigma = table[t_orig.detach().cpu().numpy()]
        if np.isnan(sigma).any():
            raise ValueError(f"timesteps {t_orig.tolist()} are not all steps of this schedule")
        inside = (sigma > lo) & (sigma <= hi)
        if inside.all():
            return inside_fn(x_t, t_orig, y)
        if not inside.any():
            return outside_fn(x_t, t_orig, y)
        mask = torch.from_numpy(inside).to(x_t.device).view(-1, *([1] * (x_t.ndim - 1)))
        return torch.where(mask, inside_fn(x_t, t_orig, y), outside_fn(x_t, t_orig, y))

    return switched


# --- autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself") ---


def autoguidance(
    main_model_fn: Callable,
    guide_model_fn: Callable,
    w: float,
    learn_sigma: bool = True,
    schedule: Schedule | None = None,
    interval=None,
) -> Callable:
    """model_fn'(x_t, t, y): eps~ = eps_guide + w (eps_main - eps_guide), v from the main model.

    The paper writes it for denoisers, D_w = D_guide + w (D_main - D_guide) (their Eq. 2). For
    one x_t both denoisers are the same affine map of their eps,
    D(x_t) = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t), and the weights (1 - w) and w
    sum to 1, so D_guide + w (D_main - D_guide) = (x_t - sqrt(1 - alpha_bar_t) eps~) /
    sqrt(alpha_bar_t) with eps~ above: the eps form is the paper's rule, and every sampler that
    reads eps (DDPM, DDIM, any solver) runs it unchanged. The guide is a weaker model of the SAME
    task (smaller and/or less trained), sees the same (x_t, t, y), and its learned variance is
    ignored: the learned variance v of IDDPM comes from the main model, whose samples these are.

    w = 1 is the main model alone and returns ``main_model_fn`` itself (byte for byte, the guide
    never runs); the paper's w > 1 extrapolates away from the guide, w < 1 is refused. With an
    ``interval`` (sigma bounds, and the ``schedule`` whose ORIGINAL timesteps the sampler passes)
    the guide is used only where sigma_lo < sigma(t) <= sigma_hi, the main model alone elsewhere.
    """
    if not math.isfinite(w) or w < 1:
        raise ValueError(f"autoguidance weight w must be a finite number >= 1 (1 = the main model alone), got {w}")
    interval = check_interval(interval)
    if w == 1:
        return main_model_fn
    w = float(w)

    def auto_model_fn(x_t: torch.Tensor, t_orig: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        main = main_model_fn(x_t, t_orig, y)
        guide = guide_model_fn(x_t, t_orig, y)
        c = main.shape[1] // 2 if learn_sigma else main.shape[1]
        eps = guide[:, :c] + w * (main[:, :c] - guide[:, :c])  # the guide's v channels are not read
        return torch.cat([eps, main[:, c:]], dim=1)

    if is_full_interval(interval):
        return auto_model_fn
    if schedule is None:
        raise ValueError("a guidance interval needs the schedule the sampler runs")
    return interval_switch(auto_model_fn, main_model_fn, schedule, interval)
