"""Likelihood terms of the variational bound (Ho et al. 2020, Sec. 3.3; IDDPM Sec. 2).

All functions work elementwise on tensors and return nats; callers divide by log(2) for bits.
"""

from __future__ import annotations

import math

import torch

__all__ = ["mean_flat", "normal_kl", "approx_standard_normal_cdf", "discretized_gaussian_log_likelihood"]


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension except the batch one: (N, ...) -> (N,)."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats (broadcasts)."""
    tensors = [a for a in (mean1, logvar1, mean2, logvar2) if isinstance(a, torch.Tensor)]
    if not tensors:
        raise TypeError("normal_kl needs at least one tensor argument")
    logvar1, logvar2 = (torch.as_tensor(v).to(tensors[0]) for v in (logvar1, logvar2))
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Phi(x) by the tanh approximation used by Ho et al.'s decoder (max abs error ~1e-4)."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x, *, means, log_scales) -> torch.Tensor:
    """log p(x) of 8-bit data under N(means, e^{2 log_scales}) integrated over each pixel bin.

    x is uint8 data rescaled to [-1, 1], so bins have half-width 1/255; the two edge bins extend
    to -inf / +inf so the 256 probabilities sum to one (Ho et al. Eq. 13).
    """
    if not x.shape == means.shape == log_scales.shape:
        raise ValueError(f"shapes differ: x {x.shape}, means {means.shape}, log_scales {log_scales.shape}")
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    # Clamp before the log so that far-away bins give a finite (very negative) value.
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_cdf_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))
