"""Improved precision and recall (Kynkäänniemi et al. 2019) with the reference's float16 distances.

OpenAI's evaluator (``ManifoldEstimator``/``DistanceBlock``) cuts each feature set into batches of
10000 rows and, for each (row batch, column batch) block, computes in TensorFlow
``max((|u|^2 - 2 u.v) + |v|^2, 0)`` on features cast to float16; when any entry of that block is
not finite it recomputes the whole block in float32. The float16 rounding creates ties and
shifts radii, which moves precision/recall in the second decimal, so we reproduce every step:

- the cast and the norms ``reduce_sum(square(U), 1)`` are TensorFlow's own ops on the CPU
  (``tfops.py``: the CPU kernel sums in float16 packets, which no numpy model reproduces);
- ``u.v``: TensorFlow's CPU float16 matmul rounds a float32-accurate dot product once to float16;
  we round a float32 GEMM of the same float16 inputs. The two float32 sums differ in order,
  which changes the float16 value of about 1 entry in 10^4 by one unit exactly at a rounding
  midpoint; TensorFlow itself gives different such entries for another thread count or block
  shape, so no faithful implementation can do better without the reference's exact run;
- ``|u|^2 - 2 u.v`` rounded, then ``+ |v|^2`` rounded (float32 arithmetic on float16 values
  rounded to float16 equals float16 arithmetic: 24 >= 2*11 + 2 bits);
- the float32 fallback is decided per reference block (``REF_BATCH`` rows x columns) and
  orientation, as the reference decides it, whatever our own blocking.

Speed: rounding a whole 50k x 50k matrix through float16 costs more than the GEMM itself, so each
block is first computed in float32 from the exact float16 norms and the float32 ``u.v``, ``d``;
the float16 value differs from it by at most a slack bounded from the norms and the threshold
(``Block.slack``). Only entries within the slack of a decision (a radius or a k-th-nearest
bound) are re-evaluated exactly, which gives the same answer as rounding everything. The k-NN
radii multiply each pair of row blocks once (the distance matrix is symmetric up to float16
rounding order, which ``Block`` tracks), and the coverage test multiplies only points not yet
known to be covered. Our blocks never straddle a reference block.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

# Bump when the radii or indicators computed from the same features change (cache keys).
VERSION = "pr-2-tfnorms"
FP16_MAX = 65504.0
REF_BATCH = 10000  # the reference's ManifoldEstimator row_batch_size = col_batch_size
# Rounding error bound of ``d`` (float32, from the exact float16 norms nu, nv and a float32
# u.v) against the reference value: each float16 rounding of x errs by <= U16 |x| + 2^-25
# (subnormals). With S = |u|^2 + |v|^2 (float32 norms of the float16 inputs) and
# Y = nu - 2 u.v + nv: 2 fl16(u.v) errs by <= U16 S, nu - 2 u.v by <= U16 (|Y| + 1.1 S), the
# final sum by <= U16 |Y|: in all <= U16 (2 |Y| + 2.1 S) + 5 * 2^-25. Entries that matter have
# |Y| <= T + slack for the decision threshold T, so U16 (2.5 T + 4.5 S) covers them with ample
# room for the float32 errors of ``d`` and for the float32 summation order of u.v.
U16 = 2.0**-11


def round_fp16(x: np.ndarray) -> np.ndarray:
    """Round float32 values to the nearest float16 (ties to even), returned as float32."""
    # Overflow to inf is meaningful (it triggers the fallback); underflow to a subnormal or 0 is
    # float16 rounding as the reference does it. Neither is a fault worth a warning.
    with np.errstate(over="ignore", under="ignore"):
        return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


@dataclass(frozen=True, eq=False)
class DistanceFeatures:
    """A feature set as the reference's distance block sees it."""

    full: np.ndarray  # float32 [N, D], original (for the float32 fallback)
    half: np.ndarray  # float32 [N, D] holding the float16 cast
    norms16: np.ndarray  # float32 [N] TensorFlow's float16 |u|^2 (inf when it overflows)
    norms_half: np.ndarray  # float32 [N] float32 |u|^2 of the float16 values (for the bound)
    norms_full: np.ndarray  # float32 [N] TensorFlow's float32 |u|^2 (fallback blocks)
    ref_batch: int = REF_BATCH  # rows per reference batch: where its blocks begin


