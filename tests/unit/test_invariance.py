"""Shard and batch invariance of the `sample` program with networks whose output is NOT zero.

A freshly built UNet predicts exactly 0 (zero-initialised output convolution), so a sampler
driven by it ignores the network: a batch-dependent forward pass or a label sent to the wrong
sample leaves every byte unchanged. These tests save tiny-test networks with every parameter
randomised (conftest ``randomise_``) and check, for the program as a user runs it:

* the union of shards is byte-identical to an unsharded run at the same batch size (batches are
  aligned in global index space, so every sample is computed in the very same batch);
* a different batch size changes no image beyond float rounding: the network's float32 CPU
  kernels (MKL GEMM, oneDNN convolution) round differently for different batch sizes (~1e-7
  per forward pass), so bytes may move by at most one uint8 level on a few pixels, and the
  float images agree to ~1e-4. Byte equality across batch sizes holds only for a network whose
  output ignores its input, which is what the old zero-weight tests measured;
* a batch-dependent mutant (here: a model_fn that adds a fraction of the batch mean) fails both.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adm.nets.build import build_model
from adm.nets.checkpoints import save_model
from adm.nets.presets import get_preset
from adm.programs.sample import SampleConfig, merge_shards, sample_shard

torch.set_num_threads(1)
N = 7


@pytest.fixture(scope="module")
def nets(tmp_path_factory, randomise):
    """tiny-test UNet + classifier with random non-zero weights, saved as our training writes them."""
    d = tmp_path_factory.mktemp("nonzero-nets")
    unet = randomise(build_model(get_preset("tiny-test")), seed=10, std=0.1)
    clf = randomise(build_model(get_preset("tiny-test-classifier")), seed=11, std=0.1)
    save_model(unet, get_preset("tiny-test"), d / "ema.pt", diffusion=get_preset("tiny-test", "diffusion"))
    save_model(clf, get_preset("tiny-test-classifier"), d / "clf.pt")
    return d


def _cfg(nets, out, **kw):
    base = dict(
        model=str(nets / "ema.pt"),
        classifier=str(nets / "clf.pt"),
        out=str(out),
        num_samples=N,
        scale=20.0,
        respacing="4",
        batch_size=2,
        seed=3,
    )
    return SampleConfig(**{**base, **kw})


def _run(nets, path, **kw):
    """Run one shard of the sample program; (uint8 images NHWC, labels) as written to `path`."""
    sample_shard(_cfg(nets, path, **kw), progress=False)
    with np.load(path) as f:
        return f["arr_0"], f["arr_1"]


def _sharded(nets, tmp_path, num_shards, **kw):
    shards = [tmp_path / f"s{k}of{num_shards}.npz" for k in range(num_shards)]
    for k, path in enumerate(shards):
        sample_shard(_cfg(nets, path, shard=k, num_shards=num_shards, **kw), progress=False)
    merge_shards(shards, tmp_path / "merged.npz", N, progress=False)
    with np.load(tmp_path / "merged.npz") as f:
        return f["arr_0"], f["arr_1"]


def _rounding_only(a, b):
    """True when two uint8 image sets differ by float rounding only: <= 1 level on < 1% of values."""
    diff = np.abs(a.astype(int) - b.astype(int))
    return diff.max() <= 1 and (diff > 0).mean() < 1e-3


@pytest.mark.parametrize("respacing", ["4", "ddim3"])
def test_union_of_shards_equals_unsharded_run_bytewise(nets, tmp_path, respacing):
    full, labels = _run(nets, tmp_path / "all.npz", respacing=respacing)
    # 3 shards of 7 = [0, 1], [2, 3], [4, 5, 6]: at batch size 2 every batch is the unsharded run's
    merged, merged_labels = _sharded(nets, tmp_path, 3, respacing=respacing)
    assert full.tobytes() == merged.tobytes() and labels.tobytes() == merged_labels.tobytes()
    # the images depend on the network here (a zero network gives these bytes without looking at it)
    assert len(np.unique(full.reshape(N, -1), axis=0)) == N and full.std() > 20


@pytest.mark.parametrize("respacing", ["4", "ddim3"])
def test_batch_size_changes_images_by_rounding_only(nets, tmp_path, respacing):
    a, la = _run(nets, tmp_path / "b1.npz", respacing=respacing, batch_size=1)
    b, lb = _run(nets, tmp_path / "b7.npz", respacing=respacing, batch_size=7)
    assert la.tobytes() == lb.tobytes()
    assert _rounding_only(a, b), np.abs(a.astype(int) - b.astype(int)).max()


def test_image_i_is_the_sampler_run_on_seed_i_and_label_i(nets, tmp_path):
    """What the program writes for index i = the library sampler on sample i's own noise stream and
    label, alone in its batch: no label reaches the wrong sample, no noise comes from another index."""
    from adm.diffusion.schedule import make_schedule, respace
    from adm.nets.checkpoints import load_model
    from adm.sampling.guidance import classifier_guidance
    from adm.sampling.rng import randn_per_sample, sample_generators, sample_labels
    from adm.sampling.samplers import ddpm_sample, to_uint8

    images, labels = _run(nets, tmp_path / "s1.npz", shard=1, num_shards=2, batch_size=3)  # indices 3..6
    unet, _ = load_model(nets / "ema.pt")
    clf, _ = load_model(nets / "clf.pt")
    schedule = respace(make_schedule("linear", 1000), "4")
    for i in (3, 6):
        y = sample_labels(3, [i], 10)
        gens = sample_generators(3, [i])
        x0 = ddpm_sample(
            lambda x, t, yy: unet(x, t, yy),
            randn_per_sample(gens, (3, 16, 16)),
            schedule,
            y,
            classifier_guidance(clf, 20.0),
            gens,
        )
        assert labels[i - 3] == y.item()
        assert _rounding_only(to_uint8(x0), images[i - 3 : i - 2])


def test_a_batch_dependent_network_is_caught(nets, tmp_path, monkeypatch):
    """The checks above can fail: a forward pass that mixes the samples of a batch breaks both."""
    import adm.nets.unet as unet_mod

    full, _ = _run(nets, tmp_path / "all.npz")
    forward = unet_mod.UNet.forward
    monkeypatch.setattr(
        unet_mod.UNet,
        "forward",
        lambda self, x, t, y=None, **kw: forward(self, x + 0.2 * x.mean(0, keepdim=True), t, y, **kw),
    )
    mutant, _ = _run(nets, tmp_path / "m.npz")
    mutant_b1, _ = _run(nets, tmp_path / "m1.npz", batch_size=1)
    assert full.tobytes() != mutant.tobytes()
    assert not _rounding_only(mutant, mutant_b1)
