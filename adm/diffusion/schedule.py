"""Noise schedules as data, and respacing as a function.

A :class:`Schedule` is a frozen bundle of float64 arrays indexed by the *step index* k.
``timesteps[k]`` is the ORIGINAL training timestep t in 0..T-1 that step k stands for; the
network and the classifier are always evaluated at that t, never at k. An un-respaced schedule
has ``timesteps == arange(T)``.

Symbols follow Ho et al. 2020 and Nichol & Dhariwal 2021 ("IDDPM"):
beta_t, alpha_t = 1 - beta_t, alpha_bar_t = prod_{s<=t} alpha_s, and the posterior
q(x_{t-1} | x_t, x_0) = N(mu_tilde_t, beta_tilde_t I).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = [
    "Schedule",
    "linear_schedule",
    "cosine_schedule",
    "make_schedule",
    "space_timesteps",
    "respace",
    "keep_timesteps",
    "STEP_SCHEDULES",
    "step_schedule",
    "step_sigmas",
]


@dataclass(frozen=True, eq=False)
class Schedule:
    betas: np.ndarray  # float64 [K]: beta of each (possibly respaced) step
    timesteps: np.ndarray  # int64 [K]: ORIGINAL timestep t of step k (arange(T) if not respaced)
    num_timesteps_original: int  # T of the training schedule the network was trained on

    def __post_init__(self):
        betas = np.asarray(self.betas, dtype=np.float64)
        timesteps = np.asarray(self.timesteps, dtype=np.int64)
        if betas.ndim != 1 or betas.shape != timesteps.shape:
            raise ValueError(f"betas {betas.shape} and timesteps {timesteps.shape} must be equal 1-D")
        if not ((betas > 0).all() and (betas <= 1).all()):
            raise ValueError("betas must lie in (0, 1]")
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "timesteps", timesteps)

    def __len__(self) -> int:
        return len(self.betas)

    @property
    def num_timesteps(self) -> int:
        """K: the number of sampling steps of this (possibly respaced) schedule."""
        return len(self.betas)

    @cached_property
    def alphas(self) -> np.ndarray:
        return 1.0 - self.betas

    @cached_property
    def alphas_cumprod(self) -> np.ndarray:
        # alpha_bar_t = prod_{s<=t} (1 - beta_s)
        return np.cumprod(self.alphas)

    @cached_property
    def alphas_cumprod_prev(self) -> np.ndarray:
        # alpha_bar_{t-1}, with alpha_bar_{-1} = 1 (x_{-1} := x_0 is noiseless)
        return np.append(1.0, self.alphas_cumprod[:-1])

    @cached_property
    def sqrt_alphas_cumprod(self) -> np.ndarray:
        return np.sqrt(self.alphas_cumprod)

    @cached_property
    def sqrt_one_minus_alphas_cumprod(self) -> np.ndarray:
        return np.sqrt(1.0 - self.alphas_cumprod)

    @cached_property
    def sqrt_recip_alphas_cumprod(self) -> np.ndarray:
        # 1 / sqrt(alpha_bar_t): x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)
        return np.sqrt(1.0 / self.alphas_cumprod)

    @cached_property
    def sqrt_recipm1_alphas_cumprod(self) -> np.ndarray:
        # sqrt(1 / alpha_bar_t - 1) = sqrt(1 - alpha_bar_t) / sqrt(alpha_bar_t)
        return np.sqrt(1.0 / self.alphas_cumprod - 1.0)

    @cached_property
    def log_betas(self) -> np.ndarray:
        return np.log(self.betas)

    @cached_property
    def posterior_variance(self) -> np.ndarray:
        # beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t  (Ho et al. Eq. 7)
        return self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

    @cached_property
    def posterior_log_variance_clipped(self) -> np.ndarray:
        # beta_tilde_0 = 0, so its log is -inf: use beta_tilde_1 at index 0 (as the reference).
        # Requires K >= 2 to be meaningful; with K == 1 index 0's own value is used.
        var = self.posterior_variance
        first = var[1] if len(var) > 1 else var[0]
        return np.log(np.append(first, var[1:]))

    @cached_property
    def posterior_mean_coef1(self) -> np.ndarray:
        # mu_tilde_t = coef1 * x_0 + coef2 * x_t  (Ho et al. Eq. 7)
        return self.betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

    @cached_property
    def posterior_mean_coef2(self) -> np.ndarray:
        return (1.0 - self.alphas_cumprod_prev) * np.sqrt(self.alphas) / (1.0 - self.alphas_cumprod)

    @cached_property
    def fixed_large_variance(self) -> np.ndarray:
        # "fixedlarge" sigma_t^2 = beta_t, with beta_tilde_1 at index 0 for a finite decoder NLL.
        return np.append(self.posterior_variance[1] if len(self) > 1 else self.betas[0], self.betas[1:])

    @cached_property
    def fixed_large_log_variance(self) -> np.ndarray:
        return np.log(self.fixed_large_variance)


def linear_schedule(T: int) -> Schedule:
    """Ho et al.'s linear betas, rescaled so that any T has the same endpoints as T = 1000."""
    scale = 1000.0 / T
    betas = np.linspace(scale * 1e-4, scale * 0.02, T, dtype=np.float64)
    return Schedule(betas, np.arange(T), T)


