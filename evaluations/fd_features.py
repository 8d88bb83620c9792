"""FD_DINOv2 (Stein et al. 2023): the Fréchet distance between two sets of feature vectors that
another process computed and wrote as npz (``adm features-dinov2``: ``features`` float32 [N, D] and
``meta``, a JSON string naming the network, its weights' sha256 and the preprocessing).

    python -m evaluations.fd_features REF_FEATURES.npz SAMPLE_FEATURES.npz --out fd_dinov2.json

Numpy only (no TensorFlow, no torch): the statistics, the distance and the bootstrap interval are
``metrics.feature_stats``, ``metrics.frechet_distance`` and ``metrics.fid_ci``, the very functions
FID uses, so the maths is written once. Features of different networks, weights or preprocessing
are refused (one line), as a FID between two feature spaces would mean nothing.

`--pinned-sha256` (the workflow passes the config's evaluation.dinov2_sha256 when set): the record's
`weights_pinned` is true only when the features' weights have exactly that sha256; without a pin
it is false, and the reports label the value "unverified DINOv2 weights".
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

from evaluations import atomic, metrics
from evaluations.errors import EvalError

# The meta fields that must agree between the two files (the images' own sha256 of course differs).
SAME_SPACE = ("network", "features", "weights_sha256")


def read_features(path: str | Path) -> tuple[np.ndarray, dict]:
    """(features float32 [N, D], meta) of a features npz; any defect is an EvalError."""
    try:
        with np.load(path) as f:
            if "features" not in f or "meta" not in f:
                raise EvalError(f"{path}: not a features file (needs 'features' and 'meta')")
            features, meta = f["features"], json.loads(str(f["meta"]))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, EvalError):
            raise
        raise EvalError(f"{path}: not a readable features npz ({exc})") from None
    if features.ndim != 2 or len(features) < 2 or not np.isfinite(features).all():
        raise EvalError(f"{path}: features must be finite [N >= 2, D], got {list(features.shape)}")
    return features, meta


def fd_record(
    ref_path, sample_path, bootstrap: int = 10, seed: int = 0, name: str = "fd_dinov2", pinned_sha256=None
) -> dict:
    """{"metrics": {name: FD}, "ci": {name: [lo, hi] | None}, "raw", counts, both metas,
    "weights_pinned": whether the weights' sha256 is the one `pinned_sha256` names}."""
    ref, ref_meta = read_features(ref_path)
    sample, sample_meta = read_features(sample_path)
    differ = [k for k in SAME_SPACE if ref_meta.get(k) != sample_meta.get(k)]
    if differ or ref.shape[1] != sample.shape[1]:
        what = ", ".join(f"{k} {ref_meta.get(k)!r} vs {sample_meta.get(k)!r}" for k in differ) or "dimension"
        raise EvalError(f"{sample_path}: features of another space than the reference's {ref_path} ({what})")
    mu_r, sigma_r = metrics.feature_stats(ref)
    mu_s, sigma_s = metrics.feature_stats(sample)
    raw = metrics.frechet_distance(mu_s, sigma_s, mu_r, sigma_r)
    value = metrics.reported_fid(raw)
    if not np.isfinite(raw):
        raise EvalError(f"non-finite {name} {raw}: the statistics are degenerate")
    return {
        "metrics": {name: value},
        "ci": {name: metrics.fid_ci(sample, mu_r, sigma_r, value, bootstrap, seed)},
        "raw": {name: raw},
        "n_samples": len(sample),
        "n_ref": len(ref),
        "feature_network": sample_meta.get("network"),
        "weights_pinned": weights_pinned(sample_meta, pinned_sha256),
        "features": {"reference": ref_meta, "samples": sample_meta},
        "settings": {"bootstrap": bootstrap, "seed": seed, "ci": "bootstrap normal, 95%"},
    }


def weights_pinned(meta: dict, pinned_sha256) -> bool:
    """True when a sha256 is pinned and the features' weights have it (both files agree, SAME_SPACE)."""
    sha = meta.get("weights_sha256")
    return bool(pinned_sha256) and isinstance(sha, str) and sha.lower() == str(pinned_sha256).lower()


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m evaluations.fd_features",
        description="FD_DINOv2 (or any Fréchet distance of feature files written by `adm features-dinov2`):\n"
        "the FID formula on the two files' feature statistics, with FID's bootstrap interval.",
        epilog="example:\n  python -m evaluations.fd_features dinov2/reference.npz dinov2/scale1.0.npz "
        "--out metrics/fd_dinov2_scale1.0.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("ref_features", help="features npz of the reference batch")
    ap.add_argument("sample_features", help="features npz of the sample batch")
    ap.add_argument("--out", help="write the JSON record here (atomically)")
    ap.add_argument("--name", default="fd_dinov2", help="the metric's name in the record")
    ap.add_argument("--bootstrap", type=int, default=10, help="bootstrap replicates for the interval (0 = none)")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ap.add_argument(
        "--pinned-sha256",
        help="the sha256 a user checked the official weights against; without it (or if the features'"
        " weights differ) the record says weights_pinned: false",
    )
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        with np.errstate(all="warn"):
            record = fd_record(
                args.ref_features, args.sample_features, args.bootstrap, args.seed, args.name, args.pinned_sha256
            )
    except EvalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.name}: {record['metrics'][args.name]}")
    if args.out:
        atomic.write_text(args.out, json.dumps(record, indent=1, allow_nan=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
