"""Metric maths against closed forms, and the float16 P&R path against a brute-force version."""

import numpy as np
import pytest

from evaluations import manifold, metrics


def random_spd(rng, d, cond=10.0):
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (q * np.geomspace(1.0, cond, d)) @ q.T


# --------------------------------------------------------------------------- FID
def test_fid_of_identical_statistics_is_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(32).astype(np.float32), random_spd(rng, 32)
    assert abs(metrics.frechet_distance(mu, sigma, mu, sigma)) < 1e-9


def test_fid_of_diagonal_gaussians_matches_closed_form():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.1, 3.0, 16), rng.uniform(0.1, 3.0, 16)
    mu1, mu2 = rng.standard_normal(16).astype(np.float32), rng.standard_normal(16).astype(np.float32)
    want = float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    for method in ("eigh", "sqrtm"):
        got = metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method)
        assert got == pytest.approx(want, rel=1e-6)  # mu difference in float32, as the reference


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eigenvalue_trace_agrees_with_sqrtm(seed):
    rng = np.random.default_rng(seed)
    s1, s2 = random_spd(rng, 64, 100.0), random_spd(rng, 64, 100.0)
    fast = metrics.trace_sqrt_product(s1, s2)
    ref = metrics.trace_sqrt_product_sqrtm(s1, s2)
    assert abs(fast - ref) / ref < 1e-11


def test_singular_covariances_still_give_a_finite_fid():
    # Fewer points than dimensions: rank-deficient covariances, the reference's retry case.
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((10, 20)), rng.standard_normal((10, 20)) + 0.5
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    fast = metrics.frechet_distance(x.mean(0), s1, y.mean(0), s2, "eigh")
    ref = metrics.frechet_distance(x.mean(0), s1, y.mean(0), s2, "sqrtm")
    assert np.isfinite(fast) and fast == pytest.approx(ref, rel=1e-4)


def test_running_moments_match_np_cov():
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((1000, 12)) * 5 + 100).astype(np.float32)
    mu, sigma = metrics.feature_stats(x, chunk=128)
    assert mu.dtype == np.float32 and sigma.dtype == np.float64
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(mu, x.mean(axis=0), rtol=1e-6)


def test_weighted_moments_equal_repeated_rows():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((50, 4))
    w = rng.integers(0, 3, 50)
    mu, sigma = metrics.feature_stats(x, weights=w.astype(float), chunk=16)
    np.testing.assert_allclose(sigma, np.cov(np.repeat(x, w, axis=0), rowvar=False), rtol=1e-10)


# --------------------------------------------------------------------------- IS
def test_inception_score_of_balanced_one_hot_is_number_of_classes():
    probs = np.eye(10, dtype=np.float32)[np.arange(1000) % 10]
    assert metrics.inception_score(probs) == pytest.approx(10.0, rel=1e-6)


def test_inception_score_of_uniform_predictions_is_one():
    assert metrics.inception_score(np.full((100, 7), 1 / 7, np.float32)) == pytest.approx(1.0, rel=1e-5)


def test_inception_score_uses_contiguous_splits_in_file_order():
    # First split all class 0 (IS 1), second split balanced over 4 classes (IS 4).
    probs = np.concatenate([np.eye(4)[np.zeros(5000, int)], np.eye(4)[np.arange(5000) % 4]])
    np.testing.assert_allclose(metrics.inception_score_splits(probs), [1.0, 4.0], rtol=1e-9)
    assert metrics.inception_score(probs) == pytest.approx(2.5)


def test_softmax_rows_sum_to_one_in_float32():
    p = metrics.softmax(np.array([[1000.0, 0.0], [0.0, 0.0]]))
    assert p.dtype == np.float32
    np.testing.assert_allclose(p, [[1, 0], [0.5, 0.5]])


# --------------------------------------------------------------------------- P&R
def test_identical_sets_have_full_precision_and_recall():
    x = np.random.default_rng(6).standard_normal((40, 8)).astype(np.float32)
    pr = metrics.precision_recall(x, x.copy())
    assert (pr.precision, pr.recall) == (1.0, 1.0)


def test_disjoint_sets_have_zero_precision_and_recall():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((30, 8)).astype(np.float32)
    pr = metrics.precision_recall(x, x + 100.0)
    assert (pr.precision, pr.recall) == (0.0, 0.0)


def test_precision_recall_on_one_blas_thread_is_the_same():
    rng = np.random.default_rng(16)
    ref, sample = rng.standard_normal((80, 12)), rng.standard_normal((70, 12)) + 0.3
    a, b = metrics.precision_recall(ref, sample), metrics.precision_recall(ref, sample, threads=1)
    assert (a.precision, a.recall) == (b.precision, b.recall)
    np.testing.assert_array_equal(a.sample_in, b.sample_in)


def test_known_points_on_a_line():
    # Reference 0..9: squared radii 9 at the ends, 4 inside. Sample 0.5 lies in the ball of 0;
    # 50, 60, 70 are >= 41 from any reference point. The sample ball of 0.5 reaches its 3rd
    # neighbour 70, so it holds every reference point; the far balls (radius 20) hold none.
    ref = np.arange(10, dtype=np.float32)[:, None]
    sample = np.array([[0.5], [50.0], [60.0], [70.0]], np.float32)
    pr = metrics.precision_recall(ref, sample)
    assert pr.precision == 0.25
    assert pr.recall == 1.0
    np.testing.assert_array_equal(pr.sample_in, [True, False, False, False])


