"""Demo feature network: a small CNN on the 8x8 digits, frozen with Inception's interface.

Inception-v3 weights cannot be downloaded here, and Inception features of 8x8 digits would be
meaningless anyway, so the demo pipeline evaluates with its own classifier. It is frozen into a
GraphDef with the same names as ``classify_image_graph_def.pb`` (``ExpandDims`` input in 0..255,
``mixed_6/conv`` 4x4x16 map, ``pool_3`` [N,1,1,64], ``softmax/logits/MatMul`` without bias), so
the evaluator runs unchanged. A constant ``adm_bench/demo_marker`` labels every number computed
with it as "demo" -- they are not comparable with the paper.

    python -m evaluations.demo_net --train TRAIN.npz --heldout HELDOUT.npz --out GRAPH.pb
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from evaluations import atomic
from evaluations.atomic import atomic_path
from evaluations.errors import EvalError
from evaluations.graph import DEMO_MARKER, FeatureGraph, load_graph
from evaluations.npzio import sha256_file

DEMO_LABEL = "demo feature network \u2014 not comparable with the paper"
SIDE = 8  # the graph resizes any input to 8x8, as Inception resizes to 299
POOL_DIM = 64
SPATIAL_CH = 16
NUM_CLASSES = 10


def load_labeled(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path) as data:
            x, y = data["arr_0"], data["arr_1"].astype(np.int64)
    except (OSError, KeyError, ValueError) as exc:
        raise EvalError(f"{path}: need arr_0 images and arr_1 labels ({exc})") from None
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3 or len(x) != len(y):
        raise EvalError(f"{path}: arr_0 must be uint8 [N,H,W,3] with one arr_1 label per image")
    if y.min() < 0 or y.max() >= NUM_CLASSES:
        raise EvalError(f"{path}: labels must lie in 0..{NUM_CLASSES - 1}")
    return x, y


def init_params(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def he(*shape):  # He initialisation: fan-in = all but the last axis
        return (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[:-1]))).astype(np.float32)

    return {
        "c1": he(3, 3, 3, 32),
        "b1": np.zeros(32, np.float32),
        "c2": he(3, 3, 32, SPATIAL_CH),
        "b2": np.zeros(SPATIAL_CH, np.float32),
        "c3": he(3, 3, SPATIAL_CH, 32),
        "b3": np.zeros(32, np.float32),
        "d": he(4 * 4 * 32, POOL_DIM),
        "bd": np.zeros(POOL_DIM, np.float32),
        "w": he(POOL_DIM, NUM_CLASSES),
    }


def forward(tf, images, p):
    """images float32 [N,H,W,3] in 0..255 -> (spatial, pool, logits); op names as Inception."""
    x = tf.image.resize(images, [SIDE, SIDE], method="bilinear")
    x = x / 127.5 - 1.0
    h = tf.nn.relu(tf.nn.conv2d(x, p["c1"], 1, "SAME") + p["b1"])  # (N, 8, 8, 32)
    with tf.name_scope("mixed_6"):
        spatial = tf.nn.conv2d(h, p["c2"], 2, "SAME", name="conv")  # (N, 4, 4, 16)
    h = tf.nn.relu(spatial + p["b2"])
    h = tf.nn.relu(tf.nn.conv2d(h, p["c3"], 1, "SAME") + p["b3"])  # (N, 4, 4, 32)
    # A dense layer rather than Inception's average pool: on a 4x4 map, global averaging
    # throws away the layout that tells digits apart.
    h = tf.nn.relu(tf.matmul(tf.reshape(h, [-1, 4 * 4 * 32]), p["d"]) + p["bd"])  # (N, 64)
    pool = tf.reshape(h, [-1, 1, 1, POOL_DIM], name="pool_3")  # (N, 1, 1, 64)
    with tf.name_scope("softmax/"):  # trailing "/": re-enter the scope holding the weights
        flat = tf.reshape(pool, [-1, POOL_DIM])
        with tf.name_scope("logits"):
            logits = tf.matmul(flat, p["w"], name="MatMul")  # no bias: IS = softmax(pool @ W)
        tf.nn.softmax(logits, name="softmax")
    return spatial, pool, logits


def train(
    x: np.ndarray, y: np.ndarray, seed: int = 0, epochs: int = 40, batch: int = 64, lr: float = 1e-2
) -> dict[str, np.ndarray]:
    """Adam on cross-entropy with +-1 pixel shifts; deterministic given the seed."""
    import tensorflow as tf

    tf.random.set_seed(seed)
    params = {k: tf.Variable(v) for k, v in init_params(seed).items()}
    moments = {k: (tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))) for k, v in params.items()}

    @tf.function  # one traced graph per step: eager op dispatch would dominate on 1 thread
    def step(xb, yb, rate, t):
        with tf.GradientTape() as tape:
            logits = forward(tf, xb, params)[2]
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(yb, logits))
        for k, g in tape.gradient(loss, params).items():  # Adam, beta = (0.9, 0.999)
            m, v = moments[k]
            m.assign(0.9 * m + 0.1 * g)
            v.assign(0.999 * v + 0.001 * g * g)
            m_hat, v_hat = m / (1 - 0.9**t), v / (1 - 0.999**t)
            params[k].assign_sub(rate * m_hat / (tf.sqrt(v_hat) + 1e-8))

    rng = np.random.default_rng(seed)
    xf, t = x.astype(np.float32), 0
    for epoch in range(epochs):
        rate = np.float32(lr * 0.5 * (1 + np.cos(np.pi * epoch / epochs)))  # cosine decay
        for idx in np.array_split(rng.permutation(len(x)), max(1, len(x) // batch)):
            t += 1
            xb = np.roll(xf[idx], tuple(rng.integers(-1, 2, 2)), axis=(1, 2))  # +-1 px shift
            step(xb, y[idx], rate, np.float32(t))
    return {k: v.numpy() for k, v in params.items()}


def freeze(params: dict[str, np.ndarray], meta: dict) -> bytes:
    """A GraphDef with the weights as constants, the Inception names and the demo marker."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="ExpandDims")
        consts = {k: tf.constant(v, name=f"demo_{k}") for k, v in params.items() if k != "w"}
        with tf.name_scope("softmax/"):
            consts["w"] = tf.constant(params["w"], name="weights")
        forward(tf, images, consts)
        with tf.name_scope("adm_bench"):
            tf.constant(DEMO_LABEL, name="demo_marker")
            tf.constant(json.dumps(meta, sort_keys=True), name="demo_meta")
    graph_def = graph.as_graph_def()
    assert any(n.name == DEMO_MARKER for n in graph_def.node)
    return graph_def.SerializeToString(deterministic=True)  # attr maps in a fixed order


