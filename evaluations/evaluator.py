"""Evaluate a sample batch against a reference batch: IS, FID, sFID, precision, recall.

    adm-eval REF.npz SAMPLE.npz [--graph PATH | --cache-dir DIR]
        [--out metrics.json] [--feature-cache DIR] [--label-demo]

``adm-eval`` is the console script; ``python -m evaluations.evaluator`` is the same program.

Same algorithm and printed wording as OpenAI's ``evaluations/evaluator.py``; on top of it a
feature cache, bootstrap confidence intervals and a JSON record. The record names the feature
network: "demo" from a marker inside the demo graph; "inception-v3-2015" only for a graph whose
sha256 equals the pinned one (``--graph-lock``, or the record our downloader wrote on first
download) and whose structure is the 2015 graph's; anything else "unverified feature graph".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from evaluations import atomic, manifold, metrics
from evaluations.download import GRAPH_URL, default_cache_dir, download, recorded_sha256
from evaluations.errors import ChecksumError, EvalError
from evaluations.features import STATS_KEYS, cached_array, features_for
from evaluations.graph import FeatureGraph, load_graph
from evaluations.npzio import ImageArray, open_images, read_optional, sha256_file

K = metrics.PR_NEIGHBOURHOOD


def check_inputs(ref: ImageArray, sample: ImageArray) -> None:
    if ref.resolution != sample.resolution:
        raise EvalError(
            f"{sample.path}: images are {sample.resolution}x{sample.resolution} but "
            f"the reference {ref.path} is {ref.resolution}x{ref.resolution}"
        )
    for images in (ref, sample):
        if images.num_images <= K:
            raise EvalError(
                f"{images.path}: {images.num_images} images; precision/recall with k={K} needs at least {K + 1}"
            )


def stored_stats(images: ImageArray, pool_dim: int, spatial_dim: int) -> dict | None:
    """mu/sigma/mu_s/sigma_s stored in the npz, used as they are (as the reference does);
    None when there are none. Partial, misshapen or non-finite statistics are an EvalError."""
    stored = read_optional(images.path, STATS_KEYS)
    if stored is None:
        return None
    shapes = {
        "mu": (pool_dim,),
        "sigma": (pool_dim, pool_dim),
        "mu_s": (spatial_dim,),
        "sigma_s": (spatial_dim, spatial_dim),
    }
    for key, shape in shapes.items():
        value = stored[key]
        if value.shape != shape:
            raise EvalError(
                f"{images.path}: stored {key} has shape {value.shape}, but this "
                f"feature graph gives {shape}: statistics of another network?"
            )
        if not np.issubdtype(value.dtype, np.number) or not np.isfinite(value).all():
            raise EvalError(f"{images.path}: stored {key} contains non-finite values")
    return stored


def batch_stats(images: ImageArray, feats) -> tuple[dict, str]:
    stored = stored_stats(images, feats.pool.shape[1], len(feats.stats["mu_s"]))
    return (feats.stats, "computed") if stored is None else (stored, "npz")


RADII_NAME = f"radii_k{K}_{manifold.VERSION}_b{manifold.REF_BATCH}"


def reference_radii(entry: Path | None, pool: np.ndarray) -> np.ndarray:
    """k-NN radii of the reference, cached with its features: computed once per sweep (the
    name carries the P&R algorithm's version, the entry the TensorFlow version)."""
    return cached_array(entry, RADII_NAME, lambda: manifold.manifold_radii(manifold.prepare(pool), K))


def graph_pin(graph: Path, expected_sha256: str | None, lock: str | None) -> str | None:
    """The sha256 this run trusts as Inception's: ``--graph-sha256``, else the lock file (written
    with this graph's sha256 when absent: first use), else our downloader's record beside it."""
    if expected_sha256:
        return expected_sha256.lower()
    if lock:
        lock = Path(lock)
        if lock.exists():
            try:
                return json.loads(lock.read_text())["sha256"].lower()
            except (ValueError, KeyError, AttributeError) as exc:
                raise EvalError(f"{lock}: not a graph lock file ({exc})") from None
        if graph.is_file():
            atomic.write_text(lock, json.dumps({"sha256": sha256_file(graph), "file": graph.name}, indent=1) + "\n")
            return json.loads(lock.read_text())["sha256"]
    return recorded_sha256(graph) if graph.is_file() else None


def resolve_graph(graph: str | None, cache_dir: str | None, expected_sha256: str | None, lock: str | None = None):
    if graph is None:
        graph = download(GRAPH_URL, cache_dir or default_cache_dir(), expected_sha256)
    pin = graph_pin(Path(graph), expected_sha256, lock)
    loaded = load_graph(graph, expected_sha256, pin)
    if lock and loaded.sha256 != pin:
        raise ChecksumError(
            f"{graph}: sha256 {loaded.sha256} differs from the {pin} pinned in "
            f"{lock}; delete the lock file to trust another graph"
        )
    return loaded


def pr_device() -> dict:
    """Where the float16 steps of precision/recall ran: their rounding is the CPU kernels'."""
    from evaluations.tfops import DEVICE, tf_version

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"device": DEVICE, "cpu": cpu, "tensorflow": tf_version(), "reference_batch": manifold.REF_BATCH}