def test_radius_is_the_third_neighbour_excluding_self():
    x = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]], np.float32)
    radii = manifold.manifold_radii(manifold.prepare(x), k=3)
    np.testing.assert_array_equal(radii, [36.0, 25.0, 9.0, 25.0, 81.0])


@pytest.mark.parametrize("scale,dim", [(1.0, 64), (0.003, 16), (100.0, 32)])
def test_blocked_fp16_path_equals_brute_force(scale, dim):
    # Small blocks force many row/column blocks and candidate refinement; scale 100 overflows
    # float16 in every block, so both sides fall back to float32 everywhere; integers in the data create exact ties at the radii.
    rng = np.random.default_rng(8)
    ref = np.round(rng.standard_normal((300, dim)) * 4) / 4 * scale
    sample = (rng.standard_normal((220, dim)) + 0.2) * scale
    ra, rb, s_in, r_in = manifold.brute_force_pr(ref.astype(np.float32), sample.astype(np.float32))
    a, b = manifold.prepare(ref), manifold.prepare(sample)
    ra2 = manifold.manifold_radii(a, 3, block=50)  # 6 row blocks: 6 diagonal, 15 shared pairs
    rb2 = manifold.manifold_radii(b, 3, block=70)
    s2, r2 = manifold.coverage(a, ra2, b, rb2, block_rows=90, block_cols=64)
    # float32 GEMMs of different block shapes may differ in the last bit; float16 values not.
    check = np.testing.assert_array_equal if scale < 100 else lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6)
    check(ra, ra2)
    check(rb, rb2)
    np.testing.assert_array_equal(s_in, s2)
    np.testing.assert_array_equal(r_in, r2)


@pytest.mark.parametrize("scale", [3.0, 100.0])
def test_transposed_view_equals_the_transposed_block(scale):
    # Quarter-integer data: every float32 dot product is exact, so GEMM order cannot matter.
    # float16 (|v|^2 - 2uv) + |u|^2 differs from (|u|^2 - 2uv) + |v|^2 for some entries.
    rng = np.random.default_rng(12)
    x = manifold.prepare(np.round(rng.standard_normal((60, 24)) * 4) / 4 * scale)
    s, t = slice(0, 25), slice(25, 60)
    blk = manifold.distance_block(x, s, x, t, transposed=True)
    back = manifold.distance_block(x, t, x, s)
    r, c = np.divmod(np.arange(25 * 35), 35)
    np.testing.assert_array_equal(blk.refine(r, c, transposed=True), back.refine(c, r))
    r2, c2 = blk.candidates(
        back.refine(c, r).reshape(25, 35).max(axis=0), per_column=True, transposed=True
    )  # every column's maximum: every entry qualifies
    assert len(r2) == 25 * 35
    if scale == 3.0:  # the case the symmetric k-NN must get right
        assert not np.array_equal(blk.refine(r, c), back.refine(c, r))


@pytest.mark.parametrize("scale", [0.003, 1.0, 5.0])
def test_slack_bounds_the_float16_error_of_every_entry(scale):
    # 0.003: squares are float16 subnormals; 5: norms near the overflow guard.
    rng = np.random.default_rng(15)
    x = manifold.prepare(np.abs(rng.standard_normal((120, 256))) * scale)
    blk = manifold.distance_block(x, slice(0, 50), x, slice(50, 120))
    assert not blk.exact
    r, c = np.divmod(np.arange(50 * 70), 70)
    err = np.abs(blk.refine(r, c) - blk.d[r, c])
    # the slack of each entry with its own value as the threshold
    slack = manifold.U16 * (2.5 * np.abs(blk.d[r, c]) + 4.5 * (blk.norms_r[r] + blk.norms_c[c]))
    assert np.all(err <= slack + blk.tiny)
    assert err.max() > 0.02 * slack.max()  # not vacuous


def test_coverage_skips_covered_points_and_still_equals_brute_force(monkeypatch):
    # Near-duplicate sets: most points are covered by the first blocks, so later blocks take
    # the thin path (index arrays of the still-open rows/columns).
    rng = np.random.default_rng(13)
    ref = np.round(rng.standard_normal((240, 16)) * 4) / 4
    sample = ref[rng.permutation(240)[:200]] + rng.standard_normal((200, 16)) * 0.05
    _, _, s_in, r_in = manifold.brute_force_pr(ref.astype(np.float32), sample.astype(np.float32))
    a, b = manifold.prepare(ref), manifold.prepare(sample)
    ra, rb = manifold.manifold_radii(a, 3, block=64), manifold.manifold_radii(b, 3, block=64)
    calls = []
    real = manifold.distance_block
    monkeypatch.setattr(
        manifold,
        "distance_block",
        lambda x, rows, y, cols, **kw: calls.append((rows, cols)) or real(x, rows, y, cols, **kw),
    )
    s2, r2 = manifold.coverage(a, ra, b, rb, block_rows=40, block_cols=30)
    np.testing.assert_array_equal(s_in, s2)
    np.testing.assert_array_equal(r_in, r2)
    assert s_in.mean() > 0.5 and r_in.mean() > 0.5
    thin = [c for c in calls if not isinstance(c[0], slice) or not isinstance(c[1], slice)]
    assert 0 < len(thin) and sum(isinstance(c[0], slice) and isinstance(c[1], slice) for c in calls) < 6 * 7


