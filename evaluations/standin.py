"""A stand-in GraphDef with Inception-v3's interface and random fixed-seed weights.

The real ``classify_image_graph_def.pb`` cannot be fetched in tests or offline benchmarks. This
graph has the same node names and tensor shapes (``ExpandDims``, ``pool_3`` [N,1,1,2048],
``mixed_6/conv`` [N,17,17,192], ``softmax/logits/MatMul`` with a 2048 x 1008 weight), so the
evaluator's graph-import path runs unchanged on it. Its numbers mean nothing.
"""

from __future__ import annotations

import numpy as np

POOL_DIM = 2048
SPATIAL_SHAPE = (17, 17, 192)
NUM_LOGITS = 1008


def build_standin_graph_def(seed: int = 0, full_resize: bool = False, small: bool = False):
    """``full_resize``: resize to 299 like Inception (for throughput benchmarks); otherwise to
    37, the smallest input from which a 5x5 stride-2 convolution gives the 17x17 map.
    ``small``: same names, but a 4x4x8 map, 64 pool features and 10 logits, for CLI tests whose
    2048-dimensional covariances would cost minutes on a shared 2-core machine."""
    side, pool_dim, n_logits, channels = (11, 64, 10, 8) if small else (37, POOL_DIM, NUM_LOGITS, SPATIAL_SHAPE[2])
    import tensorflow as tf

    rng = np.random.default_rng(seed)

    def const(shape, name, scale):
        return tf.constant(rng.standard_normal(shape).astype(np.float32) * scale, name=name)

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="ExpandDims")
        # The legacy ResizeBilinear (align_corners=False, half_pixel_centers=False) that
        # Inception's graph uses, so tests run it; TF2's tf.image.resize sets half-pixel centres.
        if full_resize:
            x = tf.raw_ops.ResizeBilinear(images=x, size=[299, 299], name="ResizeBilinear")
            x = tf.nn.avg_pool2d(x, 8, 8, "VALID")  # 299 -> 37
        else:
            x = tf.raw_ops.ResizeBilinear(images=x, size=[side, side], name="ResizeBilinear")
        x = (x - 128.0) / 128.0  # the graph normalises its 0..255 input itself, after resizing
        with tf.name_scope("mixed_6"):
            spatial = tf.nn.conv2d(x, const((5, 5, 3, channels), "w", 0.2), 2, "VALID", name="conv")
        h = tf.reduce_mean(tf.nn.relu(spatial), axis=[1, 2])  # (N, 192)
        h = tf.nn.relu(tf.matmul(h, const((channels, pool_dim), "w_pool", 0.3)))  # (N, 2048)
        pool = tf.reshape(h, [-1, 1, 1, pool_dim], name="pool_3")
        with tf.name_scope("softmax"):
            weights = const((pool_dim, n_logits), "weights", 0.05)
            flat = tf.reshape(pool, [-1, pool_dim])
            with tf.name_scope("logits"):
                logits = tf.matmul(flat, weights, name="MatMul")
            tf.nn.softmax(logits, name="softmax")
    return graph.as_graph_def()


def write_standin_graph(path, seed: int = 0, full_resize: bool = False, small: bool = False) -> None:
    from pathlib import Path

    graph_def = build_standin_graph_def(seed, full_resize, small)
    Path(path).write_bytes(graph_def.SerializeToString(deterministic=True))
