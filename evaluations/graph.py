"""Load, verify and run the frozen feature GraphDef (Inception-v3 2015 or the demo net).

The evaluator only relies on four names, exactly as in OpenAI's evaluator: the image tensor
``ExpandDims:0`` (float32 NHWC in 0..255, any size: the graph resizes and normalises itself),
``pool_3:0`` [N,1,1,D], ``mixed_6/conv:0`` [N,h,w,C] and the op ``softmax/logits/MatMul`` whose
second input is the [D, classes] logits weight (no bias).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluations.errors import ChecksumError, EvalError
from evaluations.npzio import sha256_file

INPUT_TENSOR = "ExpandDims:0"
POOL_TENSOR = "pool_3:0"
SPATIAL_TENSOR = "mixed_6/conv:0"
LOGITS_OP = "softmax/logits/MatMul"
SPATIAL_CHANNELS = 7  # sFID keeps the first 7 channels of mixed_6/conv (17*17*7 = 2023 values)
DEMO_MARKER = "adm_bench/demo_marker"
REQUIRED_NODES = ("ExpandDims", "pool_3", "mixed_6/conv", LOGITS_OP)

# sha256 of OpenAI's classify_image_graph_def.pb is recorded on first download (download.py);
# we pin none here that we could not verify ourselves.
INCEPTION_NAME = "inception-v3-2015"


def _tf():
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ banner out of the output
    import tensorflow as tf  # deferred: importing TensorFlow costs seconds
    return tf


@dataclass(frozen=True, eq=False)
class LoadedGraph:
    path: Path
    sha256: str
    graph_def: object      # tf.compat.v1.GraphDef
    demo_label: str | None  # the marker text when this is the demo network

    @property
    def feature_network(self) -> str:
        return "demo" if self.demo_label is not None else INCEPTION_NAME


def _marker_text(graph_def) -> str | None:
    for node in graph_def.node:
        if node.name == DEMO_MARKER:
            return node.attr["value"].tensor.string_val[0].decode("utf-8")
    return None


def load_graph(path: str | Path, expected_sha256: str | None = None) -> LoadedGraph:
    """Read and check a frozen GraphDef; a wrong checksum or missing node is an EvalError."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"{path}: feature graph not found")
    sha = sha256_file(path)
    if expected_sha256 and sha != expected_sha256.lower():
        raise ChecksumError(f"{path}: sha256 {sha} does not match the expected {expected_sha256}")
    graph_def = _tf().compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and others
        raise EvalError(f"{path}: not a valid frozen GraphDef ({exc})") from None
    names = {node.name for node in graph_def.node}
    missing = [n for n in REQUIRED_NODES if n not in names]
    if missing:
        raise EvalError(f"{path}: graph lacks the nodes {missing} of the Inception interface")
    return LoadedGraph(path, sha, graph_def, _marker_text(graph_def))


class FeatureGraph:
    """A TF1 session over the imported graph; holds the session, hence a class."""

    def __init__(self, loaded: LoadedGraph, threads: int = 0):
        tf = _tf()
        self.loaded = loaded
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3])
            pool, spatial = tf.compat.v1.import_graph_def(
                loaded.graph_def, input_map={INPUT_TENSOR: self.images},
                return_elements=[POOL_TENSOR, SPATIAL_TENSOR], name="")
            n = tf.shape(pool)[0]
            self.pool = tf.reshape(pool, [n, -1])
            # (h, w, c) flattening order, as the reference reshapes NHWC
            self.spatial = tf.reshape(spatial[..., :SPATIAL_CHANNELS], [n, -1])
            self.weight = self.graph.get_operation_by_name(LOGITS_OP).inputs[1]
        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads,
                                          inter_op_parallelism_threads=threads)
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 images [N,H,W,3] in 0..255 -> (pool [N,D], spatial [N,h*w*7]) float32."""
        pool, spatial = self.session.run([self.pool, self.spatial], {self.images: images})
        return pool.astype(np.float32), spatial.astype(np.float32)

    def logits_weight(self) -> np.ndarray:
        """The [D, classes] weight of ``softmax/logits/MatMul`` (a constant in a frozen graph)."""
        return np.asarray(self.session.run(self.weight), np.float32)

    def close(self) -> None:
        self.session.close()
