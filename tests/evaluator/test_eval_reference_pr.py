"""Precision/recall against an independent TensorFlow implementation of OpenAI's algorithm.

``reference_pr`` below is written from the reference evaluator's description (ManifoldEstimator
+ DistanceBlock, guided-diffusion ``evaluations/evaluator.py``), not from our code: features are
cut into batches of ``batch`` rows; each (row batch, column batch) block is computed in
TensorFlow as ``max((|u|^2 - 2 u.v) + |v|^2, 0)`` on float16 casts, and in float32 when any
float16 entry of the block is not finite; the radius of a point is the 4th smallest entry of
its row over all column blocks (itself included); a sample is in the manifold when some
reference block entry is ``<=`` that reference point's radius (and the other way for recall).

Mutants this file caught (each made on purpose once, then restored):
- norms by the old single-rounding model (float16 squares summed in float64, rounded once):
  the large-norm and typical cases fail;
- float32 fallback decided per our own 30-row block instead of per reference block: the
  partial-fallback case fails;
- ``<`` instead of ``<=`` in the coverage test: every case fails.
"""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from evaluations import manifold, metrics  # noqa: E402

K = 3


def _pairwise(u, v):
    norm_u = tf.reshape(tf.reduce_sum(tf.square(u), 1), [-1, 1])
    norm_v = tf.reshape(tf.reduce_sum(tf.square(v), 1), [1, -1])
    return tf.maximum(norm_u - 2 * tf.matmul(u, v, False, True) + norm_v, 0.0)


class ReferenceBlock:
    """The reference's distance block as one TF1 graph: float16, else float32 for the block."""

    def __init__(self):
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.u = tf.compat.v1.placeholder(tf.float32, [None, None])
            self.v = tf.compat.v1.placeholder(tf.float32, [None, None])
            d16 = _pairwise(tf.cast(self.u, tf.float16), tf.cast(self.v, tf.float16))
            self.fell_back = tf.logical_not(tf.reduce_all(tf.math.is_finite(d16)))
            self.d = tf.cond(self.fell_back, lambda: _pairwise(self.u, self.v), lambda: tf.cast(d16, tf.float32))
        self.sess = tf.compat.v1.Session(graph=self.graph)
        self.fallbacks = 0

    def __call__(self, u, v):
        d, fb = self.sess.run([self.d, self.fell_back], {self.u: u, self.v: v})
        self.fallbacks += int(fb)
        return d


def reference_pr(ref, sample, batch):
    block = ReferenceBlock()

    def radii(x):
        out = []
        for i in range(0, len(x), batch):
            row = np.concatenate([block(x[i : i + batch], x[j : j + batch]) for j in range(0, len(x), batch)], axis=1)
            out.append(np.partition(row, K, axis=1)[:, K])
        return np.concatenate(out)

    ra, rb = radii(ref), radii(sample)
    ref_in, sample_in = np.zeros(len(ref), bool), np.zeros(len(sample), bool)
    for i in range(0, len(ref), batch):
        for j in range(0, len(sample), batch):
            d = block(ref[i : i + batch], sample[j : j + batch])
            ref_in[i : i + batch] |= (d <= rb[None, j : j + batch]).any(axis=1)
            sample_in[j : j + batch] |= (d <= ra[i : i + batch, None]).any(axis=0)
    return ra, rb, sample_in, ref_in, block.fallbacks


def ours(ref, sample, batch, block=30):
    a, b = manifold.prepare(ref, batch), manifold.prepare(sample, batch)
    ra, rb = manifold.manifold_radii(a, K, block=block), manifold.manifold_radii(b, K, block=block)
    s_in, r_in = manifold.coverage(a, ra, b, rb, block_rows=block, block_cols=block + 7)
    return ra, rb, s_in, r_in


def pool_like(rng, n, d, shift=0.0, scale=1.0):
    mix = np.random.default_rng(99).standard_normal((d, d)) / np.sqrt(d)
    return (np.maximum((rng.standard_normal((n, d)) + shift) @ mix, 0) * scale).astype(np.float32)