def prepare(features: np.ndarray, ref_batch: int = REF_BATCH) -> DistanceFeatures:
    from evaluations.tfops import reference_norms  # TensorFlow: imported only when needed

    full = np.ascontiguousarray(features, dtype=np.float32)
    half = round_fp16(full)  # IEEE round-to-nearest-even, as TensorFlow's cast (tested)
    norms16, norms_full = reference_norms(full, ref_batch)
    norms_half = np.empty(len(full), np.float32)
    for s in range(0, len(full), 4096):  # chunked: no float64 copy of the whole set
        h = half[s : s + 4096]
        norms_half[s : s + 4096] = np.einsum("ij,ij->i", h, h, dtype=np.float64)
    return DistanceFeatures(full, half, norms16, norms_half, norms_full, ref_batch)


def exact_fp16(nu16: np.ndarray, mm: np.ndarray, nv16: np.ndarray) -> np.ndarray:
    """Float16 ``max(nu - 2 mm + nv, 0)`` from float32 dot products ``mm`` (broadcasting)."""
    with np.errstate(over="ignore", invalid="ignore"):
        t = round_fp16(nu16 - 2.0 * round_fp16(mm))
        return np.maximum(round_fp16(t + nv16), 0.0)


def _float32_dists(a: DistanceFeatures, rows, b: DistanceFeatures, cols) -> np.ndarray:
    """The reference's float32 fallback block (its GEMM summation order is not reproduced)."""
    mm = a.full[rows] @ b.full[cols].T
    d = a.norms_full[rows, None] - 2.0 * mm
    d += b.norms_full[None, cols]
    return np.maximum(d, 0.0)


def _cannot_overflow(nu16, nv16, norms_r, norms_c) -> bool:
    """No float16 intermediate can reach 65520: |2 u.v| <= S (Cauchy-Schwarz), so every
    intermediate is <= max nu + max nv + S (with 1 % for the roundings)."""
    if not (np.isfinite(nu16).all() and np.isfinite(nv16).all()):
        return False
    bound = float(nu16.max()) + float(nv16.max()) + float(norms_r.max()) + float(norms_c.max())
    return 1.01 * bound < FP16_MAX


def reference_block_is_fp16(a: DistanceFeatures, rows, b: DistanceFeatures, cols, chunk: int = 2048) -> bool:
    """Whether the reference keeps the float16 values of its block (rows of ``a``, columns of
    ``b``): every entry finite. Otherwise it recomputes the whole block in float32."""
    nu16, nv16 = a.norms16[rows], b.norms16[cols]
    if not (np.isfinite(nu16).all() and np.isfinite(nv16).all()):
        return False
    if _cannot_overflow(nu16, nv16, a.norms_half[rows], b.norms_half[cols]):
        return True
    rows = np.arange(len(a.full))[rows]
    for s in range(0, len(rows), chunk):  # large features: look at every entry
        r = rows[s : s + chunk]
        if not np.isfinite(exact_fp16(a.norms16[r, None], a.half[r] @ b.half[cols].T, nv16[None, :])).all():
            return False
    return True


