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

# sha256 of OpenAI's classify_image_graph_def.pb is recorded on first download (download.py)
# and pinned from then on (a lock file); we hard-code none that we could not verify ourselves.
INCEPTION_NAME = "inception-v3-2015"
UNVERIFIED_NAME = "unverified feature graph"
# The 2015 graph's interface beyond the four names the evaluator uses: it decodes JPEGs,
# resizes with the legacy ResizeBilinear op, and its logits weight is 2048 x 1008.
INCEPTION_2015_OPS = {
    "DecodeJpeg": "DecodeJpeg",
    "ExpandDims": "ExpandDims",
    "ResizeBilinear": "ResizeBilinear",
    LOGITS_OP: "MatMul",
}
INCEPTION_2015_WEIGHT = (2048, 1008)


def _tf():
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ banner out of the output
    import tensorflow as tf  # deferred: importing TensorFlow costs seconds

    return tf


@dataclass(frozen=True, eq=False)
class LoadedGraph:
    path: Path
    sha256: str
    graph_def: object  # tf.compat.v1.GraphDef
    demo_label: str | None  # the marker text when this is the demo network
    pinned_sha256: str | None = None  # the sha256 this run trusts as Inception's (lock file)

    @property
    def feature_network(self) -> str:
        """ "inception-v3-2015" only for the pinned file with the 2015 interface."""
        if self.demo_label is not None:
            return "demo"
        if self.pinned_sha256 == self.sha256 and has_inception_2015_interface(self.graph_def):
            return INCEPTION_NAME
        return UNVERIFIED_NAME


def _const_shape(nodes: dict, name: str) -> tuple[int, ...] | None:
    node = nodes.get(name.split(":")[0].lstrip("^"))
    while node is not None and node.op == "Identity" and node.input:  # frozen "read" ops
        node = nodes.get(node.input[0].split(":")[0])
    if node is None or node.op != "Const":
        return None
    return tuple(d.size for d in node.attr["value"].tensor.tensor_shape.dim)


def has_inception_2015_interface(graph_def) -> bool:
    nodes = {node.name: node for node in graph_def.node}
    if any(name not in nodes or nodes[name].op != op for name, op in INCEPTION_2015_OPS.items()):
        return False
    logits = nodes[LOGITS_OP]
    return len(logits.input) > 1 and _const_shape(nodes, logits.input[1]) == INCEPTION_2015_WEIGHT


def _marker_text(graph_def) -> str | None:
    for node in graph_def.node:
        if node.name == DEMO_MARKER:
            return node.attr["value"].tensor.string_val[0].decode("utf-8")
    return None


def parse_graph_def(data: bytes, path: Path):
    """A GraphDef with the evaluator's four names, else an EvalError naming ``path``."""
    graph_def = _tf().compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and others
        raise EvalError(f"{path}: not a valid frozen GraphDef ({exc})") from None
    names = {node.name for node in graph_def.node}
    missing = [n for n in REQUIRED_NODES if n not in names]
    if missing:
        raise EvalError(f"{path}: graph lacks the nodes {missing} of the Inception interface")
    return graph_def


def load_graph(path: str | Path, expected_sha256: str | None = None, pinned_sha256: str | None = None) -> LoadedGraph:
    """Read and check a frozen GraphDef; a wrong checksum or missing node is an EvalError.
    ``pinned_sha256``: the value this run trusts as Inception's (a mismatch is only a label)."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"{path}: feature graph not found")
    sha = sha256_file(path)
    if expected_sha256 and sha != expected_sha256.lower():
        raise ChecksumError(f"{path}: sha256 {sha} does not match the expected {expected_sha256}")
    graph_def = parse_graph_def(path.read_bytes(), path)
    pin = (pinned_sha256 or "").lower() or None
    return LoadedGraph(path, sha, graph_def, _marker_text(graph_def), pin)


class FeatureGraph:
    """A TF1 session over the imported graph; holds the session, hence a class."""

    def __init__(self, loaded: LoadedGraph, threads: int = 0):
        tf = _tf()
        self.loaded = loaded
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3])
            pool, spatial = tf.compat.v1.import_graph_def(
                loaded.graph_def,
                input_map={INPUT_TENSOR: self.images},
                return_elements=[POOL_TENSOR, SPATIAL_TENSOR],
                name="",
            )
            n = tf.shape(pool)[0]
            self.pool = tf.reshape(pool, [n, -1])
            # (h, w, c) flattening order, as the reference reshapes NHWC
            self.spatial = tf.reshape(spatial[..., :SPATIAL_CHANNELS], [n, -1])
            self.weight = self.graph.get_operation_by_name(LOGITS_OP).inputs[1]
        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads)
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
