"""Every random draw of training as a pure function of (seed, step, position): data order, flips,
timesteps, noise and label dropout. No draw depends on the rank count or the microbatch, so k
ranks see exactly the draws of one process and a resumed run those of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from adm.training import distributed as dist


def _seed(*words: int) -> int:
    """A 63-bit seed that is a pure function of the words (SeedSequence hashing)."""
    a, b = np.random.SeedSequence([int(w) for w in words]).generate_state(2)
    return (int(a) << 31) ^ int(b)


def batch_indices(seed: int, step: int, batch_size: int, n: int, rank: int = 0, world: int = 1):
    """(dataset indices, flip flags) of this rank's share of the global batch at `step`.

    The data stream is an endless concatenation of epoch permutations, epoch e shuffled by
    (seed, e); step s reads positions [s·B, (s+1)·B). Depends on (seed, step) only, so a resumed
    run sees exactly the batches of an uninterrupted one, with no data-loader state to save.
    """
    pos = step * batch_size + np.arange(batch_size, dtype=np.int64)
    epoch, offset = pos // n, pos % n
    idx = np.empty(batch_size, np.int64)
    for e in np.unique(epoch):
        perm = np.random.default_rng(_seed(seed, e, 1)).permutation(n)
        idx[epoch == e] = perm[offset[epoch == e]]
    flips = np.random.default_rng(_seed(seed, step, 2)).random(batch_size) < 0.5
    local = batch_size // world  # the same share as dist.share (rank order = batch order)
    sl = slice(rank * local, (rank + 1) * local)
    return idx[sl], flips[sl]


def step_draws(seed: int, step: int, batch_size: int, sampler, image_shape) -> tuple[torch.Tensor, ...]:
    """(k, importance weights, eps) of this rank's share of `step`'s global batch (CPU tensors).

    Every rank draws the whole batch's timesteps from one (seed, step) generator and keeps its
    share; each example's eps has its own (seed, step, position) generator. No draw depends on
    the rank count or the microbatch, so 2 ranks x B/2 see exactly the draws of 1 rank x B.
    """
    k, w = sampler.sample(batch_size, torch.Generator().manual_seed(_seed(seed, step, 3)))
    mine = dist.share(batch_size)
    eps = torch.stack(
        [
            torch.randn(tuple(image_shape), generator=torch.Generator().manual_seed(_seed(seed, step, j, 4)))
            for j in range(mine.start, mine.stop)
        ]
    )
    return k[mine], w[mine], eps


def label_dropout_mask(seed: int, step: int, batch_size: int, p: float, rank: int = 0, world: int = 1) -> np.ndarray:
    """bool [B / world]: which of this rank's images train with the null label at `step`.

    One (seed, step) generator draws the whole global batch's coin flips and each rank keeps
    its contiguous share (as the timesteps), so 2 ranks x B/2 or microbatches drop exactly the
    images 1 rank x B drops. Its own stream id: drawing it shifts no other draw.
    """
    drop = np.random.default_rng(_seed(seed, step, 5)).random(batch_size) < p
    local = batch_size // world
    return drop[rank * local : (rank + 1) * local]


def with_null_class(model_cfg, label_dropout: float):
    """The network config a run with this label dropout trains: with the null class when > 0."""
    if label_dropout <= 0:
        return model_cfg
    if model_cfg.num_classes is None:
        raise ValueError("--label-dropout needs a class-conditional model (this preset has no classes)")
    return dataclasses.replace(model_cfg, null_class=True)
