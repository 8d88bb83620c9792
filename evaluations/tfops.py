"""The TensorFlow ops of OpenAI's P&R distance block whose rounding we cannot model in numpy.

The reference computes ``reduce_sum(square(cast(U, float16)), 1)``. TensorFlow's CPU kernel
accumulates that sum in float16 packets (partial sums rounded to float16, their number set by
the CPU's vector width), so no single-rounding model reproduces it: a float64 sum rounded once
differs in about a quarter of the rows at 2048 dimensions. We therefore run the very same ops,
on the CPU, in a TF1 graph as the reference does, per reference row batch (the values were
found not to depend on the batch's row count or the thread count, but the batches cost nothing).
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

DEVICE = "/CPU:0"  # the device whose rounding we reproduce (see docs: CPU vs GPU)


@lru_cache(maxsize=1)
def _session():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # deferred: importing TensorFlow costs seconds

    graph = tf.Graph()
    with graph.as_default(), tf.device(DEVICE):
        x = tf.compat.v1.placeholder(tf.float32, [None, None])
        norms16 = tf.reduce_sum(tf.square(tf.cast(x, tf.float16)), 1)
        norms32 = tf.reduce_sum(tf.square(x), 1)  # the float32 fallback block's norms
    return tf.compat.v1.Session(graph=graph), x, norms16, norms32


def tf_version() -> str:
    import tensorflow as tf

    return tf.__version__


def reference_norms(features: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """(float16 norms, float32 norms) as float32 arrays, computed by TensorFlow exactly as the
    reference's distance block computes them, ``batch`` rows per call."""
    sess, x, norms16, norms32 = _session()
    n = len(features)
    out16, out32 = np.empty(n, np.float32), np.empty(n, np.float32)
    for s in range(0, n, batch):
        out16[s : s + batch], out32[s : s + batch] = sess.run([norms16, norms32], {x: features[s : s + batch]})
    return out16, out32
