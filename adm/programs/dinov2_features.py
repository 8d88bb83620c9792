"""The `features-dinov2` program: DINOv2 ViT-L/14 CLS features of every image of an npz, for FD_DINOv2.

Streams `arr_0` in batches (memory-mapped when stored, decoded chunk by chunk when compressed), so
50k images never sit in RAM as floats; only the [N, 1024] float32 features are kept (200 MB at
50k). Writes an npz: `features` float32 [N, 1024] and `meta` (a JSON string: network, weights
sha256, preprocessing, image count). The Fréchet distance and its bootstrap interval are computed
on the evaluator's side (`python -m evaluations.fd_features`), by the same numpy code as FID.

With a cache folder, features are kept under a key made of the images' and the weights' sha256,
FEATURES_VERSION and the torch version: the reference batch is run through the network once,
whichever run or config asks for it again.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from adm.data.datasets import DataError
from adm.data.ondisk import map_images
from adm.features.dinov2 import FEATURES_VERSION, VITL14, DinoV2Config, load_dinov2, preprocess
from adm.fileio import atomic_write, sha256_file
from adm.nets.checkpoints import CheckpointError

NETWORK = "dinov2-vitl14"


def _compressed_batches(path: Path, batch_size: int) -> tuple[int, Iterator[np.ndarray]]:
    """`arr_0` of a compressed npz, decoded sequentially `batch_size` images at a time."""
    zf = zipfile.ZipFile(path)
    f = zf.open("arr_0.npy")
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    shape, fortran, dtype = readers[np.lib.format.read_magic(f)](f)
    if dtype != np.uint8 or fortran or len(shape) != 4 or shape[-1] != 3:
        raise DataError(f"{path}: arr_0 must be uint8 [N,H,W,3], got {dtype} {list(shape)}")
    row = int(np.prod(shape[1:]))

    def batches():
        with zf, f:
            for start in range(0, shape[0], batch_size):
                n = min(batch_size, shape[0] - start)
                data = f.read(n * row)
                if len(data) != n * row:
                    raise DataError(f"{path}: arr_0 is truncated")
                yield np.frombuffer(data, np.uint8).reshape(n, *shape[1:])

    return shape[0], batches()


def image_batches(path, batch_size: int) -> tuple[int, Iterator[np.ndarray]]:
    """(number of images, iterator of uint8 [n, H, W, 3] batches) of `arr_0` in `path`."""
    path = Path(path)
    try:
        images = map_images(path)
    except DataError as e:
        if "compressed" not in str(e):
            raise
        return _compressed_batches(path, batch_size)
    return len(images), (np.asarray(images[s : s + batch_size]) for s in range(0, len(images), batch_size))


@torch.no_grad()
def compute_features(model, path, batch_size: int, device, progress: bool) -> np.ndarray:
    n, batches = image_batches(path, batch_size)
    out = np.empty((n, model.cfg.embed_dim), np.float32)
    done = 0
    for batch in tqdm(batches, total=-(-n // batch_size), unit="batch", desc=Path(path).name, disable=not progress):
        x = preprocess(batch, model.cfg.image_size).to(device)
        out[done : done + len(batch)] = model(x).float().cpu().numpy()
        done += len(batch)
    if not np.isfinite(out).all():
        raise ValueError(f"{path}: DINOv2 gave non-finite features; refusing to write them")
    return out


def check_lock(weights, sha256: str, lock) -> None:
    """The weights must be those whose sha256 the run's lock file recorded on download."""
    try:
        pinned = json.loads(Path(lock).read_text())["sha256"].lower()
    except (OSError, ValueError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{lock}: not a readable weights lock file ({e})") from None
    if sha256 != pinned:
        raise CheckpointError(
            f"{weights}: sha256 {sha256} differs from the {pinned} pinned in {lock}; "
            "delete the lock file to trust other weights"
        )


def write_features(path, features: np.ndarray, meta: dict) -> None:
    def write(f):
        buf = io.BytesIO()
        np.savez(buf, features=features, meta=np.array(json.dumps(meta, sort_keys=True)))
        f.write(buf.getbuffer())

    atomic_write(path, write)


def dinov2_features(
    images,  # npz with arr_0 uint8 [N, H, W, 3]
    weights,  # dinov2_vitl14_pretrain.pth (official key layout)
    out,  # npz to write: features float32 [N, 1024] + meta
    batch_size: int = 64,  # images per forward pass
    device: str = "cpu",
    progress: bool = True,
    cache_dir=None,  # content-addressed feature cache (None: off)
    cfg: DinoV2Config = VITL14,  # the architecture (tests use a tiny one)
    weights_lock=None,  # JSON {"sha256": ...} the weights must match (the workflow's provenance lock)
) -> dict:
    t0 = time.perf_counter()
    weights_sha256 = sha256_file(weights)
    if weights_lock is not None:
        check_lock(weights, weights_sha256, weights_lock)
    meta = {
        "network": NETWORK,
        "features": FEATURES_VERSION,
        "weights_sha256": weights_sha256,
        "images_sha256": sha256_file(images),
        "torch": torch.__version__.split("+")[0],
        **({} if cfg == VITL14 else {"config": repr(cfg)}),
    }
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:32]
    cached = Path(cache_dir) / "dinov2" / f"{key}.npz" if cache_dir else None
    if cached is not None and cached.is_file():
        with np.load(cached) as f:
            features, hit = f["features"], True
    else:
        model = load_dinov2(weights, device, cfg)
        features, hit = compute_features(model, images, batch_size, device, progress), False
    meta.update(num_images=len(features), images=str(images), cache_hit=hit)
    meta["seconds"] = round(time.perf_counter() - t0, 3)
    if cached is not None and not hit:
        write_features(cached, features, meta)
    write_features(out, features, meta)
    return meta