def _timed(timings: dict, name: str, fn, *args, **kwargs):
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    timings[name] = round(time.perf_counter() - t0, 3)
    return result


def compute_metrics(
    ref_feats,
    ref_stats,
    sample_feats,
    sample_stats,
    weight,
    ref_radii_fn,
    timings,
    bootstrap: int = 10,
    seed: int = 0,
    fid_method: str = "eigh",
    threads: int = 0,
):
    """Point values, bootstrap intervals (the reference side held fixed; ends clipped to each
    metric's range) and the raw FID/sFID; ``threads`` caps the BLAS threads of the
    precision/recall distance GEMMs (0: all cores). A FID or sFID that round-off made negative
    (a batch against itself) is reported as 0.0; ``raw`` keeps frechet_distance's own value."""
    s, r, st = sample_feats, ref_stats, sample_stats
    probs = metrics.softmax(s.pool @ weight)
    raw = {
        "fid": _timed(timings, "fid", metrics.frechet_distance, st["mu"], st["sigma"], r["mu"], r["sigma"], fid_method),
        "sfid": _timed(
            timings, "sfid", metrics.frechet_distance, st["mu_s"], st["sigma_s"], r["mu_s"], r["sigma_s"], fid_method
        ),
    }
    values = {
        "inception_score": _timed(timings, "inception_score", metrics.inception_score, probs),
        **{name: metrics.reported_fid(v) for name, v in raw.items()},
    }
    if not all(np.isfinite(v) for v in [*values.values(), *raw.values()]):
        raise EvalError(f"non-finite metrics {values}: the statistics are degenerate")
    ref_radii = _timed(timings, "ref_radii", ref_radii_fn)
    pr = _timed(
        timings,
        "precision_recall",
        metrics.precision_recall,
        ref_feats.pool,
        s.pool,
        ref_radii,
        threads=threads or None,
    )
    values.update(precision=pr.precision, recall=pr.recall)
    t0 = time.perf_counter()
    ci = {
        "inception_score": metrics.inception_score_ci(probs, values["inception_score"], bootstrap, seed),
        "fid": metrics.fid_ci(s.pool, r["mu"], r["sigma"], values["fid"], bootstrap, seed, fid_method),
        "sfid": None
        if s.spatial is None
        else metrics.fid_ci(s.spatial, r["mu_s"], r["sigma_s"], values["sfid"], bootstrap, seed, fid_method),
        "precision": metrics.proportion_ci(pr.sample_in, max(bootstrap, 200), seed),
        "recall": metrics.proportion_ci(pr.ref_in, max(bootstrap, 200), seed),
    }
    timings["confidence_intervals"] = round(time.perf_counter() - t0, 3)
    return values, ci, raw


