"""Per-sample randomness: sample i's noise and label depend on (base_seed, i) only.

Every global sample index i gets its own ``torch.Generator``, so the whole trajectory of sample i
(initial x_T and every per-step noise) is the same whatever the batch size, shard count or number
of devices. Seeds are mixed with numpy's ``SeedSequence`` (a hash of the entropy words), so nearby
(base_seed, i) pairs give unrelated streams. Noise and labels use distinct stream ids, so drawing
labels never shifts the noise and vice versa.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["sample_generators", "randn_per_sample", "sample_labels", "per_sample_seed"]

# Stream ids appended to the SeedSequence entropy: one stream per purpose.
_NOISE_STREAM = 0
_LABEL_STREAM = 1
_BALANCED_STREAM = 2


def per_sample_seed(base_seed: int, index: int, stream: int = _NOISE_STREAM) -> int:
    """A 63-bit seed that is a hash of (base_seed, index, stream) only."""
    if base_seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got {base_seed}, {index}")
    state = np.random.SeedSequence([base_seed, index, stream]).generate_state(1, dtype=np.uint64)
    return int(state[0]) & ((1 << 63) - 1)


def sample_generators(base_seed: int, indices: Sequence[int], device="cpu") -> list[torch.Generator]:
    """One generator per global sample index. CPU generators (the default) give the same
    numbers on every machine; CUDA generators are faster but their stream differs from CPU's."""
    gens = []
    for i in indices:
        g = torch.Generator(device=device)
        g.manual_seed(per_sample_seed(int(base_seed), int(i)))
        gens.append(g)
    return gens


def randn_per_sample(generators: Sequence[torch.Generator], shape_per_sample, device="cpu") -> torch.Tensor:
    """(N, *shape) standard normals, row i drawn from generators[i] (on the generator's own
    device, then moved to ``device``, so CPU generators give device-independent noise)."""
    shape = tuple(shape_per_sample)
    rows = [torch.randn(shape, generator=g, device=g.device) for g in generators]
    return torch.stack(rows).to(device)


def sample_labels(base_seed: int, indices: Sequence[int], num_classes: int, mode: str = "uniform") -> torch.Tensor:
    """int64 class labels y_i that depend on (base_seed, i) only.

    "uniform": y_i ~ Uniform{0..num_classes-1}, an independent draw per index (the paper's
    sampling of random ImageNet classes).
    "balanced": indices are grouped in blocks of num_classes consecutive indices
    (block b = i // num_classes); each block holds every class exactly once, in an order shuffled
    by a permutation seeded from (base_seed, b). Any N that is a multiple of num_classes is thus
    exactly class-balanced, and a contiguous shard still only needs its own indices.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if mode == "uniform":
        labels = [_uniform_label(base_seed, int(i), num_classes) for i in indices]
    elif mode == "balanced":
        perms: dict[int, np.ndarray] = {}
        labels = []
        for i in map(int, indices):
            block = i // num_classes
            if block not in perms:
                rng = np.random.default_rng(per_sample_seed(base_seed, block, _BALANCED_STREAM))
                perms[block] = rng.permutation(num_classes)
            labels.append(int(perms[block][i % num_classes]))
    else:
        raise ValueError(f"unknown label mode {mode!r}; expected 'uniform' or 'balanced'")
    return torch.tensor(labels, dtype=torch.int64).reshape(-1)


def _uniform_label(base_seed: int, index: int, num_classes: int) -> int:
    rng = np.random.default_rng(per_sample_seed(base_seed, index, _LABEL_STREAM))
    return int(rng.integers(num_classes))
