"""Shard bookkeeping and the `merge` program: numpy only, so merging never pays torch's import.

Shard k of n covers the global sample indices [k·N//n, (k+1)·N//n); every shard file carries
its `indices`, and the merge checks that the union is exactly 0..N-1, each index once.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from adm.data.datasets import save_npz
from adm.fileio import write_json


class ShardError(ValueError):
    """A shard set that does not merge into exactly the samples 0..N-1."""


def shard_range(num_samples: int, shard: int, num_shards: int) -> range:
    """Global indices of shard k of n: [k·N//n, (k+1)·N//n)."""
    return range(shard * num_samples // num_shards, (shard + 1) * num_samples // num_shards)


def _read_shard(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not path.is_file():
        raise ShardError(f"shard not found: {path}")
    try:
        with np.load(path) as f:
            missing = [k for k in ("arr_0", "arr_1", "indices") if k not in f]
            if missing:
                raise ShardError(f"{path}: not a sample shard (missing {', '.join(missing)})")
            images, labels, idx = f["arr_0"], f["arr_1"], f["indices"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        if isinstance(e, ShardError):
            raise
        raise ShardError(f"{path}: truncated or unreadable shard ({type(e).__name__}: {e})") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ShardError(f"{path}: arr_0 must be uint8 [n,H,W,3], got {images.dtype} {list(images.shape)}")
    if not (len(images) == len(labels) == len(idx)) or labels.ndim != 1 or idx.ndim != 1:
        raise ShardError(f"{path}: arr_0/arr_1/indices lengths differ ({len(images)}/{len(labels)}/{len(idx)})")
    for name, a in (("arr_1 (labels)", labels), ("indices", idx)):
        if a.dtype.kind not in "iu":  # a float index 2.7 names no sample; a float label no class
            raise ShardError(f"{path}: {name} must be integers, got {a.dtype}")
    return images, labels, idx


def _sidecar_classes(path: Path) -> int | None:
    """num_classes recorded by `sample` in the JSON beside a shard (None when absent)."""
    try:
        value = json.loads(path.with_suffix(".json").read_text()).get("num_classes")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _check_labels(path: Path, labels: np.ndarray, num_classes: int | None) -> None:
    if len(labels) and labels.min() < 0:
        raise ShardError(f"{path}: label {labels.min()} is negative")
    if num_classes is not None and len(labels) and labels.max() >= num_classes:
        raise ShardError(f"{path}: label {labels.max()} is outside the {num_classes} classes 0..{num_classes - 1}")


def merge_shards(shards, out, num_samples: int, progress: bool = True, num_classes: int | None = None) -> dict:
    """Concatenate shards in global-index order; every index 0..N-1 must appear exactly once.

    Labels must lie in 0..num_classes-1; num_classes defaults to what each shard's JSON records.
    """
    if not shards:
        raise ShardError("no shards given")
    if num_classes is not None and num_classes < 1:
        raise ShardError(f"--num-classes must be >= 1, got {num_classes}")
    parts, owner = [], {}
    for p in tqdm([Path(s) for s in shards], desc="merge", unit="shard", disable=not progress):
        images, labels, idx = _read_shard(p)
        _check_labels(p, labels, num_classes if num_classes is not None else _sidecar_classes(p))
        if parts and images.shape[1:] != parts[0][0].shape[1:]:
            raise ShardError(f"{p}: images are {list(images.shape[1:])}, other shards {list(parts[0][0].shape[1:])}")
        for i in idx.tolist():
            if i in owner:
                raise ShardError(f"sample index {i} appears twice ({owner[i]} and {p})")
            owner[i] = p
        parts.append((images, labels, idx))
    idx = np.concatenate([p[2] for p in parts])
    if idx.min() < 0 or idx.max() >= num_samples:
        raise ShardError(f"shard indices span {idx.min()}..{idx.max()}, outside 0..{num_samples - 1}")
    if len(idx) != num_samples:
        missing = sorted(set(range(num_samples)) - set(idx.tolist()))
        raise ShardError(
            f"{len(missing)} of {num_samples} sample indices missing (first: {missing[:5]}); "
            f"a shard is absent or incomplete"
        )
    order = np.argsort(idx, kind="stable")
    images = np.concatenate([p[0] for p in parts])[order]
    labels = np.concatenate([p[1] for p in parts])[order].astype(np.int64)
    save_npz(out, images, labels)
    summary = {"n": num_samples, "shards": [str(s) for s in shards], "image_shape": list(images.shape[1:])}
    write_json(Path(out).with_suffix(".json"), {"command": "merge", **summary})
    return summary
