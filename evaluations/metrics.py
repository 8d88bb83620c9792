"""FID, sFID, Inception Score and improved precision/recall from features or statistics.

Pure numpy/scipy: no TensorFlow, so every formula is testable against closed forms. The
conventions follow OpenAI's evaluator (guided-diffusion ``evaluations/evaluator.py``): mean in
float32, covariance in float64 (``np.cov(rowvar=False)``), IS over contiguous splits of 5000 in
file order, P&R with k = 3 on float16 distances (see ``manifold.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.linalg

from evaluations import manifold

IS_SPLIT_SIZE = 5000
PR_NEIGHBOURHOOD = 3
# The values each metric can take: FID/sFID are squared distances, IS = exp(mean KL) with KL >= 0,
# precision/recall are shares. Interval ends outside are clipped to these (see clip_interval).
METRIC_RANGES = {
    "fid": (0.0, math.inf),
    "sfid": (0.0, math.inf),
    "inception_score": (1.0, math.inf),
    "precision": (0.0, 1.0),
    "recall": (0.0, 1.0),
}


# --------------------------------------------------------------------------- moments
@dataclass
class RunningMoments:
    """Streaming mean/covariance, so 50k x 2048 features never need to be held at once.

    Sums are taken around a shift (the first batch's mean) to avoid the cancellation of the
    textbook ``E[xx^T] - mu mu^T``; the result matches ``np.cov`` to ~1e-13 relative.
    """

    dim: int
    n: int = 0
    shift: np.ndarray | None = None
    s1: np.ndarray | None = None
    s2: np.ndarray | None = None

    def update(self, x: np.ndarray, weights: np.ndarray | None = None) -> None:
        x = np.asarray(x, np.float64).reshape(len(x), -1)
        if self.shift is None:
            self.shift = x.mean(axis=0)
            self.s1 = np.zeros(self.dim)
            self.s2 = np.zeros((self.dim, self.dim))
        xc = x - self.shift
        wxc = xc if weights is None else xc * weights[:, None]
        self.n += len(x) if weights is None else int(weights.sum())
        self.s1 += wxc.sum(axis=0)
        self.s2 += wxc.T @ xc

    def finalize(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu float32, sigma float64) as the reference stores them."""
        if self.n < 2:
            raise ValueError("need at least two feature vectors for a covariance")
        mean_c = self.s1 / self.n
        sigma = (self.s2 - self.n * np.outer(mean_c, mean_c)) / (self.n - 1)
        return (self.shift + mean_c).astype(np.float32), sigma


def feature_stats(
    features: np.ndarray, weights: np.ndarray | None = None, chunk: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    moments = RunningMoments(features.shape[1])
    for s in range(0, len(features), chunk):
        moments.update(features[s : s + chunk], None if weights is None else weights[s : s + chunk])
    return moments.finalize()


# --------------------------------------------------------------------------- FID
def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr sqrt(S1 S2) from eigenvalues: S1 S2 is similar to A S2 A with A = sqrt(S1), which is
    symmetric PSD, so its eigenvalues are real and >= 0 up to rounding. Two ``eigh`` calls are
    several times faster than ``scipy.linalg.sqrtm`` of the non-symmetric product."""
    w, q = np.linalg.eigh(sigma1)
    a = (q * np.sqrt(np.clip(w, 0.0, None))) @ q.T
    m = a @ sigma2 @ a
    lam = np.linalg.eigvalsh((m + m.T) / 2.0)
    return float(np.sqrt(np.clip(lam, 0.0, None)).sum())


def trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """The reference's path: ``sqrtm(S1 S2)``, retried with ``eps*I`` added when not finite, and an
    error when the imaginary part of the diagonal exceeds 1e-3."""
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm has imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(mu1, sigma1, mu2, sigma2, method: str = "eigh") -> float:
    """||mu1 - mu2||^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2) (Heusel et al. 2017)."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics of different dimension: {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2  # float32 as in the reference
    tr_sqrt = None
    if method == "eigh":
        tr_sqrt = trace_sqrt_product(sigma1, sigma2)
        if not np.isfinite(tr_sqrt):
            tr_sqrt = None  # fall back to the reference's checked sqrtm path
    if tr_sqrt is None:
        tr_sqrt = trace_sqrt_product_sqrtm(sigma1, sigma2)
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_sqrt)


def reported_fid(raw: float) -> float:
    """The FID (or sFID) to report: the raw frechet_distance, or 0.0 where round-off made it
    negative (a batch against itself gives about -1e-6: tr S1 + tr S2 - 2 tr sqrt(S1 S2) cancels).
    A distance cannot be negative, so 0.0 is printed; the evaluator keeps the raw value in its
    JSON record (``raw``) so nothing is hidden."""
    return max(float(raw), 0.0)


