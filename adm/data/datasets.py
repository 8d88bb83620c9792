"""Datasets: the embedded digits demo, ADM's ImageNet folder layout, and the compact npz format.

The npz format at every seam (OpenAI's): `arr_0` uint8 [N, H, W, 3] (NHWC, RGB), `arr_1` int64 [N].
Training reads uint8 arrays and converts a batch to float in [-1, 1] (x / 127.5 - 1), as ADM does.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from adm.fileio import atomic_write

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png")


class DataError(ValueError):
    """A user-facing problem with a dataset (missing, unreadable, empty, wrong size)."""


# ----------------------------------------------------------------------------- npz files


def save_npz(path, images: np.ndarray, labels: np.ndarray, **extra) -> None:
    """Write `arr_0` (uint8 NHWC) and `arr_1` (int64) atomically (temp file + os.replace)."""
    atomic_write(
        path,
        lambda f: np.savez(
            f, arr_0=np.ascontiguousarray(images, np.uint8), arr_1=np.asarray(labels, np.int64), **extra
        ),
    )


def load_npz(path, image_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read (images uint8 [N,H,W,3], labels int64 [N]); one clear DataError for any problem."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"dataset file not found: {path}")
    try:
        with np.load(path) as f:
            images, labels = f["arr_0"], f["arr_1"] if "arr_1" in f else None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"cannot read dataset {path}: {e}") from None
    check_dataset(path, images, labels, image_size)
    return images, labels.astype(np.int64)


def check_dataset(path, images: np.ndarray, labels: np.ndarray | None, image_size: int | None) -> None:
    """The user-facing checks of a training set (in RAM or memory-mapped): one DataError each."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"{path}: arr_0 must be uint8 [N,H,W,3], got {images.dtype} {list(images.shape)}")
    if len(images) == 0:
        raise DataError(f"{path}: the dataset is empty")
    if labels is None:
        raise DataError(f"{path}: no labels (arr_1); class-conditional training needs them")
    if labels.shape != (len(images),):
        raise DataError(f"{path}: arr_1 has shape {list(labels.shape)}, expected [{len(images)}]")
    if image_size is not None and images.shape[1:3] != (image_size, image_size):
        raise DataError(
            f"{path}: images are {images.shape[1]}x{images.shape[2]} but the model preset "
            f"expects {image_size}x{image_size}"
        )


def to_float(images_uint8: np.ndarray, flips: np.ndarray | None = None, device=None):
    """uint8 NHWC → float32 NCHW tensor in [-1, 1] on `device`; `flips[i]` mirrors image i left-right.

    The uint8 batch goes to the device first (a quarter of float32's bytes) and is converted
    there; the arithmetic is ADM's x / 127.5 - 1 on every device, in place (no extra copies).
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images_uint8)).to(device).permute(0, 3, 1, 2).float()
    if flips is not None and flips.any():
        f = torch.from_numpy(np.asarray(flips, bool)).to(x.device)
        x[f] = x[f].flip(-1)
    return x.div_(127.5).sub_(1.0)


# ----------------------------------------------------------------------------- digits demo


def load_digits_rgb() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 1,797 real 8×8 handwritten digits as RGB uint8 [N,8,8,3] and int64 labels.

    The originals are 4-bit intensities 0..16 (ink = high); we map v → round(v · 255 / 16), so
    0 → 0 (black background), 16 → 255 (white ink), and copy the gray channel to R, G and B.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    gray = np.round(d.images.astype(np.float64) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1), d.target.astype(np.int64)


def stratified_split(labels: np.ndarray, heldout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic per-class split: round(fraction · n_c) of each class c is held out."""
    if not 0.0 <= heldout_fraction < 1.0:
        raise DataError(f"heldout fraction must be in [0, 1), got {heldout_fraction}")
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        held.append(rng.permutation(idx)[: int(round(heldout_fraction * len(idx)))])
    held = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    train = np.setdiff1d(np.arange(len(labels)), held)
    return train, held


def prepare_digits(out_train, out_heldout, heldout_fraction: float = 0.2, seed: int = 0) -> dict:
    """Write the digits train / held-out npz files; returns a summary dict."""
    images, labels = load_digits_rgb()
    train, held = stratified_split(labels, heldout_fraction, seed)
    save_npz(out_train, images[train], labels[train])
    if out_heldout is not None:
        save_npz(out_heldout, images[held], labels[held])
    return {
        "dataset": "digits",
        "n_train": int(len(train)),
        "n_heldout": int(len(held)),
        "image_size": 8,
        "num_classes": 10,
        "pixel_mapping": "round(v*255/16), gray→RGB",
    }


# ----------------------------------------------------------------------------- ImageNet folders


def list_image_files(data_dir) -> list[Path]:
    """All jpg/jpeg/png files below `data_dir`, in sorted (deterministic) order, as ADM lists them."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data directory not found: {data_dir}")
    try:
        files = [p for p in sorted(data_dir.rglob("*")) if p.suffix[1:].lower() in IMAGE_EXTENSIONS and p.is_file()]
    except OSError as e:
        raise DataError(f"cannot read data directory {data_dir}: {e}") from None
    if not files:
        raise DataError(f"no images (.jpg/.jpeg/.png) found under {data_dir}")
    return files


def center_crop_arr(pil_image: Image.Image, image_size: int) -> np.ndarray:
    """ADM's resize: BOX-halve while the short side ≥ 2·size, BICUBIC to size, center crop."""
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    top, left = (arr.shape[0] - image_size) // 2, (arr.shape[1] - image_size) // 2
    return arr[top : top + image_size, left : left + image_size]


def read_image(path: Path, image_size: int) -> np.ndarray:
    """One file → uint8 [size, size, 3]; DataError naming the file if it cannot be decoded."""
    try:
        with Image.open(path) as im:
            im.load()
            return center_crop_arr(im.convert("RGB"), image_size)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None
