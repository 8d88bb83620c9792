"""Improved precision and recall (Kynkäänniemi et al. 2019) with the reference's float16 distances.

OpenAI's evaluator computes squared distances ``max(|u|^2 - 2 u.v + |v|^2, 0)`` on features cast
to float16, and falls back to float32 for a block whose float16 result is not finite. The float16
rounding creates ties and shifts radii, which moves precision/recall in the third decimal, so we
reproduce it. Emulation (``exact_fp16``): inputs rounded to float16; each square rounded to
float16 and the row sum accumulated in wide precision then rounded; ``u.v`` accumulated in float32
(as a GPU half GEMM with float32 compute does) then rounded; ``|u|^2 - 2 u.v`` rounded, then
``+ |v|^2`` rounded. Rounding an exact float32 result to float16 equals float16 arithmetic, since
24 >= 2*11 + 2 bits rules out double-rounding errors.

Speed: rounding a whole 50k x 50k matrix through float16 costs more than the GEMM itself, so each
block is first computed in float32 from the rounded inputs, ``d``; the float16 value differs from
it by at most ``delta`` (bounded from the norms, below). Only entries within ``delta`` of a
decision (a radius or a 4th-nearest candidate) are re-evaluated exactly, which gives the same
answer as rounding everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FP16_MAX = 65504.0
# |fp16 emulation - float32| <= ~7 * 2^-11 * (|u|^2 + |v|^2): five roundings, each bounded by
# 2^-11 times a quantity <= 2(|u|^2 + |v|^2); 2^-6 keeps a 4x margin. The additive term covers
# subnormal results, whose rounding error is absolute (<= 2^-25).
_DELTA_REL = 2.0 ** -6
_DELTA_ABS = 1e-6


def round_fp16(x: np.ndarray) -> np.ndarray:
    """Round float32 values to the nearest float16 (ties to even), returned as float32."""
    with np.errstate(over="ignore"):  # overflow to inf is meaningful: it triggers the fallback
        return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


@dataclass(frozen=True, eq=False)
class DistanceFeatures:
    """A feature set as the reference's distance block sees it."""

    full: np.ndarray      # float32 [N, D], original (for the float32 fallback)
    half: np.ndarray      # float32 [N, D] holding float16-rounded values
    norms16: np.ndarray   # float32 [N] emulated float16 |u|^2 (inf when it overflows)
    norms_half: np.ndarray  # float32 [N] float32 |u|^2 of the rounded values (for the bound)
    norms_full: np.ndarray  # float32 [N] float32 |u|^2 of the originals (fallback path)


def prepare(features: np.ndarray, chunk: int = 4096) -> DistanceFeatures:
    full = np.ascontiguousarray(features, dtype=np.float32)
    half = round_fp16(full)
    norms16, norms_half, norms_full = (np.empty(len(full), np.float32) for _ in range(3))
    for s in range(0, len(full), chunk):
        h, f = half[s:s + chunk], full[s:s + chunk]
        sq16 = round_fp16(h * h)  # exact square of an 11-bit significand, then rounded
        with np.errstate(over="ignore"):
            norms16[s:s + chunk] = round_fp16(sq16.sum(axis=1, dtype=np.float64))
        norms_half[s:s + chunk] = np.einsum("ij,ij->i", h, h, dtype=np.float64)
        norms_full[s:s + chunk] = np.einsum("ij,ij->i", f, f, dtype=np.float64)
    return DistanceFeatures(full, half, norms16, norms_half, norms_full)


def exact_fp16(nu16: np.ndarray, mm: np.ndarray, nv16: np.ndarray) -> np.ndarray:
    """Float16 ``max(nu - 2 mm + nv, 0)`` from float32 dot products ``mm`` (broadcasting)."""
    with np.errstate(over="ignore", invalid="ignore"):
        t = round_fp16(nu16 - 2.0 * round_fp16(mm))
        return np.maximum(round_fp16(t + nv16), 0.0)


def _float32_dists(a: DistanceFeatures, rows: slice, b: DistanceFeatures, cols: slice):
    mm = a.full[rows] @ b.full[cols].T
    d = a.norms_full[rows, None] - 2.0 * mm
    d += b.norms_full[None, cols]
    return np.maximum(d, 0.0)


