"""Graph import on an Inception-shaped stand-in, feature extraction, cache, and the demo net."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

from evaluations import demo_net, features, graph, standin  # noqa: E402
from evaluations.errors import ChecksumError, EvalError  # noqa: E402
from evaluations.metrics import feature_stats  # noqa: E402
from evaluations.npzio import open_images, sha256_file  # noqa: E402


@pytest.fixture(scope="module")
def standin_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("graph") / "standin.pb"
    standin.write_standin_graph(path, seed=0)
    return path


@pytest.fixture(scope="module")
def net(standin_path):
    fg = graph.FeatureGraph(graph.load_graph(standin_path), threads=1)
    yield fg
    fg.close()


def images(n, side=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def test_standin_has_inception_shapes(net):
    pool, spatial = net.run(images(3).astype(np.float32))
    assert pool.shape == (3, 2048) and spatial.shape == (3, 17 * 17 * 7)
    assert net.logits_weight().shape == (2048, 1008)
    # Inception's names and shapes, but not the pinned file: never called Inception.
    assert net.loaded.feature_network == "unverified feature graph"
    # The legacy resize of the real graph: TF2's tf.image.resize emits the same op type but with
    # half_pixel_centers=True, which samples other pixels.
    resizes = [n for n in net.loaded.graph_def.node if n.op.startswith("ResizeBilinear")]
    assert [n.op for n in resizes] == ["ResizeBilinear"]
    assert not resizes[0].attr["half_pixel_centers"].b and not resizes[0].attr["align_corners"].b


def _with_2015_nodes(graph_def):
    """The stand-in plus the 2015 graph's JPEG decoder node and its ExpandDims op (only the
    structure is looked at; this graph is never run)."""
    g = tf.compat.v1.GraphDef()
    g.CopyFrom(graph_def)
    g.node.add(name="DecodeJpeg", op="DecodeJpeg")
    next(n for n in g.node if n.name == "ExpandDims").op = "ExpandDims"
    return g


def test_inception_label_needs_the_pinned_sha_and_the_2015_structure(standin_path, tmp_path):
    like = tmp_path / "like2015.pb"
    like.write_bytes(_with_2015_nodes(graph.load_graph(standin_path).graph_def).SerializeToString())
    sha = sha256_file(like)
    assert graph.load_graph(like, pinned_sha256=sha).feature_network == "inception-v3-2015"
    assert graph.load_graph(like, pinned_sha256="ab" * 32).feature_network == "unverified feature graph"
    assert graph.load_graph(like).feature_network == "unverified feature graph"
    standin_sha = sha256_file(standin_path)  # pinned, but no DecodeJpeg: not the 2015 graph
    assert graph.load_graph(standin_path, pinned_sha256=standin_sha).feature_network == "unverified feature graph"


def test_spatial_features_are_first_seven_channels_in_hwc_order(net):
    x = images(2).astype(np.float32)
    with net.graph.as_default():
        raw = net.graph.get_tensor_by_name("mixed_6/conv:0")
    full = net.session.run(raw, {net.images: x})
    _, spatial = net.run(x)
    np.testing.assert_array_equal(spatial, full[..., :7].reshape(2, -1))


def test_wrong_checksum_and_bad_files_are_rejected(standin_path, tmp_path):
    with pytest.raises(ChecksumError, match="standin.pb"):
        graph.load_graph(standin_path, expected_sha256="ab" * 32)
    garbage = tmp_path / "garbage.pb"
    garbage.write_bytes(b"\x00not a graph" * 10)
    with pytest.raises(EvalError, match="garbage.pb"):
        graph.load_graph(garbage)
    empty = tmp_path / "empty.pb"
    empty.write_bytes(tf.compat.v1.GraphDef().SerializeToString())
    with pytest.raises(EvalError, match="lacks the nodes"):
        graph.load_graph(empty)


@pytest.mark.parametrize("compressed", [False, True])
def test_features_are_batch_size_and_storage_invariant(net, tmp_path, compressed):
    x = images(23, side=12)
    path = tmp_path / "x.npz"
    (np.savez_compressed if compressed else np.savez)(path, arr_0=x)
    a = features.compute_features(net, open_images(path), batch_size=5, keep_spatial=True)
    b = features.compute_features(net, open_images(path), batch_size=23, prefetch=False)
    np.testing.assert_allclose(a.pool, b.pool, rtol=1e-5, atol=1e-5)
    mu_s, sigma_s = feature_stats(a.spatial)
    np.testing.assert_allclose(a.stats["sigma_s"], sigma_s, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(a.stats["sigma"], np.cov(a.pool, rowvar=False), rtol=1e-6, atol=1e-8)


def test_feature_cache_is_keyed_by_content(net, tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, arr_0=images(8))
    cache = tmp_path / "cache"
    f1, entry, hit = features.features_for(net, open_images(path), cache)
    assert not hit and entry.name.startswith(sha256_file(path)[:24])
    f2, _, hit = features.features_for(net, open_images(path), cache)
    assert hit and np.array_equal(f1.pool, f2.pool)
    assert [p.name for p in cache.iterdir()] == [entry.name]  # no temporary left behind
    np.savez(path, arr_0=images(8, seed=1))  # new content -> new entry
    _, entry2, hit = features.features_for(net, open_images(path), cache)
    assert not hit and entry2 != entry
    # Another evaluator algorithm or TensorFlow version: another entry, a miss.
    assert features.cache_entry(cache, path, net.loaded.sha256, "features-1/pr-1/tf-2.20") != entry2
    assert features.cache_version().endswith(f"tf-{tf.__version__}")
    calls = []
    r = features.cached_array(entry, "radii", lambda: calls.append(1) or np.arange(3.0))
    r2 = features.cached_array(entry, "radii", lambda: calls.append(1) or np.zeros(3))
    assert calls == [1] and np.array_equal(r, r2)


def test_cache_version_change_misses(net, tmp_path, monkeypatch):
    path = tmp_path / "x.npz"
    np.savez(path, arr_0=images(6))
    cache = tmp_path / "cache"
    features.features_for(net, open_images(path), cache)
    monkeypatch.setattr(features, "ALGORITHM_VERSION", "features-3/pr-9")
    _, _, hit = features.features_for(net, open_images(path), cache)
    assert not hit


def test_cache_hit_returns_spatial_features_when_asked(net, tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, arr_0=images(7))
    cache = tmp_path / "cache"
    features.features_for(net, open_images(path), cache)  # cached without spatial features
    f1, _, hit1 = features.features_for(net, open_images(path), cache, keep_spatial=True)
    f2, _, hit2 = features.features_for(net, open_images(path), cache, keep_spatial=True)
    assert (hit1, hit2) == (False, True)
    assert f2.spatial is not None and np.array_equal(f1.spatial, f2.spatial)
    assert len([p for p in cache.iterdir()]) == 1


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_damaged_cache_entry_is_recomputed(net, tmp_path, damage):
    """A cache entry with a file deleted or cut short by hand is a miss, recomputed and replaced
    (it was a FileNotFoundError traceback)."""
    path = tmp_path / "x.npz"
    np.savez(path, arr_0=images(6))
    cache = tmp_path / "cache"
    f1, entry, _ = features.features_for(net, open_images(path), cache, keep_spatial=True)
    stats = entry / "stats.npz"
    if damage == "delete":
        stats.unlink()
    else:
        stats.write_bytes(stats.read_bytes()[:20])
    f2, entry2, hit = features.features_for(net, open_images(path), cache, keep_spatial=True)
    assert not hit and entry2 == entry and np.array_equal(f1.pool, f2.pool)
    _, _, hit = features.features_for(net, open_images(path), cache, keep_spatial=True)
    assert hit and [p.name for p in cache.iterdir()] == [entry.name]


def test_non_finite_features_are_refused(net, tmp_path, monkeypatch):
    path = tmp_path / "x.npz"
    np.savez(path, arr_0=images(5))
    real = net.run

    def nan_run(batch):
        pool, spatial = real(batch)
        pool[0, 0] = np.nan
        return pool, spatial

    monkeypatch.setattr(net, "run", nan_run)
    with pytest.raises(EvalError, match="non-finite features"):
        features.compute_features(net, open_images(path))


def _digits(tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.repeat((d.images * (255 / 16)).round().astype(np.uint8)[..., None], 3, axis=-1)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(x))
    held, train = perm[:360], perm[360:]
    np.savez(tmp_path / "train.npz", arr_0=x[train], arr_1=y[train])
    np.savez(tmp_path / "held.npz", arr_0=x[held], arr_1=y[held])
    return x


def test_demo_graph_is_byte_identical_between_runs(tmp_path):
    _digits(tmp_path)
    outs = [tmp_path / f"demo{i}.pb" for i in range(2)]
    for out in outs:
        demo_net.build_demo_net(tmp_path / "train.npz", tmp_path / "held.npz", out, seed=3, epochs=1, min_accuracy=0.0)
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_demo_net_reaches_accuracy_and_carries_marker(tmp_path):
    x = _digits(tmp_path)
    out = tmp_path / "demo.pb"
    report = demo_net.build_demo_net(tmp_path / "train.npz", tmp_path / "held.npz", out)
    assert report["heldout_accuracy"] >= 0.97
    loaded = graph.load_graph(out)
    assert loaded.feature_network == "demo" and "not comparable" in loaded.demo_label
    fg = graph.FeatureGraph(loaded, threads=1)
    pool, spatial = fg.run(x[:4].astype(np.float32))
    assert pool.shape == (4, demo_net.POOL_DIM) and spatial.shape == (4, 4 * 4 * 7)
    assert fg.logits_weight().shape == (demo_net.POOL_DIM, 10)
    fg.close()