# --------------------------------------------------------------------------- IS
def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float32)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def inception_score_splits(probs: np.ndarray, split_size: int = IS_SPLIT_SIZE) -> np.ndarray:
    """exp(E_x KL(p(y|x) || p(y))) for each contiguous split of ``split_size`` rows."""
    scores = []
    for s in range(0, len(probs), split_size):
        part = probs[s : s + split_size]
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = part * (np.log(part) - np.log(part.mean(axis=0, keepdims=True)))
        kl = np.nan_to_num(kl, nan=0.0)  # 0 log 0 = 0 (one-hot predictions)
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return np.asarray(scores, np.float64)


def inception_score(probs: np.ndarray, split_size: int = IS_SPLIT_SIZE) -> float:
    return float(inception_score_splits(probs, split_size).mean())


# --------------------------------------------------------------------------- P&R
@dataclass(frozen=True)
class PrecisionRecall:
    precision: float
    recall: float
    sample_in: np.ndarray  # bool [n_samples]: inside some reference ball
    ref_in: np.ndarray  # bool [n_ref]: inside some sample ball


def precision_recall(
    ref: np.ndarray,
    sample: np.ndarray,
    ref_radii: np.ndarray | None = None,
    k: int = PR_NEIGHBOURHOOD,
    threads: int | None = None,
    ref_batch: int = manifold.REF_BATCH,
) -> PrecisionRecall:
    """Improved precision/recall; ``ref_radii`` may come from a cache (``manifold_radii``);
    ``threads``: BLAS threads for the distance GEMMs (None/0: all cores); ``ref_batch``: the
    reference's row/column batch (where its float32 fallback is decided)."""
    for name, x in (("reference", ref), ("sample", sample)):
        if len(x) <= k:
            raise ValueError(f"precision/recall needs more than k={k} {name} images, got {len(x)}")
    with manifold.blas_threads(threads):
        a, b = manifold.prepare(ref, ref_batch), manifold.prepare(sample, ref_batch)
        ra = manifold.manifold_radii(a, k) if ref_radii is None else ref_radii
        rb = manifold.manifold_radii(b, k)
        sample_in, ref_in = manifold.coverage(a, ra, b, rb)
    return PrecisionRecall(float(sample_in.mean()), float(ref_in.mean()), sample_in, ref_in)


# --------------------------------------------------------------------------- intervals
def normal_interval(replicates: np.ndarray, point: float, z: float = 1.959964) -> list[float]:
    """point +/- z * (bootstrap standard error): stable with few replicates, unlike percentiles."""
    se = float(np.std(replicates, ddof=1)) if len(replicates) > 1 else float("nan")
    return [point - z * se, point + z * se]


def clip_interval(interval: list[float], bounds: tuple[float, float]) -> list[float]:
    """The interval's ends clipped to the metric's range (a symmetric normal interval around a
    precision of 0.99 would otherwise reach past 1). Only the ends move: the point estimate is
    never touched. NaN ends (too few replicates) stay NaN."""
    lo, hi = bounds
    return [e if math.isnan(e) else min(max(e, lo), hi) for e in interval]


def bootstrap_ci(
    stat: Callable[[np.ndarray], float],
    n: int,
    point: float,
    replicates: int,
    seed: int = 0,
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> list[float] | None:
    """Resample the n sample images with replacement; ``stat`` takes per-image counts; the
    interval's ends are clipped to ``bounds``, the values the metric can take."""
    if replicates < 2:
        return None
    rng = np.random.default_rng(seed)
    reps = [stat(np.bincount(rng.integers(0, n, n), minlength=n)) for _ in range(replicates)]
    return clip_interval(normal_interval(np.asarray(reps), point), bounds)


def fid_ci(
    features: np.ndarray, mu_ref, sigma_ref, point: float, replicates: int, seed: int = 0, method: str = "eigh"
) -> list[float] | None:
    """CI of FID over resampled sample features; the reference statistics are held fixed."""

    def stat(counts):
        mu, sigma = feature_stats(features, weights=counts.astype(np.float64))
        return frechet_distance(mu, sigma, mu_ref, sigma_ref, method)

    return bootstrap_ci(stat, len(features), point, replicates, seed, METRIC_RANGES["fid"])


def inception_score_ci(
    probs: np.ndarray, point: float, replicates: int, seed: int = 0, split_size: int = IS_SPLIT_SIZE
) -> list[float] | None:
    def stat(counts):
        return inception_score(np.repeat(probs, counts, axis=0), split_size)

    return bootstrap_ci(stat, len(probs), point, replicates, seed, METRIC_RANGES["inception_score"])


def proportion_ci(indicators: np.ndarray, replicates: int, seed: int = 0) -> list[float] | None:
    """CI of a coverage share with the balls held fixed (radii are not recomputed)."""
    x = indicators.astype(np.float64)
    share = float(x.mean())
    return bootstrap_ci(lambda c: float(c @ x) / len(x), len(x), share, replicates, seed, METRIC_RANGES["precision"])