@dataclass(frozen=True, eq=False)
class Block:
    """Distances between ``rows`` of one set and ``cols`` of another, as the reference would get
    them in either orientation: its block (rows, cols) computes ``(|u|^2 - 2 u.v) + |v|^2``, the
    transposed block (cols, rows) ``(|v|^2 - 2 u.v) + |u|^2``; float16 addition does not commute
    with the rounding, so the two are not always equal (and can differ in overflow)."""

    d: np.ndarray  # float32 [R, C]: exact if ``exact``, else within ``slack`` of exact
    mm: np.ndarray  # float32 u.v of the float16 inputs (to refine entries)
    nu16: np.ndarray  # float16 norms of the block's rows / columns
    nv16: np.ndarray
    norms_r: np.ndarray  # float32 norms of the float16 rows / columns (for the slack)
    norms_c: np.ndarray
    tiny: float  # absolute rounding-error term (subnormals)
    exact: bool = False
    d_t: np.ndarray | None = None  # exact transposed-orientation values (only when ``exact``)

    def slack(self, bound: np.ndarray, per_column: bool = False) -> np.ndarray:
        """Largest |reference - d| of an entry that can decide ``d <= bound`` in its row (or
        column): one bound per row (column)."""
        if self.exact:
            return np.zeros_like(bound)
        own, other = (self.norms_c, self.norms_r) if per_column else (self.norms_r, self.norms_c)
        return U16 * (2.5 * bound + 4.5 * (own + other.max())) + self.tiny

    def candidates(self, bound: np.ndarray, per_column: bool = False, transposed: bool = False):
        """(r, c) of every entry whose reference distance may be <= its row's (column's) bound;
        ``transposed``: distances as the transposed block sees them."""
        values = self.d_t if transposed and self.exact else self.d
        limit = bound + self.slack(bound, per_column)
        return _candidates(values, limit[None, :] if per_column else limit[:, None])

    def refine(self, r: np.ndarray, c: np.ndarray, transposed: bool = False) -> np.ndarray:
        """Exact reference distances of the entries (r, c)."""
        if self.exact:
            return (self.d_t if transposed else self.d)[r, c]
        if transposed:
            return exact_fp16(self.nv16[c], self.mm[r, c], self.nu16[r])
        return exact_fp16(self.nu16[r], self.mm[r, c], self.nv16[c])


def distance_block(
    a: DistanceFeatures,
    rows,
    b: DistanceFeatures,
    cols,
    transposed: bool = False,
    fp16: bool | None = None,
    fp16_t: bool | None = None,
) -> Block:
    """One GEMM; ``rows``/``cols`` are slices or index arrays inside one reference block.
    ``fp16``/``fp16_t``: whether the reference block holding it (in row / transposed
    orientation) keeps float16 values (``reference_block_is_fp16``; None: the block is a
    reference block of its own). ``transposed``: also give the transposed orientation."""
    if fp16 is None:
        fp16 = reference_block_is_fp16(a, rows, b, cols)
    if fp16_t is None:
        fp16_t = not transposed or reference_block_is_fp16(b, cols, a, rows)
    nu16, nv16 = a.norms16[rows], b.norms16[cols]
    norms_r, norms_c = a.norms_half[rows], b.norms_half[cols]
    mm = a.half[rows] @ b.half[cols].T
    tiny = 8 * 2.0**-25
    if fp16 and (fp16_t or not transposed) and _cannot_overflow(nu16, nv16, norms_r, norms_c):
        d = np.multiply(mm, -2.0)
        d += nu16[:, None]
        d += nv16[None, :]
        return Block(d, mm, nu16, nv16, norms_r, norms_c, tiny)
    # Large values (or a float32 block): every entry exactly, in each orientation needed.
    d = exact_fp16(nu16[:, None], mm, nv16[None, :]) if fp16 else _float32_dists(a, rows, b, cols)
    d_t = None
    if transposed:
        d_t = exact_fp16(nv16[None, :], mm, nu16[:, None]) if fp16_t else _float32_dists(b, cols, a, rows).T
    return Block(d, mm, nu16, nv16, norms_r, norms_c, tiny, True, d_t)


