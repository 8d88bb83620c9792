"""The feature-network parts of `bench_evaluator.py --paper` and the report section of that run.

Each part runs in a child process of its own (bench_evaluator.py --part), so TensorFlow and torch
never share a process and each part's peak RSS is its own. Neither network's real weights can be
fetched here, and neither's speed depends on them:

* Inception: a stand-in graph with Inception-v3's architecture, not OpenAI's
  `classify_image_graph_def.pb`: Keras's InceptionV3 (Szegedy et al. 2016; 94 convolutions,
  ~5.7 GMAC per 299x299 image) with seeded random weights, frozen, inside the evaluator's
  interface (`ExpandDims` input in 0..255, the legacy 299x299 ResizeBilinear, `pool_3`
  [N,1,1,2048], `mixed_6/conv` [N,17,17,192], `softmax/logits/MatMul` with a 2048 x 1008
  weight). Op-level details differ from the 2015 file (its batch norm is one fused legacy op), so
  the real graph's rate may differ by some percent; `evaluations/standin.py`'s graph has the names
  but ~1/100 of the FLOPs, so it times the pipeline, not the network.
* DINOv2: the official ViT-L/14 architecture (adm/features/dinov2.py), seeded random weights,
  through the `features-dinov2` program's batch loop, PIL bicubic resize to 224 included.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ (common puts the repository on sys.path)

from common import count_flops, peak_rss_mb, timed  # noqa: E402

INCEPTION_GRAPH = (
    "stand-in graph, Inception-v3 architecture (Keras InceptionV3, random weights) in the "
    "evaluator's interface; not the real classify_image_graph_def.pb"
)
DINOV2_NETWORK = "DINOv2 ViT-L/14, official architecture (adm/features/dinov2.py), random weights"


def _random_images(path: Path, n: int, side: int) -> Path:
    """n uniform-noise uint8 images [n, side, side, 3] as arr_0 of an uncompressed npz."""
    np.savez(path, arr_0=np.random.default_rng(0).integers(0, 256, (n, side, side, 3), np.uint8))
    return path


def _conv_gmac(model) -> float:
    """Multiply-adds of the Keras model's convolutions per image, in billions."""
    import keras

    macs = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            macs += kh * kw * cin * cout * h * w
    return macs / 1e9