@dataclass(frozen=True, eq=False)
class Block:
    d: np.ndarray          # float32 distances: exact when ``delta == 0``, else within ``delta``
    mm: np.ndarray | None  # float32 dot products of the rounded inputs (to refine entries)
    delta: float
    nu16: np.ndarray       # emulated norms of the block's rows / columns
    nv16: np.ndarray

    def refine(self, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Exact reference distances of the entries (r, c)."""
        if self.delta == 0.0:
            return self.d[r, c]
        return exact_fp16(self.nu16[r], self.mm[r, c], self.nv16[c])


def distance_block(a: DistanceFeatures, rows: slice, b: DistanceFeatures, cols: slice) -> Block:
    nu16, nv16 = a.norms16[rows], b.norms16[cols]
    mm = a.half[rows] @ b.half[cols].T
    scale = float(a.norms_half[rows].max()) + float(b.norms_half[cols].max())
    if np.isfinite(nu16).all() and np.isfinite(nv16).all() and 2.2 * scale < FP16_MAX:
        d = np.multiply(mm, -2.0)
        d += a.norms_half[rows, None]
        d += b.norms_half[None, cols]
        return Block(d, mm, _DELTA_REL * scale + _DELTA_ABS, nu16, nv16)
    # Possible float16 overflow: decide exactly, as the reference does per block.
    d16 = exact_fp16(nu16[:, None], mm, nv16[None, :])
    d = d16 if np.isfinite(d16).all() else _float32_dists(a, rows, b, cols)
    return Block(d, None, 0.0, nu16, nv16)


def _kth_per_row(rows: np.ndarray, vals: np.ndarray, k: int, n_rows: int) -> np.ndarray:
    order = np.lexsort((vals, rows))
    starts = np.searchsorted(rows[order], np.arange(n_rows))
    return vals[order][starts + k]


def manifold_radii(feats: DistanceFeatures, k: int = 3, block_rows: int = 1024,
                   block_cols: int = 8192) -> np.ndarray:
    """Squared distance to the k-th nearest neighbour within the set (self counts as the 0th)."""
    n = len(feats.full)
    if n <= k:
        raise ValueError(f"need more than k={k} points for k-NN radii, got {n}")
    block_cols = max(block_cols, k + 1)
    radii = np.empty(n, np.float32)
    for i0 in range(0, n, block_rows):
        rows = slice(i0, min(i0 + block_rows, n))
        found_r, found_v, base = [], [], None
        for j0 in range(0, n, block_cols):
            blk = distance_block(feats, rows, feats, slice(j0, min(j0 + block_cols, n)))
            if base is None:
                # The first block's k-th smallest bounds the row's: the true k-th (float16)
                # value is <= base, so only entries with d <= base + delta can matter.
                base = np.partition(blk.d, k, axis=1)[:, k] + blk.delta
            r, c = np.nonzero(blk.d <= (base + blk.delta)[:, None])
            found_r.append(r)
            found_v.append(blk.refine(r, c))
        radii[rows] = _kth_per_row(np.concatenate(found_r), np.concatenate(found_v), k,
                                   rows.stop - rows.start)
    return radii


def coverage(ref: DistanceFeatures, ref_radii: np.ndarray, sample: DistanceFeatures,
             sample_radii: np.ndarray, block_rows: int = 1024, block_cols: int = 8192):
    """Boolean indicators: each sample inside some reference ball (precision), and each
    reference point inside some sample ball (recall); ``<=`` as in the reference."""
    n_ref, n_s = len(ref.full), len(sample.full)
    sample_in = np.zeros(n_s, bool)
    ref_in = np.zeros(n_ref, bool)
    for i0 in range(0, n_ref, block_rows):
        rows = slice(i0, min(i0 + block_rows, n_ref))
        r_ref = ref_radii[rows]
        for j0 in range(0, n_s, block_cols):
            cols = slice(j0, min(j0 + block_cols, n_s))
            blk = distance_block(ref, rows, sample, cols)
            r, c = np.nonzero(blk.d <= (r_ref + blk.delta)[:, None])
            hit = blk.refine(r, c) <= r_ref[r]
            sample_in[j0 + c[hit]] = True
            r_s = sample_radii[cols]
            r, c = np.nonzero(blk.d <= (r_s + blk.delta)[None, :])
            hit = blk.refine(r, c) <= r_s[c]
            ref_in[i0 + r[hit]] = True
    return sample_in, ref_in


def brute_force_pr(ref: np.ndarray, sample: np.ndarray, k: int = 3):
    """The whole computation on full float16 matrices, for tests only (O(N^2) memory)."""
    a, b = prepare(ref), prepare(sample)

    def dists(x, y):  # one block: float32 for the whole matrix if float16 overflows anywhere
        d = exact_fp16(x.norms16[:, None], x.half @ y.half.T, y.norms16[None, :])
        if np.isfinite(d).all():
            return d
        return _float32_dists(x, slice(None), y, slice(None))

    ra = np.partition(dists(a, a), k, axis=1)[:, k]
    rb = np.partition(dists(b, b), k, axis=1)[:, k]
    d = dists(a, b)
    return ra, rb, (d <= ra[:, None]).any(axis=0), (d <= rb[None, :]).any(axis=1)