def _candidates(values: np.ndarray, bound: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(r, c) of the entries with ``values <= bound`` (bound broadcasts over rows or columns)."""
    return np.divmod(np.flatnonzero(values <= bound), values.shape[1])


def _merge_smallest(top: np.ndarray, rows: np.ndarray, vals: np.ndarray) -> None:
    """Merge candidate values into each row's running ``top.shape[1]`` smallest (a multiset)."""
    if rows.size == 0:
        return
    keep = top.shape[1]
    uniq = np.unique(rows)
    r = np.concatenate([np.repeat(uniq, keep), rows])
    v = np.concatenate([top[uniq].ravel(), vals])
    order = np.lexsort((v, r))
    r, v = r[order], v[order]
    top[uniq] = v[np.searchsorted(r, uniq)[:, None] + np.arange(keep)]


def _balanced_blocks(n: int, size: int) -> list[slice]:
    step = -(-n // -(-n // size))  # equal-sized blocks: no thin remainder block
    return [slice(s, min(s + step, n)) for s in range(0, n, step)]


def _blocks(n: int, ref_batch: int, size: int) -> list[tuple[slice, int]]:
    """Our blocks of <= ``size`` rows, each inside one reference batch: (slice, batch index)."""
    out = []
    for i, start in enumerate(range(0, n, ref_batch)):
        for s in _balanced_blocks(min(ref_batch, n - start), size):
            out.append((slice(start + s.start, start + s.stop), i))
    return out


class _Modes(dict):
    """Lazily computed ``reference_block_is_fp16`` per (row batch, column batch)."""

    def __init__(self, a: DistanceFeatures, b: DistanceFeatures):
        super().__init__()
        self.a, self.b = a, b

    def __missing__(self, key):
        i, j = key
        na, nb, step = len(self.a.full), len(self.b.full), self.a.ref_batch
        rows = slice(i * step, min((i + 1) * step, na))
        cols = slice(j * step, min((j + 1) * step, nb))
        self[key] = value = reference_block_is_fp16(self.a, rows, self.b, cols)
        return value


def manifold_radii(feats: DistanceFeatures, k: int = 3, block: int = 4096) -> np.ndarray:
    """Squared distance to the k-th nearest neighbour within the set (self counts as the 0th).

    Each pair of row blocks is multiplied once and serves both: its rows (row orientation) and
    its columns (transposed orientation). Every row keeps its k+1 smallest exact distances so
    far; the k-th of them bounds the final radius, so only entries within the slack of it are
    refined. Diagonal blocks go first and give every row a finite bound."""
    n = len(feats.full)
    if n <= k:
        raise ValueError(f"need more than k={k} points for k-NN radii, got {n}")
    top = np.full((n, k + 1), np.inf, np.float32)
    blocks = _blocks(n, feats.ref_batch, max(block, k + 1))
    modes = _Modes(feats, feats)
    for s, i in blocks:
        blk = distance_block(feats, s, feats, s, fp16=modes[i, i])
        # Any k+1 entries bound the k-th smallest reference value by their k-th d + slack
        # (a last reference batch of <= k rows has no bound yet: all its entries count).
        kth = (
            np.partition(blk.d, k, axis=1)[:, k]
            if s.stop - s.start > k
            else np.full(s.stop - s.start, np.inf, np.float32)
        )
        r, c = blk.candidates(kth + blk.slack(kth))
        _merge_smallest(top, s.start + r, blk.refine(r, c))
    for m, (s, i) in enumerate(blocks):
        for t, j in blocks[m + 1 :]:
            blk = distance_block(feats, s, feats, t, transposed=True, fp16=modes[i, j], fp16_t=modes[j, i])
            r, c = blk.candidates(top[s, k])
            _merge_smallest(top, s.start + r, blk.refine(r, c))
            r, c = blk.candidates(top[t, k], per_column=True, transposed=True)
            _merge_smallest(top, t.start + c, blk.refine(r, c, transposed=True))
    return top[:, k].copy()


def _mark(
    blk: Block,
    rows: np.ndarray,
    cols: np.ndarray,
    ref_radii: np.ndarray,
    sample_radii: np.ndarray,
    sample_in: np.ndarray,
    ref_in: np.ndarray,
    precision: bool = True,
    recall: bool = True,
) -> None:
    """Record what one (reference rows, sample cols) block proves; rows/cols are global indices."""
    if precision:  # samples inside some reference ball
        rad = ref_radii[rows]
        r, c = blk.candidates(rad)
        sample_in[cols[c[blk.refine(r, c) <= rad[r]]]] = True
    if recall:  # reference points inside some sample ball
        rad = sample_radii[cols]
        r, c = blk.candidates(rad, per_column=True)
        ref_in[rows[r[blk.refine(r, c) <= rad[c]]]] = True


def coverage(
    ref: DistanceFeatures,
    ref_radii: np.ndarray,
    sample: DistanceFeatures,
    sample_radii: np.ndarray,
    block_rows: int = 2560,
    block_cols: int = 4096,
):
    """Boolean indicators: each sample inside some reference ball (precision), and each
    reference point inside some sample ball (recall); ``<=`` as in the reference.

    A point once covered stays covered, so a block multiplies only its still-open reference
    rows and sample columns (two thin products) when that is cheaper than the whole block."""
    if ref.ref_batch != sample.ref_batch:
        raise ValueError("both feature sets must be prepared with the same reference batch")
    n_ref, n_s = len(ref.full), len(sample.full)
    sample_in = np.zeros(n_s, bool)
    ref_in = np.zeros(n_ref, bool)
    radii = (ref_radii, sample_radii, sample_in, ref_in)
    modes = _Modes(ref, sample)
    for rs, i in _blocks(n_ref, ref.ref_batch, block_rows):
        for cs, j in _blocks(n_s, ref.ref_batch, block_cols):
            fp16 = modes[i, j]
            rows, cols = np.arange(rs.start, rs.stop), np.arange(cs.start, cs.stop)
            open_r, open_c = rows[~ref_in[rs]], cols[~sample_in[cs]]
            if open_r.size * cols.size + rows.size * open_c.size >= rows.size * cols.size:
                _mark(distance_block(ref, rs, sample, cs, fp16=fp16), rows, cols, *radii)
                continue
            if open_r.size:
                _mark(distance_block(ref, open_r, sample, cs, fp16=fp16), open_r, cols, *radii, precision=False)
            if open_c.size:
                _mark(distance_block(ref, rs, sample, open_c, fp16=fp16), rows, open_c, *radii, recall=False)
    return sample_in, ref_in


@contextmanager
def blas_threads(threads: int | None):
    """Run the GEMMs on ``threads`` BLAS threads; None/0 keeps the library default (all cores)."""
    if not threads:
        yield
        return
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency

    with threadpool_limits(limits=threads, user_api="blas"):
        yield


def brute_force_pr(ref: np.ndarray, sample: np.ndarray, k: int = 3, ref_batch: int = REF_BATCH):
    """Every reference block in full (float32 where any float16 entry is not finite), with
    our emulated operations; for tests and the naive benchmark only (O(N^2) memory)."""
    a, b = prepare(ref, ref_batch), prepare(sample, ref_batch)

    def dists(x, y):
        out = np.empty((len(x.full), len(y.full)), np.float32)
        for i in range(0, len(x.full), ref_batch):
            for j in range(0, len(y.full), ref_batch):
                r, c = slice(i, i + ref_batch), slice(j, j + ref_batch)
                d = exact_fp16(x.norms16[r, None], x.half[r] @ y.half[c].T, y.norms16[None, c])
                out[r, c] = d if np.isfinite(d).all() else _float32_dists(x, r, y, c)
        return out

    ra = np.partition(dists(a, a), k, axis=1)[:, k]
    rb = np.partition(dists(b, b), k, axis=1)[:, k]
    d = dists(a, b)
    return ra, rb, (d <= ra[:, None]).any(axis=0), (d <= rb[None, :]).any(axis=1)
