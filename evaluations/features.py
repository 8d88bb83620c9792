"""Batched feature extraction with a prefetch thread, and a content-addressed feature cache.

The reference batch is the same for every guidance scale of a sweep, so its pool features,
statistics and k-NN radii are cached under a key made of the npz's and the graph's sha256, the
evaluator's algorithm version and the TensorFlow version: the reference is run through the
network once per sweep, and a change to any of them misses the cache instead of returning
stale numbers. Spatial features (for the sFID interval) are cached when they were asked for;
a hit that lacks them when they are asked for is a miss.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import sys
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from evaluations import manifold
from evaluations.atomic import atomic_path, clean_stale
from evaluations.errors import EvalError
from evaluations.graph import FeatureGraph
from evaluations.metrics import RunningMoments, feature_stats
from evaluations.npzio import ImageArray, iter_image_batches, sha256_file

STATS_KEYS = ("mu", "sigma", "mu_s", "sigma_s")
# Bump when the features, statistics or radii computed from the same inputs change.
ALGORITHM_VERSION = f"features-2/{manifold.VERSION}"


@dataclass(eq=False)
class FeatureSet:
    pool: np.ndarray  # float32 [N, D] pool_3 features (for IS and P&R)
    stats: dict[str, np.ndarray]  # mu, sigma (pool) and mu_s, sigma_s (spatial)
    spatial: np.ndarray | None = None  # float32 [N, h*w*7], kept only on request (sFID CI)


def default_batch_size(resolution: int) -> int:
    """Images per session.run. The graph resizes every image to 299x299 float32 (1 MB), so
    ~100 images keep the intermediate tensors within a few hundred MB while amortising the
    per-call overhead; very large inputs are capped by their own float32 size (~256 MB)."""
    per_image = resolution * resolution * 3 * 4
    return int(np.clip((256 << 20) // per_image, 16, 100))


def _prefetch(batches: Iterator[np.ndarray], depth: int = 2) -> Iterator[np.ndarray]:
    """Read and convert the next batches on a thread while TensorFlow (GIL released) computes."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def worker():
        try:
            for b in batches:
                q.put(b.astype(np.float32))
            q.put(done)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            q.put(exc)

    threading.Thread(target=worker, daemon=True).start()
    while (item := q.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


def compute_features(
    net: FeatureGraph,
    images: ImageArray,
    batch_size: int | None = None,
    keep_spatial: bool = False,
    prefetch: bool = True,
    progress: bool = False,
) -> FeatureSet:
    """Run every image through the graph once, accumulating the spatial moments on the fly."""
    batch_size = batch_size or default_batch_size(images.resolution)
    batches = iter_image_batches(images, batch_size)
    batches = _prefetch(batches) if prefetch else (b.astype(np.float32) for b in batches)
    if progress:
        from tqdm import tqdm

        batches = tqdm(
            batches, total=-(-images.num_images // batch_size), unit="batch", desc=images.path.name, leave=False
        )
    pool_parts, spatial_parts, moments = [], [], None
    for batch in batches:
        pool, spatial = net.run(batch)
        moments = moments or RunningMoments(spatial.shape[1])
        moments.update(spatial)
        pool_parts.append(pool)
        if keep_spatial:
            spatial_parts.append(spatial)
    pool = np.concatenate(pool_parts)
    if not np.isfinite(pool).all() or not np.isfinite(moments.s2).all():
        raise EvalError(
            f"{images.path}: the feature graph {net.loaded.path} gave non-finite "
            "features; refusing to compute metrics from them"
        )
    mu, sigma = feature_stats(pool)
    mu_s, sigma_s = moments.finalize()
    stats = {"mu": mu, "sigma": sigma, "mu_s": mu_s, "sigma_s": sigma_s}
    return FeatureSet(pool, stats, np.concatenate(spatial_parts) if keep_spatial else None)


# --------------------------------------------------------------------------- cache
def cache_version() -> str:
    from evaluations.tfops import tf_version

    return f"{ALGORITHM_VERSION}/tf-{tf_version()}"


def cache_entry(cache_dir: Path, npz_path: Path, graph_sha256: str, version: str | None = None) -> Path:
    import hashlib

    tag = hashlib.sha256((version or cache_version()).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{sha256_file(npz_path)[:24]}-{graph_sha256[:16]}-{tag}"


def load_cached(entry: Path, keep_spatial: bool = False) -> FeatureSet | None:
    """The cached features, or None for a miss: absent, cached without the spatial features that
    are asked for, or damaged (a file deleted or truncated by hand): the caller recomputes."""
    needed = ["meta.json", "pool.npy", "stats.npz"] + (["spatial.npy"] if keep_spatial else [])
    if not all((entry / name).is_file() for name in needed):
        return None
    try:
        spatial = np.load(entry / "spatial.npy") if keep_spatial else None
        with np.load(entry / "stats.npz") as data:
            stats = {k: data[k] for k in STATS_KEYS}
        return FeatureSet(np.load(entry / "pool.npy"), stats, spatial)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def cache_write_failed(path: Path, exc: OSError) -> None:
    """The cache is best-effort: a failed write (a full disk) is one warning and the run goes on."""
    print(
        f"warning: could not write the feature cache {path} ({exc.strerror or exc}); nothing was kept "
        "there, the evaluation goes on without it",
        file=sys.stderr,
    )


def store_cached(entry: Path, feats: FeatureSet, meta: dict) -> None:
    """Write into a temporary directory, then rename it into place: all or nothing."""
    if entry.exists():  # an entry without spatial features, or a damaged one: replace it whole
        old = entry.with_name(entry.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(entry, old)
        except OSError:
            pass  # another process moved it first
        shutil.rmtree(old, ignore_errors=True)
    try:
        with atomic_path(entry) as tmp:
            tmp.mkdir(parents=True)
            np.save(tmp / "pool.npy", feats.pool)
            if feats.spatial is not None:
                np.save(tmp / "spatial.npy", feats.spatial)
            np.savez(tmp / "stats.npz", **feats.stats)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    except OSError as exc:
        if not (entry / "meta.json").exists():  # not a lost race with another process writing it
            cache_write_failed(entry, exc)


def cached_array(entry: Path | None, name: str, compute) -> np.ndarray:
    """``compute()`` once per cache entry (e.g. the reference's k-NN radii)."""
    if entry is None:
        return compute()
    path = entry / f"{name}.npy"
    if path.exists():
        return np.load(path)
    value = compute()
    try:
        with atomic_path(path, ".npy") as tmp:
            np.save(tmp, value)
    except OSError as exc:
        cache_write_failed(path, exc)
    return value


def features_for(
    net: FeatureGraph, images: ImageArray, cache_dir: Path | None, keep_spatial: bool = False, **kwargs
) -> tuple[FeatureSet, Path | None, bool]:
    """(features, cache entry or None, whether they came from the cache)."""
    if cache_dir is None:
        return compute_features(net, images, keep_spatial=keep_spatial, **kwargs), None, False
    entry = cache_entry(cache_dir, images.path, net.loaded.sha256)
    clean_stale(entry)
    cached = load_cached(entry, keep_spatial)
    if cached is not None:
        return cached, entry, True
    feats = compute_features(net, images, keep_spatial=keep_spatial, **kwargs)
    store_cached(
        entry,
        feats,
        {
            "npz": str(images.path),
            "graph_sha256": net.loaded.sha256,
            "num_images": images.num_images,
            "version": cache_version(),
        },
    )
    return feats, entry, False