def heldout_accuracy(graph_path: Path, x: np.ndarray, y: np.ndarray, threads: int) -> float:
    """Accuracy of the frozen graph itself, through the evaluator's own import path."""
    net = FeatureGraph(load_graph(graph_path), threads=threads)
    try:
        pool, _ = net.run(x.astype(np.float32))
        return float(np.mean(np.argmax(pool @ net.logits_weight(), axis=1) == y))
    finally:
        net.close()


def build_demo_net(
    train_npz, heldout_npz, out, seed: int = 0, threads: int = 1, epochs: int = 40, min_accuracy: float = 0.97
) -> dict:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    tf.config.experimental.enable_op_determinism()
    (x, y), (xh, yh) = load_labeled(train_npz), load_labeled(heldout_npz)
    t0 = time.time()
    params = train(x, y, seed=seed, epochs=epochs)
    meta = {"seed": seed, "epochs": epochs, "train_sha256": sha256_file(train_npz), "num_train": int(len(x))}
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_bytes(freeze(params, meta))
        acc = heldout_accuracy(tmp, xh, yh, threads)
        if acc < min_accuracy:
            raise EvalError(
                f"demo net reached only {acc:.4f} held-out accuracy on {heldout_npz} "
                f"(< {min_accuracy}); not writing {out}"
            )
    report = {
        **meta,
        "heldout_accuracy": acc,
        "num_heldout": int(len(xh)),
        "train_seconds": round(time.time() - t0, 2),
        "sha256": sha256_file(out),
        "label": DEMO_LABEL,
    }
    atomic.write_text(out.with_suffix(".json"), json.dumps(report, indent=1, ensure_ascii=False))
    return report


EXAMPLES = """\
example:
  # train on the demo digits, freeze to a GraphDef (and graph.json: held-out accuracy)
  python -m evaluations.demo_net --train data/train.npz --heldout data/heldout.npz \\
      --out featurenet/graph.pb
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m evaluations.demo_net",
        description=__doc__.split("\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--train", required=True)
    ap.add_argument("--heldout", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--min-accuracy", type=float, default=0.97)
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        report = build_demo_net(
            args.train, args.heldout, args.out, args.seed, args.threads, args.epochs, args.min_accuracy
        )
    except EvalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"held-out accuracy {report['heldout_accuracy']:.4f} ({report['train_seconds']} s); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
