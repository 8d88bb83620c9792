"""Evaluate a sample batch against a reference batch: IS, FID, sFID, precision, recall.

    python -m evaluations.evaluator REF.npz SAMPLE.npz [--graph PATH | --cache-dir DIR]
        [--out metrics.json] [--feature-cache DIR] [--label-demo]

Same algorithm and printed wording as OpenAI's ``evaluations/evaluator.py``; on top of it a
feature cache, bootstrap confidence intervals and a JSON record. Numbers computed with the demo
feature network are marked ``feature_network: "demo"`` from a marker inside the graph itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from evaluations import manifold, metrics
from evaluations.download import GRAPH_URL, default_cache_dir, download
from evaluations.errors import EvalError
from evaluations.features import STATS_KEYS, cached_array, features_for
from evaluations.graph import FeatureGraph, load_graph
from evaluations.npzio import ImageArray, open_images, read_optional

K = metrics.PR_NEIGHBOURHOOD


def check_inputs(ref: ImageArray, sample: ImageArray) -> None:
    if ref.resolution != sample.resolution:
        raise EvalError(f"{sample.path}: images are {sample.resolution}x{sample.resolution} but "
                        f"the reference {ref.path} is {ref.resolution}x{ref.resolution}")
    for images in (ref, sample):
        if images.num_images <= K:
            raise EvalError(f"{images.path}: {images.num_images} images; precision/recall with "
                            f"k={K} needs at least {K + 1}")


def reference_stats(ref: ImageArray, computed: dict, pool_dim: int) -> tuple[dict, str]:
    """Precomputed mu/sigma/mu_s/sigma_s from the npz when present (as the reference does)."""
    stored = read_optional(ref.path, STATS_KEYS)
    if stored is None:
        return computed, "computed"
    if stored["mu"].shape != (pool_dim,) or stored["mu_s"].shape != computed["mu_s"].shape:
        raise EvalError(f"{ref.path}: stored statistics have dimension {stored['mu'].shape[0]}/"
                        f"{stored['mu_s'].shape[0]}, but this graph gives {pool_dim}/"
                        f"{computed['mu_s'].shape[0]}: they come from another feature network")
    return stored, "npz"


def reference_radii(entry: Path | None, pool: np.ndarray) -> np.ndarray:
    """k-NN radii of the reference, cached with its features: computed once per sweep."""
    return cached_array(entry, f"radii_k{K}",
                        lambda: manifold.manifold_radii(manifold.prepare(pool), K))


def resolve_graph(graph: str | None, cache_dir: str | None, expected_sha256: str | None):
    if graph is None:
        graph = download(GRAPH_URL, cache_dir or default_cache_dir(), expected_sha256)
    return load_graph(graph, expected_sha256)


def _timed(timings: dict, name: str, fn, *args, **kwargs):
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    timings[name] = round(time.perf_counter() - t0, 3)
    return result


def compute_metrics(ref_feats, ref_stats, sample_feats, weight, ref_radii_fn, timings,
                    bootstrap: int = 10, seed: int = 0, fid_method: str = "eigh", threads: int = 0):
    """Point values and bootstrap intervals (the reference side held fixed); ``threads`` caps
    the BLAS threads of the precision/recall distance GEMMs (0: all cores)."""
    s, r = sample_feats, ref_stats
    probs = metrics.softmax(s.pool @ weight)
    values = {
        "inception_score": _timed(timings, "inception_score", metrics.inception_score, probs),
        "fid": _timed(timings, "fid", metrics.frechet_distance, s.stats["mu"], s.stats["sigma"],
                      r["mu"], r["sigma"], fid_method),
        "sfid": _timed(timings, "sfid", metrics.frechet_distance, s.stats["mu_s"],
                       s.stats["sigma_s"], r["mu_s"], r["sigma_s"], fid_method),
    }
    ref_radii = _timed(timings, "ref_radii", ref_radii_fn)
    pr = _timed(timings, "precision_recall", metrics.precision_recall, ref_feats.pool, s.pool,
                ref_radii, threads=threads or None)
    values.update(precision=pr.precision, recall=pr.recall)
    t0 = time.perf_counter()
    ci = {
        "inception_score": metrics.inception_score_ci(probs, values["inception_score"],
                                                      bootstrap, seed),
        "fid": metrics.fid_ci(s.pool, r["mu"], r["sigma"], values["fid"], bootstrap, seed,
                              fid_method),
        "sfid": None if s.spatial is None else metrics.fid_ci(
            s.spatial, r["mu_s"], r["sigma_s"], values["sfid"], bootstrap, seed, fid_method),
        "precision": metrics.proportion_ci(pr.sample_in, max(bootstrap, 200), seed),
        "recall": metrics.proportion_ci(pr.ref_in, max(bootstrap, 200), seed),
    }
    timings["confidence_intervals"] = round(time.perf_counter() - t0, 3)
    return values, ci


def evaluate(ref_path, sample_path, graph=None, cache_dir=None, feature_cache=None,
             label_demo=False, graph_sha256=None, batch_size=None, threads=0, bootstrap=10,
             seed=0, fid_method="eigh", progress=False, log=print) -> dict:
    t_start, timings = time.perf_counter(), {}
    ref, sample = open_images(ref_path), open_images(sample_path)
    check_inputs(ref, sample)
    loaded = _timed(timings, "graph_load", resolve_graph, graph, cache_dir, graph_sha256)
    if label_demo and loaded.demo_label is None:
        raise EvalError(f"{loaded.path}: --label-demo given, but this is not the demo network")
    net = FeatureGraph(loaded, threads=threads)
    cache = Path(feature_cache) if feature_cache else None
    opts = {"batch_size": batch_size, "progress": progress}
    try:
        log("Computing reference batch activations...")
        ref_feats, ref_entry, ref_hit = _timed(timings, "ref_features", features_for, net, ref,
                                               cache, **opts)
        log("Computing/reading reference batch statistics...")
        ref_stats, stats_source = reference_stats(ref, ref_feats.stats, ref_feats.pool.shape[1])
        log("Computing sample batch activations...")
        sample_feats, _, sample_hit = _timed(timings, "sample_features", features_for, net,
                                             sample, cache, keep_spatial=bootstrap > 1, **opts)
        weight = net.logits_weight()
    finally:
        net.close()
    log("Computing evaluations...")
    values, ci = compute_metrics(ref_feats, ref_stats, sample_feats, weight,
                                 lambda: reference_radii(ref_entry, ref_feats.pool), timings,
                                 bootstrap, seed, fid_method, threads)
    timings["total"] = round(time.perf_counter() - t_start, 3)
    result = {
        "metrics": values, "ci": ci,
        "n_samples": sample.num_images, "n_ref": ref.num_images, "image_size": ref.resolution,
        "graph_sha256": loaded.sha256, "feature_network": loaded.feature_network,
        "label": loaded.demo_label, "ref": str(ref.path), "sample": str(sample.path),
        "ref_stats_source": stats_source, "cache_hits": {"ref": ref_hit, "sample": sample_hit},
        "settings": {"k": K, "is_split_size": metrics.IS_SPLIT_SIZE, "bootstrap": bootstrap,
                     "seed": seed, "fid_method": fid_method, "ci": "bootstrap normal, 95%"},
        "timings": timings,
    }
    return result


def print_metrics(result: dict, log=print) -> None:
    m = result["metrics"]
    log("Inception Score:", m["inception_score"])
    log("FID:", m["fid"])
    log("sFID:", m["sfid"])
    log("Precision:", m["precision"])
    log("Recall:", m["recall"])
    if result["label"]:
        log(f"Note: {result['label']} (feature_network: {result['feature_network']})")


def write_json_atomic(path: str | Path, obj: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False, allow_nan=True) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m evaluations.evaluator",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("ref_batch", help="reference npz (arr_0 uint8 NHWC; optional mu/sigma/mu_s/sigma_s)")
    ap.add_argument("sample_batch", help="sample npz (arr_0 uint8 NHWC)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--graph", help="frozen GraphDef (Inception or the demo net)")
    src.add_argument("--cache-dir", help="where to download the Inception graph (default "
                     "$ADM_BENCH_CACHE or ~/.cache/adm-bench)")
    ap.add_argument("--graph-sha256", help="expected sha256 of the graph")
    ap.add_argument("--out", help="write the metrics JSON here (atomically)")
    ap.add_argument("--feature-cache", help="directory caching features/statistics/radii by "
                    "content hash (the reference is then processed once per sweep)")
    ap.add_argument("--label-demo", action="store_true",
                    help="assert that the graph is the demo network (its numbers are labelled demo)")
    ap.add_argument("--batch-size", type=int, help="images per forward pass (default: by size)")
    ap.add_argument("--threads", type=int, default=0, help="TensorFlow threads (0 = all)")
    ap.add_argument("--bootstrap", type=int, default=10,
                    help="bootstrap replicates for the intervals (0 = none)")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ap.add_argument("--fid-method", choices=("eigh", "sqrtm"), default="eigh",
                    help="tr sqrt(S1 S2) by eigenvalues (fast) or scipy sqrtm (reference)")
    ap.add_argument("--no-progress", action="store_true")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        result = evaluate(args.ref_batch, args.sample_batch, args.graph, args.cache_dir,
                          args.feature_cache, args.label_demo, args.graph_sha256,
                          args.batch_size, args.threads, args.bootstrap, args.seed,
                          args.fid_method, progress=not args.no_progress)
    except EvalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_metrics(result)
    if args.out:
        write_json_atomic(args.out, result)
    return 0


if __name__ == "__main__":
    np.seterr(all="warn")
    sys.exit(main())