def cosine_schedule(T: int, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """IDDPM Eq. 17: alpha_bar(t) = f(t)/f(0), f(t) = cos^2(((t/T + s)/(1 + s)) * pi/2).

    beta_t = 1 - alpha_bar(t+1)/alpha_bar(t), capped at max_beta to avoid the singularity at t = T.
    """

    def f(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1.0 - f((i + 1) / T) / f(i / T), max_beta) for i in range(T)]
    return Schedule(np.array(betas, dtype=np.float64), np.arange(T), T)


def make_schedule(name: str, T: int) -> Schedule:
    """Schedule by name: "linear" or "cosine"."""
    builders = {"linear": linear_schedule, "cosine": cosine_schedule}
    if name not in builders:
        raise ValueError(f"unknown noise schedule {name!r}; expected one of {sorted(builders)}")
    if T < 1:
        raise ValueError(f"number of diffusion steps must be >= 1, got {T}")
    return builders[name](T)


def space_timesteps(num_steps: int, spec: str | int) -> list[int]:
    """Sorted step indices (into 0..num_steps-1) kept by a respacing spec.

    "ddimN": the integer stride i for which range(0, num_steps, i) has exactly N elements
    (DDIM's uniform striding; "ddim25" of 1000 -> 0, 40, ..., 960).
    "a,b,c": split the steps into len(counts) near-equal sections (the first num_steps % n
    sections one longer) and take count evenly spaced steps from each, using a fractional
    stride (size-1)/(count-1) rounded to the nearest index ("250" of 1000 -> 0, 4, 8, ..., 995, 999).
    """
    spec = str(spec).strip()
    if spec.startswith("ddim"):
        want = int(spec[len("ddim") :])
        for stride in range(1, num_steps):
            if len(range(0, num_steps, stride)) == want:
                return list(range(0, num_steps, stride))
        raise ValueError(f"cannot make exactly {want} steps from {num_steps} with an integer stride")
    counts = [int(c) for c in spec.split(",")]
    size_per, extra = divmod(num_steps, len(counts))
    start, kept = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if not 1 <= count <= size:
            raise ValueError(f"cannot take {count} steps from a section of {size} steps")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        # Python's round (half to even) on the accumulated float, as the reference does.
        cur = 0.0
        for _ in range(count):
            kept.append(start + round(cur))
            cur += stride
        start += size
    kept = sorted(set(kept))
    if kept == [0] and num_steps > 1:
        # One step at t = 0: the sampler would start from pure noise at the step whose posterior
        # variance is 0 (log 0 = -inf in the learned-range variance, eq. 15), i.e. return noise.
        raise ValueError(
            f"respacing {spec!r} keeps only t = 0, where sampling would start from pure "
            "noise and never leave it: take 2 steps or more"
        )
    return kept


def respace(schedule: Schedule, spec: str | int) -> Schedule:
    """Keep a subset of steps; the new betas preserve alpha_bar at the kept steps.

    beta'_k = 1 - alpha_bar(t_k) / alpha_bar(t_{k-1}) (alpha_bar before the first kept step = 1),
    so q(x_{t_k} | x_0) is unchanged. "" or None returns the schedule unchanged.
    """
    if spec is None or str(spec).strip() == "":
        return schedule
    return keep_timesteps(schedule, space_timesteps(len(schedule), spec))


