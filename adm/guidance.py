"""Classifier guidance as a function transform (Dhariwal & Nichol 2021, Sec. 4).

``classifier_guidance(classifier, s)`` returns ``cond_fn(x_t, t_orig, y) = s * grad_x log p_phi(y | x_t)``.
The samplers use it as Algorithm 1 (DDPM: shift the mean by Sigma * cond_fn) and Algorithm 2
(DDIM: eps_hat = eps - sqrt(1 - alpha_bar_t) * cond_fn). The classifier is evaluated at the
ORIGINAL timestep t (it was trained on noisy x_t at t in 0..T-1), never at a respaced index.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["classifier_guidance", "CondFn"]

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
