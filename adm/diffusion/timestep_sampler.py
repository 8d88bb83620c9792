"""Which step index k each training example gets (IDDPM Sec. 3.3, importance sampling).

Both samplers draw with an explicit ``torch.Generator`` so a training run is reproducible from
its seed. ``sample`` returns the step indices k and the importance weights 1 / (K p_k), which
keep the loss an unbiased estimate of the uniform-t objective.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["UniformSampler", "LossAwareSampler", "make_timestep_sampler"]


class UniformSampler:
    """k ~ Uniform{0, ..., K-1}; every weight is 1."""

    def __init__(self, num_timesteps: int):
        self.num_timesteps = int(num_timesteps)

    def weights(self) -> np.ndarray:
        return np.ones(self.num_timesteps, dtype=np.float64)

    def sample(self, batch_size: int, generator: torch.Generator | None = None, device="cpu"):
        """(k int64 [B], weights float32 [B]) drawn with ``generator`` (CPU)."""
        p = torch.from_numpy(self.weights() / self.weights().sum())
        k = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        weights = 1.0 / (len(p) * p[k])
        return k.to(device), weights.float().to(device)

    def update(self, k: Sequence[int] | torch.Tensor, losses: Sequence[float] | torch.Tensor) -> None:
        """Uniform sampling ignores the losses."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class LossAwareSampler(UniformSampler):
    """IDDPM's "loss-second-moment" sampler: p_k ∝ sqrt(E[L_k^2]), mixed with uniform.

    Keeps the last ``history_per_term`` losses of every k; until every k has a full history it
    samples uniformly. In data-parallel training call ``update`` with the losses of ALL ranks
    (all-gathered) so the weights stay identical everywhere.
    """

    def __init__(self, num_timesteps: int, history_per_term: int = 10, uniform_prob: float = 0.001):
        super().__init__(num_timesteps)
        self.history_per_term = history_per_term
        self.uniform_prob = uniform_prob
        self.loss_history = np.zeros((self.num_timesteps, history_per_term), dtype=np.float64)
        self.loss_counts = np.zeros(self.num_timesteps, dtype=np.int64)

    def warmed_up(self) -> bool:
        return bool((self.loss_counts == self.history_per_term).all())

    def weights(self) -> np.ndarray:
        if not self.warmed_up():
            return np.ones(self.num_timesteps, dtype=np.float64)
        w = np.sqrt(np.mean(self.loss_history**2, axis=-1))
        w = w / w.sum()
        # A little uniform mass so that no k ever gets probability 0 (weights stay finite).
        return w * (1.0 - self.uniform_prob) + self.uniform_prob / len(w)

    def update(self, k, losses) -> None:
        """Append each loss to its k's history (a FIFO of the last ``history_per_term``)."""
        for t, loss in zip(torch.as_tensor(k).tolist(), torch.as_tensor(losses).tolist()):
            if self.loss_counts[t] == self.history_per_term:
                self.loss_history[t, :-1] = self.loss_history[t, 1:]
                self.loss_history[t, -1] = loss
            else:
                self.loss_history[t, self.loss_counts[t]] = loss
                self.loss_counts[t] += 1

    def state_dict(self) -> dict:
        return {"loss_history": self.loss_history.copy(), "loss_counts": self.loss_counts.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.loss_history = np.asarray(state["loss_history"], dtype=np.float64).copy()
        self.loss_counts = np.asarray(state["loss_counts"], dtype=np.int64).copy()


def make_timestep_sampler(name: str, num_timesteps: int) -> UniformSampler:
    """ "uniform" or "loss-second-moment" (the names of the reference's --schedule_sampler)."""
    if name == "uniform":
        return UniformSampler(num_timesteps)
    if name == "loss-second-moment":
        return LossAwareSampler(num_timesteps)
    raise ValueError(f"unknown schedule sampler {name!r}; expected 'uniform' or 'loss-second-moment'")