def large_norms(rng, n, d):
    # |u|^2 ~ 2048 * 20 = 41k: float16 ulp 32 at the norms, distances of a few units between
    # near-duplicates: the radii are decided by how the norms round.
    base = 4.5 + 0.05 * rng.standard_normal((n // 3 + 1, d))
    pts = np.repeat(base, 3, axis=0)[:n] + 0.02 * rng.standard_normal((n, d))
    return pts.astype(np.float32)


CASES = {
    # name: (ref, sample, reference batch); counts are multiples of no batch or block size
    "typical": lambda rng: (pool_like(rng, 157, 2048), pool_like(rng, 211, 2048, 0.1), 64),
    "large_norms": lambda rng: (large_norms(rng, 131, 2048), large_norms(rng, 97, 2048), 50),
    "small_radii": lambda rng: (pool_like(rng, 121, 256, scale=0.01), pool_like(rng, 89, 256, 0.05, scale=0.01), 40),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_precision_recall_equal_the_reference_algorithm(name):
    ref, sample, batch = CASES[name](np.random.default_rng(sorted(CASES).index(name)))
    want = reference_pr(ref, sample, batch)
    assert want[4] == 0  # float16 everywhere
    got = ours(ref, sample, batch)
    for w, g, what in zip(want, got, ("ref radii", "sample radii", "precision", "recall")):
        np.testing.assert_array_equal(g, w, err_msg=what)
    pr = metrics.precision_recall(ref, sample, ref_batch=batch)
    assert (pr.precision, pr.recall) == (want[2].mean(), want[3].mean())


def test_old_single_rounding_norms_differ_from_tensorflow():
    # The bug this file guards: float16 squares summed in float64 and rounded once.
    x = large_norms(np.random.default_rng(0), 64, 2048)
    feats = manifold.prepare(x)
    sq16 = manifold.round_fp16(feats.half * feats.half)
    old = manifold.round_fp16(sq16.sum(axis=1, dtype=np.float64))
    assert not np.array_equal(old, feats.norms16)


def test_float32_fallback_in_some_reference_blocks_only():
    # Rows 50..99 of the reference are scaled up so their float16 norms overflow: the reference
    # recomputes exactly the blocks touching them in float32, and keeps float16 elsewhere.
    rng = np.random.default_rng(5)
    ref, sample = pool_like(rng, 173, 512), pool_like(rng, 119, 512, 0.1)
    ref[50:100] *= 40.0
    sample[:20] = ref[50:70] + 0.1 * rng.standard_normal((20, 512)).astype(np.float32)
    batch = 50
    ra, rb, s_in, r_in, fallbacks = reference_pr(ref, sample, batch)
    n_blocks = (4 * 4 + 3 * 3) + 4 * 3  # ref radii, sample radii, coverage
    assert 0 < fallbacks < n_blocks
    got = ours(ref, sample, batch)
    # float32 blocks: numpy's GEMM sums in another order than TensorFlow's (last-bit radii)
    np.testing.assert_allclose(got[0], ra, rtol=1e-6)
    np.testing.assert_allclose(got[1], rb, rtol=1e-6)
    fp16_rows = np.r_[0:50, 100:150]  # reference batches 0 and 2 never touch the large rows
    np.testing.assert_array_equal(got[0][fp16_rows], ra[fp16_rows])
    np.testing.assert_array_equal(got[2], s_in)
    np.testing.assert_array_equal(got[3], r_in)
    assert 0 < s_in.mean() < 1 and 0 < r_in.mean() < 1


def test_is_fid_sfid_equal_the_reference_formulas():
    # The reference: mu = np.mean of the float32 activations, sigma = np.cov, FID through
    # scipy's sqrtm; IS from TensorFlow's softmax(acts @ W) over contiguous splits of 5000.
    # 5003 samples: the last split holds 3.
    import scipy.linalg

    rng = np.random.default_rng(21)
    pool, ref = pool_like(rng, 5003, 64, 0.1), pool_like(rng, 1700, 64)
    w = (rng.standard_normal((64, 1008)) * 0.3).astype(np.float32)
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        x = tf.compat.v1.placeholder(tf.float32, [None, 64])
        soft = tf.nn.softmax(tf.matmul(x, w))
        probs = np.concatenate([sess.run(soft, {x: pool[i : i + 512]}) for i in range(0, len(pool), 512)])
    scores = []
    for i in range(0, len(probs), 5000):
        part = probs[i : i + 5000]
        kl = part * (np.log(part) - np.log(np.mean(part, 0, keepdims=True)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    want_is = float(np.mean(scores))

    def ref_fid(a, b):
        mu1, mu2 = np.mean(a, axis=0), np.mean(b, axis=0)
        s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        covmean = scipy.linalg.sqrtm(s1.dot(s2)).real
        return (mu1 - mu2).dot(mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)

    got_is = metrics.inception_score(metrics.softmax(pool @ w))
    assert got_is == pytest.approx(want_is, rel=1e-5)
    (m1, s1), (m2, s2) = metrics.feature_stats(pool), metrics.feature_stats(ref)
    assert metrics.frechet_distance(m1, s1, m2, s2) == pytest.approx(ref_fid(pool, ref), rel=1e-5)


def test_numpy_float16_cast_equals_tensorflows():
    # prepare() rounds in numpy and sends only the norms through TensorFlow: the casts must
    # agree everywhere, subnormals, ties, overflow to inf included.
    rng = np.random.default_rng(8)
    x = np.concatenate([rng.standard_normal(4000) * s for s in (1e-7, 1e-5, 1.0, 300.0, 7e4)])
    x = np.concatenate([x, np.float32(2.0**-25) * np.arange(-40, 40), [65519.0, 65520.0]])
    x = x.astype(np.float32)
    want = tf.cast(tf.constant(x), tf.float16).numpy().astype(np.float32)
    np.testing.assert_array_equal(manifold.round_fp16(x), want)