def test_radii_do_not_depend_on_block_size_or_blas_threads():
    x = manifold.prepare(np.random.default_rng(14).standard_normal((130, 40)))
    one = manifold.manifold_radii(x, 3, block=130)
    with manifold.blas_threads(1):
        many = manifold.manifold_radii(x, 3, block=9)
    np.testing.assert_array_equal(one, many)


def test_fp16_distances_differ_from_float32_ones():
    # The reason for the emulation: float16 rounding moves radii (and creates ties).
    x = np.random.default_rng(9).standard_normal((200, 64)).astype(np.float32) * 3
    r16 = manifold.manifold_radii(manifold.prepare(x))
    d32 = ((x[:, None] - x[None]) ** 2).sum(-1)
    r32 = np.partition(d32, 3, axis=1)[:, 3]
    assert not np.array_equal(r16, r32)
    np.testing.assert_allclose(r16, r32, rtol=5e-3)
    assert np.all(r16 == manifold.round_fp16(r16))  # radii are float16 values


def test_fp16_emulation_matches_float16_arithmetic_elementwise():
    rng = np.random.default_rng(10)
    nu, nv = (rng.uniform(0, 3000, 1000).astype(np.float16) for _ in range(2))
    mm = rng.uniform(-1500, 1500, 1000).astype(np.float32)
    want = np.maximum((nu - np.float16(2) * mm.astype(np.float16)) + nv, np.float16(0))
    got = manifold.exact_fp16(nu.astype(np.float32), mm, nv.astype(np.float32))
    np.testing.assert_array_equal(got, want.astype(np.float32))


def test_precision_recall_needs_more_than_k_points():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="k=3"):
        metrics.precision_recall(x, np.ones((10, 4), np.float32))


# --------------------------------------------------------------------------- intervals
def test_bootstrap_intervals_bracket_the_point_and_are_reproducible():
    rng = np.random.default_rng(11)
    ind = rng.random(500) < 0.7
    ci = metrics.proportion_ci(ind, 200, seed=3)
    assert ci[0] < ind.mean() < ci[1] and ci == metrics.proportion_ci(ind, 200, seed=3)
    feats = rng.standard_normal((300, 6))
    mu, sigma = np.zeros(6, np.float32), np.eye(6)
    point = metrics.frechet_distance(*metrics.feature_stats(feats), mu, sigma)
    lo, hi = metrics.fid_ci(feats, mu, sigma, point, 8)
    assert lo < point < hi
    assert metrics.fid_ci(feats, mu, sigma, point, 0) is None


def test_precision_interval_never_exceeds_one():
    # 199 of 200 covered: the normal interval 0.995 +/- 1.96 * 0.005 would end at ~1.0048
    ind = np.arange(200) > 0
    lo, hi = metrics.proportion_ci(ind, 200, seed=0)
    assert hi == 1.0 and 0.98 < lo < 0.995
    assert metrics.clip_interval([-0.2, 0.3], (0.0, 1.0)) == [0.0, 0.3]
    assert metrics.clip_interval([0.4, 0.6], (0.0, 1.0)) == [0.4, 0.6]  # inside: untouched


def test_reference_against_itself_prints_fid_zero_and_keeps_the_raw_value():
    from types import SimpleNamespace

    from evaluations import evaluator

    rng = np.random.default_rng(0)  # seed 0: frechet_distance of these statistics is -7.1e-15 (round-off)
    pool, spatial = rng.standard_normal((200, 16)), rng.standard_normal((200, 8))
    mu, sigma = metrics.feature_stats(pool)
    mu_s, sigma_s = metrics.feature_stats(spatial)
    stats = {"mu": mu, "sigma": sigma, "mu_s": mu_s, "sigma_s": sigma_s}
    feats = SimpleNamespace(pool=pool, spatial=spatial)
    weight = rng.standard_normal((16, 10))
    values, ci, raw = evaluator.compute_metrics(feats, stats, feats, stats, weight, lambda: None, {}, bootstrap=4)
    assert raw["fid"] < 0 and raw["fid"] == metrics.frechet_distance(mu, sigma, mu, sigma)
    assert values["fid"] == 0.0 and values["sfid"] == max(raw["sfid"], 0.0)
    assert ci["fid"][0] == 0.0 and ci["fid"][1] > 0.0  # the low end clipped, the point not moved
    assert ci["precision"][1] <= 1.0 and ci["recall"][1] <= 1.0
    lines = []
    evaluator.print_metrics({"metrics": values, "label": None}, log=lambda *a: lines.append(" ".join(map(str, a))))
    assert lines[1] == "FID: 0.0"