def evaluate(
    ref_path,
    sample_path,
    graph=None,
    cache_dir=None,
    feature_cache=None,
    label_demo=False,
    graph_sha256=None,
    batch_size=None,
    threads=0,
    bootstrap=10,
    seed=0,
    fid_method="eigh",
    progress=False,
    log=print,
    graph_lock=None,
) -> dict:
    t_start, timings = time.perf_counter(), {}
    ref, sample = open_images(ref_path), open_images(sample_path)
    check_inputs(ref, sample)
    loaded = _timed(timings, "graph_load", resolve_graph, graph, cache_dir, graph_sha256, graph_lock)
    if label_demo and loaded.demo_label is None:
        raise EvalError(f"{loaded.path}: --label-demo given, but this is not the demo network")
    net = FeatureGraph(loaded, threads=threads)
    cache = Path(feature_cache) if feature_cache else None
    opts = {"batch_size": batch_size, "progress": progress}
    try:
        log("Computing reference batch activations...")
        ref_feats, ref_entry, ref_hit = _timed(timings, "ref_features", features_for, net, ref, cache, **opts)
        log("Computing/reading reference batch statistics...")
        ref_stats, stats_source = batch_stats(ref, ref_feats)
        log("Computing sample batch activations...")
        sample_feats, _, sample_hit = _timed(
            timings, "sample_features", features_for, net, sample, cache, keep_spatial=bootstrap > 1, **opts
        )
        log("Computing/reading sample batch statistics...")
        sample_stats, sample_source = batch_stats(sample, sample_feats)
        weight = net.logits_weight()
    finally:
        net.close()
    log("Computing evaluations...")
    values, ci, raw = compute_metrics(
        ref_feats,
        ref_stats,
        sample_feats,
        sample_stats,
        weight,
        lambda: reference_radii(ref_entry, ref_feats.pool),
        timings,
        bootstrap,
        seed,
        fid_method,
        threads,
    )
    timings["total"] = round(time.perf_counter() - t_start, 3)
    result = {
        "metrics": values,
        "ci": ci,
        "raw": raw,
        "n_samples": sample.num_images,
        "n_ref": ref.num_images,
        "image_size": ref.resolution,
        "graph_sha256": loaded.sha256,
        "feature_network": loaded.feature_network,
        "label": loaded.demo_label,
        "ref": str(ref.path),
        "sample": str(sample.path),
        "ref_stats_source": stats_source,
        "sample_stats_source": sample_source,
        "graph_pinned_sha256": loaded.pinned_sha256,
        "precision_recall_device": pr_device(),
        "cache_hits": {"ref": ref_hit, "sample": sample_hit},
        "settings": {
            "k": K,
            "is_split_size": metrics.IS_SPLIT_SIZE,
            "bootstrap": bootstrap,
            "seed": seed,
            "fid_method": fid_method,
            "ci": "bootstrap normal, 95%",
        },
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
    atomic.write_text(path, json.dumps(obj, indent=1, ensure_ascii=False, allow_nan=True) + "\n")


EXAMPLES = """\
examples:
  # a sample batch against OpenAI's ImageNet 128x128 reference batch; the reference and
  # (without --graph) the Inception graph are downloaded once into ~/.cache/adm-bench
  python -m evaluations.reference --download imagenet128
  adm-eval ~/.cache/adm-bench/VIRTUAL_imagenet128_labeled.npz samples_50000x128x128x3.npz

  # one scale of a guidance sweep: JSON record, reference features computed once per sweep
  adm-eval ~/.cache/adm-bench/VIRTUAL_imagenet128_labeled.npz samples/scale1.0.npz \\
      --feature-cache features/ --out metrics/scale1.0.json

  # the demo pipeline's own feature network (numbers labelled "demo")
  adm-eval reference/ref.npz samples/scale1.0.npz --graph featurenet/graph.pb --label-demo
"""


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="adm-eval",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n")[0] + "\n\n"
        "The same program runs as 'python -m evaluations.evaluator'. It prints OpenAI's lines\n"
        "(Inception Score, FID, sFID, Precision, Recall); --out also writes them, their\n"
        "intervals and the run's provenance as JSON.",
    )
    ap.add_argument("ref_batch", help="reference npz (arr_0 uint8 NHWC; optional mu/sigma/mu_s/sigma_s)")
    ap.add_argument("sample_batch", help="sample npz (arr_0 uint8 NHWC)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--graph", help="frozen GraphDef (Inception or the demo net)")
    src.add_argument(
        "--cache-dir", help="where to download the Inception graph (default $ADM_BENCH_CACHE or ~/.cache/adm-bench)"
    )
    ap.add_argument("--graph-sha256", help="expected sha256 of the graph (also pins it)")
    ap.add_argument(
        "--graph-lock",
        help="JSON lock file pinning the graph's sha256; written from the graph on first use, enforced afterwards",
    )
    ap.add_argument("--out", help="write the metrics JSON here (atomically)")
    ap.add_argument(
        "--feature-cache",
        help="directory caching features/statistics/radii by "
        "content hash (the reference is then processed once per sweep)",
    )
    ap.add_argument(
        "--label-demo",
        action="store_true",
        help="assert that the graph is the demo network (its numbers are labelled demo)",
    )
    ap.add_argument("--batch-size", type=int, help="images per forward pass (default: by size)")
    ap.add_argument("--threads", type=int, default=0, help="TensorFlow threads (0 = all)")
    ap.add_argument("--bootstrap", type=int, default=10, help="bootstrap replicates for the intervals (0 = none)")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ap.add_argument(
        "--fid-method",
        choices=("eigh", "sqrtm"),
        default="eigh",
        help="tr sqrt(S1 S2) by eigenvalues (fast) or scipy sqrtm (reference)",
    )
    ap.add_argument("--no-progress", action="store_true")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    """Entry point of both ``adm-eval`` and ``python -m evaluations.evaluator``."""
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Floating-point trouble (overflow, invalid, underflow) is reported, never silent, in
    # every entry point; errstate instead of seterr leaves callers of evaluate() as they were.
    with np.errstate(all="warn"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        result = evaluate(
            args.ref_batch,
            args.sample_batch,
            args.graph,
            args.cache_dir,
            args.feature_cache,
            args.label_demo,
            args.graph_sha256,
            args.batch_size,
            args.threads,
            args.bootstrap,
            args.seed,
            args.fid_method,
            progress=not args.no_progress,
            graph_lock=args.graph_lock,
        )
    except EvalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_metrics(result)
    if args.out:
        try:
            write_json_atomic(args.out, result)
        except OSError as exc:  # a full disk: the metrics were printed, the record was not written
            print(
                f"error: could not write {args.out} ({exc.strerror or exc}); nothing was written under that "
                "name, the metrics printed above are not saved",
                file=sys.stderr,
            )
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
