"""Per-sample randomness: everything about sample i depends on (base_seed, i) only."""

import numpy as np
import pytest
import torch

from adm.sampling.rng import per_sample_seed, randn_per_sample, sample_generators, sample_labels


def test_generators_depend_on_seed_and_index_only():
    a = randn_per_sample(sample_generators(123, range(6)), (2, 3))
    b = randn_per_sample(sample_generators(123, [4, 5]), (2, 3))
    assert a.shape == (6, 2, 3) and torch.equal(a[4:], b)
    rows = randn_per_sample(sample_generators(123, range(64)), (4,))
    assert len({tuple(r.tolist()) for r in rows}) == 64  # no two indices share a stream
    c = randn_per_sample(sample_generators(124, range(6)), (2, 3))
    assert not torch.equal(a, c)
    # consecutive draws continue each sample's own stream
    gens = sample_generators(123, [2])
    first, second = randn_per_sample(gens, (2, 3)), randn_per_sample(gens, (2, 3))
    assert torch.equal(first[0], a[2]) and not torch.equal(first, second)


def test_seed_mixing():
    seeds = {per_sample_seed(b, i) for b in range(20) for i in range(50)}
    assert len(seeds) == 1000 and all(0 <= s < 2**63 for s in seeds)
    # the full 63 bits are used: with 31-bit seeds two of 50k samples share noise with p ~ 0.4
    assert max(seeds) >= 2**62
    assert per_sample_seed(0, 1) != per_sample_seed(1, 0)
    assert per_sample_seed(7, 3, stream=0) != per_sample_seed(7, 3, stream=1)  # noise vs labels
    with pytest.raises(ValueError):
        per_sample_seed(-1, 0)


def test_uniform_labels():
    labels = sample_labels(5, range(5000), 10, "uniform")
    assert labels.dtype == torch.int64 and labels.min() == 0 and labels.max() == 9
    counts = np.bincount(labels.numpy(), minlength=10)
    assert counts.min() > 400 and counts.max() < 600
    assert torch.equal(sample_labels(5, [17, 4000], 10), labels[[17, 4000]])
    assert not torch.equal(sample_labels(6, range(100), 10), labels[:100])


def test_balanced_labels():
    labels = sample_labels(9, range(35), 10, "balanced")
    for b in range(3):
        assert sorted(labels[10 * b : 10 * b + 10].tolist()) == list(range(10))
    assert labels[:10].tolist() != list(range(10))  # shuffled within a block
    assert torch.equal(sample_labels(9, range(13, 35), 10, "balanced"), labels[13:])
    assert torch.equal(sample_labels(9, range(35), 10, "balanced"), labels)
    with pytest.raises(ValueError, match="label mode"):
        sample_labels(9, range(3), 10, "sorted")