def inception_standin(path: str, seed: int = 0) -> dict:
    """Write the Inception-v3-architecture stand-in graph to `path` (a frozen GraphDef)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    t0 = time.perf_counter()
    import keras
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    keras.utils.set_random_seed(seed)
    base = keras.applications.InceptionV3(weights=None, include_top=False, pooling="avg", input_shape=(299, 299, 3))
    # mixed_6/conv of the 2015 graph: the 1x1 branch (192 channels, 17x17) of the 7th mixed block
    after = [layer.name for layer in base.layers].index("mixed5")
    spatial = next(
        layer.output
        for layer in base.layers[after + 1 :]
        if isinstance(layer, keras.layers.Activation) and tuple(layer.output.shape[1:]) == (17, 17, 192)
    )
    model = keras.Model(base.input, [base.output, spatial])
    fn = tf.function(lambda x: model(x, training=False))
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function(tf.TensorSpec([None, 299, 299, 3])))
    weight = np.random.default_rng(seed).standard_normal((2048, 1008)).astype(np.float32) * 0.02
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="ExpandDims")
        x = tf.raw_ops.ResizeBilinear(images=x, size=[299, 299], name="ResizeBilinear")
        pool, conv = tf.compat.v1.import_graph_def(
            frozen.graph.as_graph_def(),
            input_map={frozen.inputs[0].name: (x - 128.0) / 128.0},  # the 2015 graph's own scaling
            return_elements=[t.name for t in frozen.outputs],
            name="inception_v3",
        )
        with tf.name_scope("mixed_6"):
            tf.identity(conv, name="conv")
        pool = tf.reshape(pool, [-1, 1, 1, 2048], name="pool_3")
        with tf.name_scope("softmax"), tf.name_scope("logits"):
            tf.matmul(tf.reshape(pool, [-1, 2048]), tf.constant(weight), name="MatMul")
    Path(path).write_bytes(graph.as_graph_def().SerializeToString(deterministic=True))
    return {
        "graph": INCEPTION_GRAPH,
        "conv_gmac_per_image": round(_conv_gmac(base), 3),
        "build_s": round(time.perf_counter() - t0, 1),
        "graph_mb": round(Path(path).stat().st_size / 2**20, 1),
        "peak_rss_mb": round(peak_rss_mb()),
    }


def inception_rate(graph_path: str, images: int, side: int, batch_size: int | None, threads: int) -> dict:
    """Inception features per second through the evaluator's path (features.compute_features:
    npz streaming, prefetch thread, one session.run per batch), after one untimed batch."""
    import tensorflow as tf

    from evaluations import features, graph, npzio

    net = graph.FeatureGraph(graph.load_graph(graph_path), threads=threads)
    bs = min(batch_size or features.default_batch_size(side), images)
    with tempfile.TemporaryDirectory() as d:
        imgs = npzio.open_images(_random_images(Path(d) / "x.npz", images, side))
        _, warmup_s = timed(net.run, np.zeros((bs, side, side, 3), np.float32))  # graph optimisation
        feats, seconds = timed(features.compute_features, net, imgs, batch_size=bs)
    net.close()
    assert feats.pool.shape == (images, 2048) and "torch" not in sys.modules  # TF alone in this process
    return {
        "graph": INCEPTION_GRAPH,
        "images": images,
        "side": side,
        "batch_size": bs,
        "threads": threads or len(os.sched_getaffinity(0)),  # 0: TensorFlow's default, one per core
        "tensorflow": tf.__version__,
        "warmup_s": round(warmup_s, 2),
        "seconds": round(seconds, 2),
        "features_per_s": round(images / seconds, 2),
        "peak_rss_mb": round(peak_rss_mb()),
    }


def dinov2_rate(images: int, side: int, batch_size: int, threads: int) -> dict:
    """DINOv2 ViT-L/14 features per second through the features-dinov2 loop (PIL bicubic
    side -> 224, normalise, forward), after an untimed 2-image batch."""
    import torch

    from adm.features.dinov2 import VITL14, DinoV2, preprocess
    from adm.programs.dinov2_features import compute_features

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = DinoV2(VITL14).eval()
    size = VITL14.image_size

    def forward_one():
        with torch.device("meta"):
            DinoV2(VITL14)(torch.zeros(1, 3, size, size))

    with tempfile.TemporaryDirectory() as d:
        path = _random_images(Path(d) / "x.npz", images, side)
        with torch.no_grad():
            _, warmup_s = timed(model, preprocess(np.load(path)["arr_0"][:2], size))
        feats, seconds = timed(compute_features, model, path, batch_size, "cpu", False)
    assert feats.shape == (images, VITL14.embed_dim) and "tensorflow" not in sys.modules  # torch alone
    gflop = count_flops(forward_one) / 1e9
    return {
        "network": DINOV2_NETWORK,
        "images": images,
        "side": side,
        "resized_to": size,
        "batch_size": min(batch_size, images),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gflop_per_image": round(gflop, 1),
        "warmup_s": round(warmup_s, 2),
        "seconds": round(seconds, 2),
        "features_per_s": round(images / seconds, 3),
        "gflops_achieved": round(gflop * images / seconds, 1),
        "peak_rss_mb": round(peak_rss_mb()),
    }


def paper_markdown(sec: dict) -> list[str]:
    """The section of evaluator.md that `--paper` writes."""
    m, parts = sec["machine"], sec["parts"]
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in m["flags"].items())
    inc, pr, dino = parts["inception"], parts["precision_recall"], parts["dinov2"]

    def load(p):
        return f"{p['load_before'][0]:.2f} -> {p['load_after'][0]:.2f}"

    n60k = sec["sizes"]["n"] + sec["sizes"]["n_ref"]
    inc_gflops = 2 * sec["inception_graph"]["conv_gmac_per_image"] * inc["features_per_s"]
    return [
        "## Paper size: Inception features, stats + FID + P&R, DINOv2 features (`--paper`)",
        "",
        f"{sec['date']}, commit {sec['commit']}; {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
        f"{m['ram_gb']} GB RAM; flags: {flags}. Whole run {sec['total_s']:.0f} s; load average (1 min) "
        f"{sec['load_before'][0]:.2f} before, {sec['load_after'][0]:.2f} after.",
        "",
        "| part | size | threads | timed s | rate | peak RSS MB | load (1 min) |",
        "|---|---|---|---|---|---|---|",
        f"| Inception features (TF, evaluator path) | {inc['images']} images {inc['side']}x{inc['side']}, "
        f"batch {inc['batch_size']} | {inc['threads']} | {inc['seconds']:.1f} | {inc['features_per_s']:.1f} "
        f"features/s ({inc_gflops:.0f} GFLOPS of convolutions; {n60k / inc['features_per_s'] / 60:.0f} min per "
        f"{n60k} images) | {inc['peak_rss_mb']} "
        f"| {load(inc)} |",
        f"| stats + FID + P&R (random features) | {pr['n']} x {pr['n_ref']} x {pr['dim']} | {pr['blas_threads']} "
        f"| {pr['total_s']:.1f} | P&R {pr['pr_s']:.1f} s, FID {pr['fid_s']:.1f} s, stats {pr['stats_s']:.1f} s "
        f"| {pr['peak_rss_mb']} | {load(pr)} |",
        f"| DINOv2 ViT-L/14 features (torch, features-dinov2 path) | {dino['images']} images "
        f"{dino['side']}x{dino['side']} -> {dino['resized_to']}, batch {dino['batch_size']} | {dino['threads']} "
        f"| {dino['seconds']:.1f} | {dino['features_per_s']:.2f} features/s ({dino['gflops_achieved']:.0f} "
        f"GFLOPS at {dino['gflop_per_image']:.0f} GFLOP/image; {n60k / dino['features_per_s'] / 3600:.1f} h "
        f"per {n60k} images) | {dino['peak_rss_mb']} | {load(dino)} |",
        "",
        f"Inception graph: {inc['graph']} ({sec['inception_graph']['conv_gmac_per_image']:.2f} GMAC of "
        "convolutions per image). DINOv2: "
        f"{dino['network']}. Each part ran in its own process; timed s excludes imports, building "
        "the networks and one warm-up batch. P&R = prepare + radii of both sets + coverage (k = 3).",
        "",
    ]
