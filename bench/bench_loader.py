"""Benchmark the training data path at 128x128: prepare-data's decode rate, and the per-step
loader (memory-mapped npz → this rank's rows → float NCHW) against what one GPU consumes.

    python bench/bench_loader.py [--n 20000] [--steps 40] [--jpegs 240] [--workers 2] [--no-flops]

Writes bench/out/loader.json and bench/out/loader.md. The loader runs exactly the trainers' code
(batch_indices → memmap[idx] → to_float with flips) in one process, as each torchrun rank does;
"cold" evicts the file from the page cache before every step (madvise + posix_fadvise), so every
row is read from the disk, as when a dataset is larger than RAM. GPU consumption is derived from
the 128 UNet's FLOPs counted here (torch's FlopCounterMode on the meta device, forward + backward)
and vendor peak throughputs at an assumed utilisation, stated in the report.
"""

from __future__ import annotations

import argparse
import hashlib
import mmap
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ (common puts the repository on sys.path)

from common import OUT, ROOT, count_flops, cpu_name, ram_gb, timed, write_report  # noqa: E402

from adm.data.datasets import to_float  # noqa: E402
from adm.data.ondisk import open_dataset, write_images_npz  # noqa: E402
from adm.training.draws import batch_indices  # noqa: E402

SIZE, GLOBAL_BATCH = 128, 256  # the paper's 128x128 model and batch (Table 11)
IMAGENET_TRAIN = 1_281_167  # ILSVRC-2012 training images
# Dense tensor-core peaks from the vendors' datasheets (no sparsity), FLOP/s.
PEAKS = {"A100 (fp16/bf16, 312 TFLOPS)": 312e12, "H100 SXM (bf16, 989 TFLOPS)": 989e12}
MFU = 0.4  # assumed model-FLOP utilisation of a well-tuned UNet step
READERS = 8  # reader threads of the "cold, threaded" rows