def keep_timesteps(schedule: Schedule, kept) -> Schedule:
    """The schedule of the steps ``kept`` (sorted, distinct indices into ``schedule``), with
    alpha_bar preserved at each: beta'_k = 1 - alpha_bar(t_k) / alpha_bar(t_{k-1})."""
    kept = np.asarray(kept, dtype=np.int64)
    if kept.ndim != 1 or len(kept) == 0 or (np.diff(kept) <= 0).any():
        raise ValueError(f"kept steps must be a sorted, non-empty list of distinct indices, got {kept.tolist()}")
    alpha_bar = schedule.alphas_cumprod[kept]
    alpha_bar_prev = np.append(1.0, alpha_bar[:-1])
    betas = 1.0 - alpha_bar / alpha_bar_prev
    return Schedule(betas, schedule.timesteps[kept], schedule.num_timesteps_original)


def step_sigmas(schedule: Schedule) -> np.ndarray:
    """sigma_k = sqrt((1 - alpha_bar) / alpha_bar) of each step's ORIGINAL timestep (float64 [K]).

    Respacing keeps alpha_bar at the kept timesteps (:func:`respace`), so this is the noise level of
    ``schedule.timesteps[k]`` in the training schedule: the sigma of the variance-exploding view
    x_t / sqrt(alpha_bar_t) = x_0 + sigma_t eps that guidance intervals are written in (EDM units).
    """
    alpha_bar = schedule.alphas_cumprod
    return np.sqrt((1.0 - alpha_bar) / alpha_bar)


# --- step schedules of the ODE solvers (adm.sampling.solvers) ----------------------------------
#
# ADM is a discrete-time model: the network only knows t in 0..T-1. A schedule that places its
# nodes by a continuous noise level (logSNR lambda = -log sigma, or Karras' sigma^(1/rho)) maps
# each node to the training timestep NEAREST IN log sigma (k-diffusion's DiscreteSchedule
# .sigma_to_t with quantize=True), and the solver then uses that timestep's own alpha_bar. So the
# ODE is integrated exactly between noise levels the network was trained at, the network and
# the classifier see integer t, and every table indexed by original timestep (guidance
# intervals) holds. sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) (the VE view, EDM's sigma).

STEP_SCHEDULES = ("uniform", "logsnr", "karras")


def step_schedule(schedule: Schedule, kind: str, steps: int, rho: float = 7.0) -> Schedule:
    """``steps`` solver nodes of an un-respaced ``schedule``, from t = T-1 down to t = 0.

    "uniform": uniform in the original timestep t (the reference's respacing ``str(steps)``:
    0, ..., T-1 by a fractional stride; DPM-Solver's "time uniform").
    "logsnr": uniform in lambda = log(alpha/sigma) between lambda(T-1) and lambda(0) (Lu et al.
    2022a, the order-2/3 recommendation of DPM-Solver Sec. 3.4).
    "karras": sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho
    (Karras et al. 2022 Eq. 5, rho = 7), sigma_max = sigma(T-1), sigma_min = sigma(0).
    Nodes that fall on the same timestep are refused (ValueError): a schedule that silently took
    fewer network evaluations than asked would misplace a point on a cost-quality curve.
    """
    if kind not in STEP_SCHEDULES:
        raise ValueError(f"unknown step schedule {kind!r}; expected one of {list(STEP_SCHEDULES)}")
    if len(schedule.timesteps) != schedule.num_timesteps_original:
        raise ValueError("step_schedule takes the un-respaced training schedule")
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or not 2 <= steps <= len(schedule):
        raise ValueError(f"a solver takes 2..{len(schedule)} steps, got {steps!r}")
    if kind == "uniform":
        return respace(schedule, str(steps))
    log_sigma = 0.5 * np.log((1.0 - schedule.alphas_cumprod) / schedule.alphas_cumprod)  # increasing in t
    lo, hi = log_sigma[0], log_sigma[-1]
    if kind == "logsnr":
        targets = np.linspace(hi, lo, steps)  # lambda = -log sigma uniform <=> log sigma uniform
    else:
        ramp = np.linspace(0.0, 1.0, steps)
        s_max, s_min = np.exp(hi) ** (1.0 / rho), np.exp(lo) ** (1.0 / rho)
        targets = rho * np.log(s_max + ramp * (s_min - s_max))
    # nearest timestep in log sigma (log_sigma is sorted: the neighbours of searchsorted)
    right = np.clip(np.searchsorted(log_sigma, targets), 1, len(log_sigma) - 1)
    left = right - 1
    nearest = np.where(targets - log_sigma[left] <= log_sigma[right] - targets, left, right)
    kept = np.unique(nearest)
    if len(kept) != steps:
        raise ValueError(
            f"{kind} schedule of {steps} steps maps to only {len(kept)} distinct timesteps of {len(schedule)}: "
            f"take fewer steps"
        )
    return keep_timesteps(schedule, kept)
