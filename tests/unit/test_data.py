"""Datasets: digits split, image listing and crop, npz checks, data order."""

import numpy as np
import pytest
from PIL import Image

from adm.data.datasets import (
    DataError,
    center_crop_arr,
    list_image_files,
    load_digits_rgb,
    load_npz,
    prepare_digits,
    read_image,
    save_npz,
    stratified_split,
)
from adm.training.draws import batch_indices


def test_digits_are_rgb_uint8_with_documented_mapping():
    images, labels = load_digits_rgb()
    assert images.shape == (1797, 8, 8, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and set(labels.tolist()) == set(range(10))
    assert images.min() == 0 and images.max() == 255  # 0 → 0, 16 → 255
    assert (images[..., 0] == images[..., 2]).all()  # gray copied to R, G, B
    from sklearn.datasets import load_digits

    np.testing.assert_array_equal(images[..., 0], np.round(load_digits().images * 255 / 16).astype(np.uint8))


def test_split_is_deterministic_stratified_and_disjoint(tmp_path):
    _, labels = load_digits_rgb()
    a_train, a_held = stratified_split(labels, 0.2, seed=0)
    b_train, b_held = stratified_split(labels, 0.2, seed=0)
    _, c_held = stratified_split(labels, 0.2, seed=1)
    np.testing.assert_array_equal(a_held, b_held)
    assert not np.array_equal(a_held, c_held)
    assert len(np.intersect1d(a_train, a_held)) == 0 and len(a_train) + len(a_held) == len(labels)
    per_class = np.bincount(labels[a_held], minlength=10) / np.bincount(labels, minlength=10)
    assert np.allclose(per_class, 0.2, atol=0.01)
    prepare_digits(tmp_path / "t.npz", tmp_path / "h.npz", 0.2, 0)
    prepare_digits(tmp_path / "t2.npz", tmp_path / "h2.npz", 0.2, 0)
    assert (tmp_path / "h.npz").read_bytes() == (tmp_path / "h2.npz").read_bytes()
    images, held_labels = load_npz(tmp_path / "h.npz", image_size=8)
    assert len(images) == len(a_held) and held_labels.dtype == np.int64


def _write_folder(root):
    """Nested folder of odd-sized images; classes by file-name prefix, as ImageNet's train set."""
    rng = np.random.default_rng(0)
    spec = [
        ("sub/b/dog_1.png", (40, 30)),
        ("cat_2.jpg", (20, 50)),
        ("ant_x.JPEG", (17, 17)),
        ("sub/cat_9.png", (64, 48)),
        ("sub/b/ant_y_z.png", (33, 70)),
        ("notes.txt", None),
    ]
    for name, size in spec:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if size is None:
            p.write_text("not an image")
        else:
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(p)
    return root


def test_image_files_are_listed_without_other_files(tmp_path):
    # the ImageNet-folder reader and its labels (synset folders) are tests/unit/test_diskdata.py
    files = list_image_files(_write_folder(tmp_path / "imgs"))
    assert len(files) == 5 and all(f.suffix.lower() != ".txt" for f in files)


def test_center_crop_halves_then_bicubic():
    im = Image.fromarray(np.zeros((300, 500, 3), np.uint8))
    assert center_crop_arr(im, 64).shape == (64, 64, 3)
    assert center_crop_arr(Image.fromarray(np.zeros((10, 7, 3), np.uint8)), 16).shape == (16, 16, 3)


def test_data_errors_are_clear(tmp_path):
    with pytest.raises(DataError, match="not found"):
        list_image_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        list_image_files(tmp_path / "empty")
    (tmp_path / "cat_1.png").write_bytes(b"garbage")  # an undecodable file in an ImageNet folder:
    with pytest.raises(DataError, match="cannot read image .*cat_1.png"):  # test_diskdata runs the CLI
        read_image(tmp_path / "cat_1.png", 8)
    save_npz(tmp_path / "d.npz", np.zeros((2, 8, 8, 3), np.uint8), np.zeros(2))
    with pytest.raises(DataError, match="8x8 but the model preset expects 16x16"):
        load_npz(tmp_path / "d.npz", image_size=16)
    (tmp_path / "trunc.npz").write_bytes((tmp_path / "d.npz").read_bytes()[:50])
    with pytest.raises(DataError, match="cannot read dataset"):
        load_npz(tmp_path / "trunc.npz")


def test_batch_order_is_a_function_of_seed_and_step():
    n, b = 10, 4
    a = [batch_indices(0, s, b, n)[0] for s in range(5)]
    again = [batch_indices(0, s, b, n)[0] for s in range(5)]
    assert all((x == y).all() for x, y in zip(a, again))
    stream = np.concatenate(a)  # 20 positions = 2 epochs, each a permutation of 0..9
    assert sorted(stream[:10].tolist()) == list(range(10)) and sorted(stream[10:].tolist()) == list(range(10))
    ranks = np.concatenate([batch_indices(0, 3, b, n, rank=r, world=2)[0] for r in range(2)])
    np.testing.assert_array_equal(ranks, a[3])
    assert not np.array_equal(batch_indices(1, 0, b, n)[0], a[0])