def evict(images: np.memmap) -> None:
    """Drop the file's pages: unmap ours (madvise), then the page cache's (posix_fadvise)."""
    images._mmap.madvise(mmap.MADV_DONTNEED)
    fd = os.open(images.filename, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def write_dataset(path: Path, n: int) -> float:
    """n random 128x128 images through prepare-data's own writer (no JPEG decode); returns MB/s."""
    rng = np.random.default_rng(0)
    img = SIZE * SIZE * 3

    def decode(jobs):  # stands in for the decode pool: random rows, same order and chunking
        for _ in jobs:
            yield rng.integers(0, 256, img, dtype=np.uint8).tobytes()

    _, seconds = timed(
        write_images_npz, [Path(f"img{i}") for i in range(n)], rng.integers(0, 1000, n), SIZE, path, decode
    )
    return n * img / 2**20 / seconds


def gather(images: np.memmap, idx: np.ndarray, pool=None) -> np.ndarray:
    """images[idx] (what the trainers do), or the same rows read by a thread pool: concurrent
    page faults keep several disk reads in flight when the rows are not in the page cache."""
    if pool is None:
        return images[idx]
    return np.stack(list(pool.map(lambda i: np.array(images[i]), idx)))


def loader_rate(images: np.memmap, world: int, steps: int, cold: bool, convert: bool, pool=None) -> dict:
    """Images/s of one rank's share of each global batch (rank 0 of `world`)."""
    spent, n_img = 0.0, 0
    for step in range(steps):
        if cold:
            evict(images)
        t0 = time.perf_counter()
        idx, flips = batch_indices(0, 1000 + step, GLOBAL_BATCH, len(images), rank=0, world=world)
        rows = gather(images, idx, pool)  # the only read of the dataset: this rank's rows
        if convert:
            to_float(rows, flips)  # (B/world, 3, 128, 128) float32 in [-1, 1]
        spent += time.perf_counter() - t0
        n_img += len(idx)
    return {"images_per_s": n_img / spent, "ms_per_step": 1e3 * spent / steps, "rank_batch": GLOBAL_BATCH // world}


def jpeg_folder(root: Path, count: int) -> int:
    """ImageNet-like JPEGs: 500x375 (ImageNet's most common size), smooth content + texture,
    quality 90 (~100 KB, near ImageNet's mean file size); returns the total bytes."""
    from PIL import Image

    rng, total = np.random.default_rng(1), 0
    for i in range(count):
        low = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(low).resize((500, 375), Image.BICUBIC), np.int16)
        img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        p = root / f"n{i % 10:08d}" / f"n{i % 10:08d}_{i}.JPEG"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(p, quality=90)
        total += p.stat().st_size
    return total


def prepare_rate(d: Path, count: int, workers: int) -> dict:
    src = d / "jpeg"
    size = jpeg_folder(src, count)
    rows = {}
    for w in sorted({1, workers}):
        cmd = [
            sys.executable,
            "-m",
            "adm",
            "prepare-data",
            "--dataset",
            "imagenet",
            "--data-dir",
            str(src),
            "--image-size",
            str(SIZE),
            "--out-train",
            str(d / f"prep{w}.npz"),
            "--threads",
            str(w),
            "--no-progress",
        ]
        _, dt = timed(subprocess.run, cmd, check=True, capture_output=True, cwd=ROOT)
        # dt includes the CLI's start-up and the decode pool's spawn
        rows[str(w)] = {"images_per_s": count / dt, "per_process": count / dt / w}
    return {"jpegs": count, "mean_kb": size / count / 1e3, "by_workers": rows}


def gpu_demand() -> dict:
    """FLOPs of one 128x128 training image through imagenet128-cond, counted on the meta device."""
    import torch

    from adm.nets.build import build_model
    from adm.nets.presets import get_preset

    with torch.device("meta"):
        model = build_model(get_preset("imagenet128-cond"))
    model.check_label_values = False  # label range checks need real values; meta tensors have none
    x, t, y = (
        torch.empty(1, 3, SIZE, SIZE, device="meta"),
        torch.zeros(1, dtype=torch.long, device="meta"),
        torch.zeros(1, dtype=torch.long, device="meta"),
    )
    forward = count_flops(lambda: model(x, t, y))
    train = count_flops(lambda: model(x, t, y).float().sum().backward())
    return {
        "forward_gflop": forward / 1e9,
        "train_gflop_per_image": train / 1e9,
        "mfu_assumed": MFU,
        "images_per_s": {k: peak * MFU / train for k, peak in PEAKS.items()},
        "images_per_s_at_100pct": {k: peak / train for k, peak in PEAKS.items()},
    }


def report_md(r: dict) -> str:
    m, L, g = r["machine"], r["loader"], r.get("gpu")
    lines = [
        "# Loader benchmark (128x128)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM; load average "
        f"{m['loadavg_start'][0]:.1f} at start, {r['loadavg_end'][0]:.1f} at end (shared with other jobs).",
        f"Dataset: {r['n']} random images, {r['file_gb']:.2f} GB npz (written by prepare-data's writer at "
        f"{r['write_mb_s']:.0f} MB/s). Loader = the trainers' own code per step: batch_indices → memmap[idx] → "
        "to_float (flip, [-1, 1]); one process, i.e. one torchrun rank.",
        "",
        "| rank batch (of 256) | cache | read only img/s | read + to_float img/s | ms/step |",
        "|---|---|---|---|---|",
    ]
    for key, row in L.items():
        world, cache = key.split("/")
        lines.append(
            f"| {row['full']['rank_batch']} (world {world}) | {cache} | {row['read']['images_per_s']:,.0f} | "
            f"{row['full']['images_per_s']:,.0f} | {row['full']['ms_per_step']:.1f} |"
        )
    lines += [
        "",
        f"Cold, {READERS} reader threads (same rows, concurrent page faults): "
        + ", ".join(f"world {w}: {v['images_per_s']:,.0f} img/s" for w, v in r["cold_threaded"].items())
        + ".",
    ]
    p = r["prepare"]
    lines += [
        "",
        f"prepare-data CLI (ImageNet-like 500x375 JPEG, {p['mean_kb']:.0f} KB mean, {p['jpegs']} files, "
        "start-up included): "
        + ", ".join(f"{w} process(es) {v['images_per_s']:.0f} img/s" for w, v in p["by_workers"].items())
        + f"; ImageNet's {IMAGENET_TRAIN:,} images at {p['per_process_best']:.0f} img/s per process take "
        f"~{r['imagenet_prepare_h_16']:.1f} h on 16 processes (assumes decode scales per core).",
        "",
        f"sha256 of the memory-mapped images (the training start's data identity, array_digest): "
        f"{r['sha256_gb_s']:.2f} GB/s warm → ~{63 / r['sha256_gb_s'] / 60:.1f} min for ImageNet 128's 63 GB per rank "
        "and start, plus reading 63 GB from disk.",
    ]
    if g:
        lines += [
            "",
            "## What one GPU consumes",
            f"imagenet128-cond: {g['forward_gflop']:.0f} GFLOP forward, {g['train_gflop_per_image']:.0f} GFLOP "
            "forward + backward per image (counted here on the meta device). At an assumed "
            f"{g['mfu_assumed']:.0%} utilisation of the datasheet dense peak:",
        ]
        for k, v in g["images_per_s"].items():
            lines.append(f"- {k}: ~{v:.0f} img/s (≤ {g['images_per_s_at_100pct'][k]:.0f} img/s at 100%)")
        need = max(g["images_per_s"].values())
        for key, label in (("8/warm", "world 8, page cache warm"), ("8/cold", "world 8, cold: every row from disk")):
            got = r["loader"][key]["read"]["images_per_s"]
            lines.append(
                f"- CPU work per rank on a GPU node ({label}; to_float runs on the GPU): {got:,.0f} img/s "
                f"= {got / need:.1f}x an H100 at {g['mfu_assumed']:.0%} ({need:.0f} img/s)"
            )
        lines += [
            "",
            "The task brief's figure (a few hundred img/s on an A100-class GPU) is above the FLOP bound "
            "for an A100 at 100%; the numbers above come from the counted FLOPs instead.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="images in the benchmark npz (x 48 KiB)")
    ap.add_argument("--steps", type=int, default=40, help="loader steps per row")
    ap.add_argument("--jpegs", type=int, default=240, help="JPEG files for the prepare-data rate")
    ap.add_argument("--workers", type=int, default=2, help="decode processes for the prepare-data rate")
    ap.add_argument("--no-flops", dest="flops", action="store_false", help="skip the UNet FLOP count (~30 s)")
    ap.add_argument("--tmp", default=None, help="scratch folder (default: the system temp dir)")
    a = ap.parse_args()
    r = {
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "ram_gb": ram_gb(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "loadavg_start": os.getloadavg(),
        },
        "n": a.n,
    }
    with tempfile.TemporaryDirectory(dir=a.tmp) as d:
        d = Path(d)
        r["write_mb_s"] = write_dataset(d / "train.npz", a.n)
        r["file_gb"] = (d / "train.npz").stat().st_size / 1e9
        images, _ = open_dataset(d / "train.npz", SIZE)
        assert isinstance(images, np.memmap)
        r["loader"] = {}
        for world in (1, 8):
            for cache in ("cold", "warm"):
                if cache == "warm":
                    images[:].max()  # page the whole file in
                r["loader"][f"{world}/{cache}"] = {
                    "read": loader_rate(images, world, a.steps, cache == "cold", convert=False),
                    "full": loader_rate(images, world, a.steps, cache == "cold", convert=True),
                }
        with ThreadPoolExecutor(READERS) as pool:
            r["cold_threaded"] = {str(w): loader_rate(images, w, a.steps, True, False, pool) for w in (1, 8)}
        _, seconds = timed(hashlib.sha256, memoryview(np.ascontiguousarray(images)).cast("B"))  # a view: no copy
        r["sha256_gb_s"] = images.nbytes / 1e9 / seconds
        del images
        p = prepare_rate(d, a.jpegs, a.workers)
        p["per_process_best"] = max(v["per_process"] for v in p["by_workers"].values())
        r["prepare"] = p
        r["imagenet_prepare_h_16"] = IMAGENET_TRAIN / (16 * p["per_process_best"]) / 3600
    if a.flops:
        r["gpu"] = gpu_demand()
    r["loadavg_end"] = os.getloadavg()
    write_report(OUT, "loader", r, report_md(r))
    print(report_md(r))


if __name__ == "__main__":
    main()
