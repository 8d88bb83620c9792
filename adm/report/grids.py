"""Sample grids: the same global sample indices (hence the same seeds and labels) at every scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from adm.fileio import atomic_write


def select_first(npz_path: str | Path, num: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The `num` samples with the smallest global indices: (images uint8 NHWC, labels, indices)."""
    with np.load(npz_path) as data:
        images = data["arr_0"]
        labels = data["arr_1"] if "arr_1" in data else np.full(len(images), -1)
        indices = data["indices"] if "indices" in data else np.arange(len(images))
    order = np.argsort(indices, kind="stable")[:num]
    return images[order], labels[order], indices[order]


def tile(images: np.ndarray, columns: int, tile_px: int, pad: int = 2) -> Image.Image:
    """Nearest-neighbour upscaled tiles on a white canvas (tiny demo images stay crisp)."""
    n, h, w, c = images.shape
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    scale = max(1, tile_px // max(h, w))
    th, tw = h * scale, w * scale
    canvas = np.full((rows * (th + pad) + pad, columns * (tw + pad) + pad, 3), 255, np.uint8)
    for i, img in enumerate(images):
        img = img if c == 3 else np.repeat(img[..., :1], 3, axis=-1)
        big = img.repeat(scale, axis=0).repeat(scale, axis=1)
        r, col = divmod(i, columns)
        y, x = pad + r * (th + pad), pad + col * (tw + pad)
        canvas[y : y + th, x : x + tw] = big
    return Image.fromarray(canvas)


def write_grid(npz_path: str | Path, out_png: str | Path, num: int = 64, columns: int = 8, tile_px: int = 64) -> Path:
    """Grid of the first `num` samples (by global index) of a merged samples npz."""
    images, _, _ = select_first(npz_path, num)
    if len(images) == 0:
        raise ValueError(f"{npz_path}: no samples")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    grid = tile(images, columns, tile_px)
    atomic_write(out_png, lambda f: grid.save(f, format="PNG"))  # a full disk: one line (adm.fileio)
    return out_png
