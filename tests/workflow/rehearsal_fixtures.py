"""The files the paper config downloads, built locally and served from 127.0.0.1.

`config/imagenet128.yaml` fetches OpenAI's released checkpoints, the VIRTUAL reference batch and
the Inception graph. The dress rehearsal (tests/workflow/test_rehearsal.py, .test/config/rehearsal.yaml) needs
files of the same kinds that no network has to provide:

- the real 128x128 architectures (`imagenet128-cond`, `imagenet128-classifier`) with seeded
  random weights, written as OpenAI writes them: a plain state_dict with OpenAI's key names and no
  JSON beside it; every other tensor is stored float16, the rest float32, so both paths load;
- a VIRTUAL-style reference npz: `arr_0` uint8 images, `arr_1` labels, and precomputed
  `mu`/`sigma` (2048) and `mu_s`/`sigma_s` (7*17*17 = 2023) computed from those images with the
  served graph (by `python -m evaluations.reference --build-from ... --graph`);
- a frozen graph with Inception-v3's tensor names (`evaluations.standin`), whose numbers mean
  nothing: results computed with it must say the graph is not verified Inception;
- only when asked (`upsample=True`, `--upsample`): the 128->512 upsampler (`upsample128-512`,
  `128_512_upsampler.pt`) with seeded random weights in the same format, and a VIRTUAL-style
  512x512 reference batch (`VIRTUAL_imagenet512.npz`) with statistics from the same graph, for
  the opt-in rehearsal of the upsampling stage (tests/workflow/test_rehearsal_upsample.py). Without it the
  tree, its files and their bytes are those of the default rehearsal.

`FileServer` serves a folder over HTTP on 127.0.0.1 in a thread, with byte ranges (as the blob
store does, so a resumed download is really resumed) and one route that answers HTML with status
200, as a captive portal or an error page would.

By hand:  python tests/workflow/rehearsal_fixtures.py DIR [--port 8642] [--upsample]   (build DIR, then serve it)
"""

from __future__ import annotations

import hashlib
import http.server
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

# Where the paper config's files live under the served root: the same relative layout as
# OpenAI's blob store, so only the host part of each URL changes.
CHECKPOINT_DIR = "diffusion/jul-2021"
DIFFUSION_FILE = "128x128_diffusion.pt"
CLASSIFIER_FILE = "128x128_classifier.pt"
REFERENCE_PATH = "diffusion/jul-2021/ref_batches/imagenet/128/VIRTUAL_imagenet128_labeled.npz"
GRAPH_PATH = "diffusion/jul-2021/ref_batches/classify_image_graph_def.pb"
UPSAMPLER_FILE = "128_512_upsampler.pt"  # config/imagenet128.yaml upsample.checkpoint
UPSAMPLE_REFERENCE_PATH = "diffusion/jul-2021/ref_batches/imagenet/512/VIRTUAL_imagenet512.npz"
DINOV2_PATH = "dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth"  # under the served root
HTML_PATH = "portal/login.html"  # any path under portal/ answers this page with status 200
HTML_PAGE = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Sign in to continue</body></html>\n"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- checkpoints in OpenAI's format


def random_state_dict(preset: str, seed: int, half_every: int = 2):
    """Seeded random weights for every tensor of `preset`, in the network's own key order.

    Not the network's initialisation: that zeroes the last layer of every block (the output would
    be exactly 0 and hide any wiring bug). Weights are N(0, 1/fan_in), so activations stay O(1)
    through the ~30 blocks; 1-D `weight`s (GroupNorm scales) are 1 + N(0, 0.1²), biases N(0, 0.1²).
    Every `half_every`-th tensor is stored float16, the others float32."""
    import torch

    from adm.nets.build import build_model
    from adm.nets.presets import get_preset

    with torch.device("meta"):  # shapes only: nothing is allocated
        shapes = {k: v.shape for k, v in build_model(get_preset(preset)).state_dict().items()}
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for i, (key, shape) in enumerate(shapes.items()):
        noise = torch.randn(shape, generator=gen)
        if len(shape) > 1:
            tensor = noise * math.prod(shape[1:]) ** -0.5
        elif key.endswith(".weight"):
            tensor = 1.0 + 0.1 * noise
        else:
            tensor = 0.1 * noise
        state[key] = tensor.half() if half_every and i % half_every == half_every - 1 else tensor
    return state


