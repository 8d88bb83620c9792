"""The DINOv2 feature program: weights of another architecture refused in one line, features of a
streamed npz (stored or compressed) independent of the batch size, the content cache, and the
hand-over to the evaluator's FD (evaluations/fd_features.py, tested in tests/evaluator). Tiny
random networks only; parity with timm is in tests/parity/test_parity_dinov2.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from adm import cli
from adm.features.dinov2 import DinoV2, DinoV2Config, check_weights, load_dinov2
from adm.nets.checkpoints import CheckpointError
from adm.programs.dinov2_features import dinov2_features, image_batches

TINY = DinoV2Config(embed_dim=32, depth=1, num_heads=2, pretrain_size=70, image_size=56)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = DinoV2(TINY)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.1)
    path = tmp_path_factory.mktemp("w") / "tiny.pth"
    torch.save(net.state_dict(), path)
    return path


def test_other_architectures_are_refused_in_one_line(weights, tmp_path):
    state = torch.load(weights, weights_only=True)
    variants = {
        "registers": {**state, "register_tokens": torch.zeros(1, 4, 32)},  # dinov2_vitl14_reg
        "wider": {k: torch.zeros([2 * s if s == 32 else s for s in v.shape]) for k, v in state.items()},
        "unet": {"input_blocks.0.0.weight": torch.zeros(1)},
    }
    for name, bad in variants.items():
        with pytest.raises(CheckpointError) as err:
            check_weights(f"{name}.pth", bad, TINY)
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith(f"{name}.pth: not DINOv2 weights"), msg
    torch.save(variants["wider"], tmp_path / "wide.pth")
    with pytest.raises(CheckpointError, match="wide.pth: not DINOv2 weights"):
        load_dinov2(tmp_path / "wide.pth", cfg=TINY)
    assert load_dinov2(weights, cfg=TINY).cfg == TINY


def _images(tmp_path, n=7, size=12, compressed=False) -> Path:
    imgs = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    path = tmp_path / ("c.npz" if compressed else "s.npz")
    (np.savez_compressed if compressed else np.savez)(path, arr_0=imgs, arr_1=np.arange(n))
    return path


def test_streams_stored_and_compressed_npz_alike(tmp_path):
    stored, packed = _images(tmp_path), _images(tmp_path, compressed=True)
    for path in (stored, packed):
        n, batches = image_batches(path, 3)
        parts = list(batches)
        assert n == 7 and [len(b) for b in parts] == [3, 3, 1]
        assert np.array_equal(np.concatenate(parts), np.load(stored)["arr_0"])


def test_features_do_not_depend_on_batch_size_and_are_cached(weights, tmp_path):
    images = _images(tmp_path)
    a = dinov2_features(images, weights, tmp_path / "a.npz", 2, progress=False, cfg=TINY, cache_dir=tmp_path / "c")
    b = dinov2_features(images, weights, tmp_path / "b.npz", 5, progress=False, cfg=TINY, cache_dir=tmp_path / "c")
    assert not a["cache_hit"] and b["cache_hit"]
    fresh = dinov2_features(images, weights, tmp_path / "f.npz", 5, progress=False, cfg=TINY)
    fa, fb, ff = (np.load(tmp_path / f"{x}.npz")["features"] for x in "abf")
    assert fa.shape == (7, 32) and fa.dtype == np.float32
    assert np.array_equal(fa, fb)
    np.testing.assert_allclose(fa, ff, atol=1e-5)  # batch 2 vs 5: rounding only
    meta = json.loads(str(np.load(tmp_path / "f.npz")["meta"]))
    assert meta["network"] == "dinov2-vitl14" and meta["num_images"] == 7 and "config" in meta
    assert not fresh["cache_hit"]


def test_cli_refuses_a_checkpoint_of_another_network(tmp_path, capsys):
    torch.save({"input_blocks.0.0.weight": torch.zeros(1)}, tmp_path / "unet.pt")
    rc = cli.main(
        ["features-dinov2", "--images", str(_images(tmp_path)), "--weights", str(tmp_path / "unet.pt"),
         "--out", str(tmp_path / "o.npz"), "--no-progress"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "not DINOv2 weights" in err and "\n" not in err
    assert not (tmp_path / "o.npz").exists()


def test_weights_must_match_the_runs_lock(weights, tmp_path):
    from adm.programs.dinov2_features import sha256_file

    images, lock = _images(tmp_path), tmp_path / "dinov2.lock"
    lock.write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(CheckpointError, match="differs from the 0+ pinned in .*dinov2.lock"):
        dinov2_features(images, weights, tmp_path / "o.npz", progress=False, cfg=TINY, weights_lock=lock)
    assert not (tmp_path / "o.npz").exists()
    lock.write_text(json.dumps({"sha256": sha256_file(weights)}))
    dinov2_features(images, weights, tmp_path / "o.npz", progress=False, cfg=TINY, weights_lock=lock)
    assert (tmp_path / "o.npz").exists()
