"""Reference batches: build the demo one from held-out images, or fetch OpenAI's.

    python -m evaluations.reference --build-from HELDOUT.npz --out REF.npz [--graph G.pb]
    python -m evaluations.reference --download imagenet128 [--cache-dir DIR]

A built batch holds ``arr_0`` (uint8 NHWC) and, when a graph is given, the precomputed
``mu, sigma, mu_s, sigma_s`` in OpenAI's layout, so it is interchangeable with theirs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from evaluations.atomic import atomic_path
from evaluations.download import REFERENCE_URLS, default_cache_dir, download
from evaluations.errors import EvalError
from evaluations.npzio import iter_image_batches, npz_keys, open_images

STATISTICS = ("mu", "sigma", "mu_s", "sigma_s")  # OpenAI's precomputed pool_3 / spatial statistics


def build_reference(heldout, out, graph=None, threads: int = 0) -> dict:
    """Copy the held-out images (and labels) into ``out``; add statistics if ``graph`` is set."""
    images = open_images(heldout)
    if images.num_images == 0:  # np.concatenate of no batches would end in a traceback
        raise EvalError(f"{images.path}: holds 0 images; a reference batch needs at least one")
    arrays = {"arr_0": np.concatenate(list(iter_image_batches(images, 4096)))}
    with np.load(images.path) as data:
        if "arr_1" in data.files:
            arrays["arr_1"] = data["arr_1"]
    if "arr_1" in arrays and arrays["arr_1"].shape != (images.num_images,):
        raise EvalError(
            f"{images.path}: {images.num_images} images but labels arr_1 of shape "
            f"{arrays['arr_1'].shape}; need one label per image"
        )
    if graph is not None:
        from evaluations.features import compute_features
        from evaluations.graph import FeatureGraph, load_graph

        net = FeatureGraph(load_graph(graph), threads=threads)
        try:
            arrays.update(compute_features(net, images).stats)
        finally:
            net.close()
    with atomic_path(out, ".npz") as tmp:
        np.savez(tmp, **arrays)
    return {k: v.shape for k, v in arrays.items()}


def check_reference_batch(path, resolution: int) -> None:
    """Refuse a reference batch that cannot serve samples of ``resolution``, from the npz headers
    only (no image is read): arr_0 uint8 NHWC at that size, and its statistics all or none."""
    images = open_images(path)
    if images.num_images == 0:
        raise EvalError(f"{images.path}: holds 0 images; a reference batch needs at least one")
    if images.resolution != resolution:
        size = images.resolution
        raise EvalError(
            f"{images.path}: a reference batch of {size}x{size} images; this run compares "
            f"{resolution}x{resolution} samples"
        )
    have = [k for k in STATISTICS if k in npz_keys(path)]
    if have and len(have) != len(STATISTICS):
        missing = [k for k in STATISTICS if k not in have]
        raise EvalError(f"{images.path}: has statistics {have} but not {missing}; they come as {', '.join(STATISTICS)}")


def fetch_reference(name: str, cache_dir=None, expected_sha256: str | None = None) -> Path:
    if name not in REFERENCE_URLS:
        raise EvalError(f"unknown reference batch {name!r}; known: {sorted(REFERENCE_URLS)}")
    return download(REFERENCE_URLS[name], cache_dir or default_cache_dir(), expected_sha256)


EXAMPLES = """\
examples:
  # OpenAI's ImageNet 128x128 reference batch, downloaded once into ~/.cache/adm-bench
  python -m evaluations.reference --download imagenet128

  # a reference batch from held-out images, with statistics of the demo feature network
  python -m evaluations.reference --build-from data/heldout.npz --out reference/ref.npz \\
      --graph featurenet/graph.pb
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m evaluations.reference",
        description=__doc__.split("\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--build-from", help="held-out npz (arr_0 uint8 NHWC, optional arr_1)")
    mode.add_argument("--download", choices=sorted(REFERENCE_URLS), help="OpenAI reference batch")
    ap.add_argument("--out", help="output npz for --build-from")
    ap.add_argument("--graph", help="also store mu/sigma/mu_s/sigma_s computed with this graph")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--cache-dir", help="download directory (default $ADM_BENCH_CACHE or ~/.cache/adm-bench)")
    ap.add_argument("--sha256", help="expected sha256 of the downloaded file")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        if args.build_from:
            if not args.out:
                raise EvalError("--build-from needs --out")
            shapes = build_reference(args.build_from, args.out, args.graph, args.threads)
            print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in shapes.items()))
        else:
            print(fetch_reference(args.download, args.cache_dir, args.sha256))
    except EvalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