def write_openai_checkpoint(preset: str, path: str | os.PathLike, seed: int) -> str:
    """A released-style file: torch.save of a plain state_dict, no JSON beside it; its sha256."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_state_dict(preset, seed), path)
    return sha256_file(path)


# ---------------------------------------------------------------- graph and reference batch


def write_graph(path: str | os.PathLike, seed: int = 0) -> str:
    """The stand-in frozen graph (Inception's names and shapes), built in a TensorFlow process of
    its own so the test process never imports TensorFlow next to torch; its sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    code = (
        "import sys; from evaluations.standin import write_standin_graph; "
        "write_standin_graph(sys.argv[1], seed=int(sys.argv[2]))"
    )
    _run_python(["-c", code, str(path), str(seed)])
    return sha256_file(path)


def write_dinov2_weights(path: str | os.PathLike, seed: int = 0) -> str:
    """DINOv2 ViT-L/14 in the official checkpoint's key layout and shapes (304M parameters), seeded
    random values in float16 (half the official file's size; loading casts to float32): small
    N(0, 0.02^2) weights, unit norm scales, LayerScale 1e-5 as the official init; its sha256."""
    import torch

    from adm.features.dinov2 import DinoV2

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in DinoV2().state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("gamma"):
            state[key] = torch.full(shape, 1e-5, dtype=torch.float16)
        elif ("norm" in key and key.endswith("weight")) or key.endswith("bias"):
            state[key] = (torch.ones if key.endswith("weight") else torch.zeros)(shape, dtype=torch.float16)
        else:
            state[key] = (torch.randn(shape, generator=g) * 0.02).half()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return sha256_file(path)


def place(src: str | os.PathLike, dest: str | os.PathLike) -> str:
    """A built file put at `dest` of a served tree (hard link, or a copy across file systems); its sha256."""
    import shutil

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
    return sha256_file(dest)


def random_images(n: int, size: int, seed: int) -> np.ndarray:
    """Smooth random uint8 images [n, size, size, 3] (blurred blobs, not white noise, so the
    features vary from image to image as they would on photographs)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (n, 8, 8, 3))
    reps = -(-size // 8)
    images = np.repeat(np.repeat(coarse, reps, axis=1), reps, axis=2)[:, :size, :size]
    return np.clip(images + rng.normal(0, 12, images.shape), 0, 255).astype(np.uint8)


def write_reference_batch(
    path: str | os.PathLike,
    graph: str | os.PathLike,
    n: int = 16,
    size: int = 128,
    seed: int = 0,
    with_stats: bool = True,
) -> str:
    """VIRTUAL-style npz: arr_0 uint8 [n,size,size,3], arr_1 labels and, with `with_stats`, the
    mu/sigma/mu_s/sigma_s that `graph` gives for these very images; its sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images_npz = path.with_name(path.stem + ".images.npz")
    labels = np.random.default_rng(seed + 1).integers(0, 1000, n, dtype=np.int64)
    np.savez(images_npz, arr_0=random_images(n, size, seed), arr_1=labels)
    if not with_stats:
        os.replace(images_npz, path)
        return sha256_file(path)
    try:
        _run_python(
            [
                "-m",
                "evaluations.reference",
                "--build-from",
                str(images_npz),
                "--out",
                str(path),
                "--graph",
                str(graph),
                "--threads",
                "1",
            ]
        )
    finally:
        images_npz.unlink(missing_ok=True)
    return sha256_file(path)


def _run_python(args: list[str]) -> None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{args[:3]} failed:\n{res.stderr[-3000:]}")


def build_served_tree(
    root: str | os.PathLike,
    ref_images: int = 16,
    seed: int = 0,
    upsample: bool = False,
    dinov2: str | os.PathLike | None = None,
) -> dict:
    """Every file the paper config downloads, under `root` at OpenAI's relative paths.
    Returns {name: {"path": relative path, "sha256": ...}} for diffusion, classifier, reference,
    graph, dinov2 and, with `upsample`, upsampler and upsample_reference (built after the others,
    so the default files are the same bytes either way). `dinov2`: a stand-in already written by
    write_dinov2_weights (the session's `dinov2_standin`), linked into the tree instead of
    building the 600 MB file again."""
    root = Path(root)
    files = {
        "graph": GRAPH_PATH,
        "reference": REFERENCE_PATH,
        "diffusion": f"{CHECKPOINT_DIR}/{DIFFUSION_FILE}",
        "classifier": f"{CHECKPOINT_DIR}/{CLASSIFIER_FILE}",
    }
    sha = {"graph": write_graph(root / GRAPH_PATH, seed)}
    sha["reference"] = write_reference_batch(root / REFERENCE_PATH, root / GRAPH_PATH, ref_images, 128, seed)
    sha["diffusion"] = write_openai_checkpoint("imagenet128-cond", root / files["diffusion"], seed)
    sha["classifier"] = write_openai_checkpoint("imagenet128-classifier", root / files["classifier"], seed + 1)
    files["dinov2"] = DINOV2_PATH  # the paper config computes FD_DINOv2 beside FID
    sha["dinov2"] = place(dinov2, root / DINOV2_PATH) if dinov2 else write_dinov2_weights(root / DINOV2_PATH, seed + 3)
    if upsample:
        files["upsampler"] = f"{CHECKPOINT_DIR}/{UPSAMPLER_FILE}"
        files["upsample_reference"] = UPSAMPLE_REFERENCE_PATH
        sha["upsampler"] = write_openai_checkpoint("upsample128-512", root / files["upsampler"], seed + 2)
        sha["upsample_reference"] = write_reference_batch(
            root / UPSAMPLE_REFERENCE_PATH, root / GRAPH_PATH, ref_images, 512, seed + 2
        )
    return {name: {"path": rel, "sha256": sha[name]} for name, rel in files.items()}


# ---------------------------------------------------------------- the HTTP server


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files with single byte ranges (`Range: bytes=N-`), plus the HTML trap."""

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def do_GET(self):
        if self.path.lstrip("/").startswith("portal/"):
            self._send(200, HTML_PAGE, "text/html; charset=utf-8")
            return
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self._send(404, b"not found\n", "text/plain")
            return
        size = path.stat().st_size
        start = _range_start(self.headers.get("Range"))
        if start is not None and start >= size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size - (start or 0)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(start or 0)
            while block := f.read(1 << 20):
                self.wfile.write(block)

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _range_start(header: str | None) -> int | None:
    """`bytes=N-` -> N; anything else (absent, multi-range, suffix) -> None: send it all."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[len("bytes=") :].partition("-")
    return int(first) if first.isdigit() and not last else None


class FileServer:
    """`with FileServer(root) as server:` serves `root` at `server.url` (http://127.0.0.1:PORT)."""

    def __init__(self, root: str | os.PathLike, port: int = 0):
        handler = lambda *a, **kw: _Handler(*a, directory=str(root), **kw)  # noqa: E731
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="build the rehearsal's served files, then serve them")
    ap.add_argument("root")
    ap.add_argument("--port", type=int, default=8642)
    ap.add_argument(
        "--upsample",
        action="store_true",
        help="also the 128->512 upsampler and the 512 reference (.test/config/rehearsal_upsample.yaml)",
    )
    args = ap.parse_args()
    wanted = UPSAMPLE_REFERENCE_PATH if args.upsample else REFERENCE_PATH
    if not (Path(args.root) / wanted).exists():
        for name, info in build_served_tree(args.root, upsample=args.upsample).items():
            print(f"{name}: {info['path']} sha256 {info['sha256']}")
    with FileServer(args.root, args.port) as server:
        print(f"serving {args.root} at {server.url} (Ctrl-C stops)")
        threading.Event().wait()
