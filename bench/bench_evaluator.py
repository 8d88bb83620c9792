"""Benchmark the evaluator: feature-pass throughput, and stats + P&R time at 50k x 2048.

    python bench/bench_evaluator.py [--n 50000] [--n-naive 10000] [--images 512]
    python bench/bench_evaluator.py --only-scale [--n 50000 --n-ref 10000 --before-n 20000]

Writes bench/out/evaluator.json and bench/out/evaluator.md (``--only-scale`` updates just the
"P&R at scale" section: each configuration runs in a child process, so its peak RSS is its own;
"before" runs the committed (git HEAD) manifold.py on the same data for a same-load comparison). The "naive" rows follow the
reference evaluator's design (batch 64, no prefetch; scipy sqrtm; float16 distances rounded
over whole 10k-style blocks; reference radii recomputed every time) for the speed-up.
The stand-in graph has Inception's names and 299 resize but not its FLOPs: its throughput
measures our pipeline (npz streaming, batching, prefetch), not Inception itself.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ (common puts the repository on sys.path)

from common import OUT, ROOT, cpu_name, peak_rss_mb, timed, write_report  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from evaluations import manifold, metrics  # noqa: E402


def machine() -> str:
    return f"{cpu_name()}, {os.cpu_count()} cores"


def feature_pass(n_images: int, side: int) -> dict:
    from evaluations import features, graph, standin

    with tempfile.TemporaryDirectory() as d:
        standin.write_standin_graph(f"{d}/g.pb", full_resize=True)
        net = graph.FeatureGraph(graph.load_graph(f"{d}/g.pb"), threads=0)
        rng = np.random.default_rng(0)
        np.savez(f"{d}/x.npz", arr_0=rng.integers(0, 256, (n_images, side, side, 3), np.uint8))
        imgs = __import__("evaluations.npzio", fromlist=["open_images"]).open_images(f"{d}/x.npz")
        features.compute_features(net, imgs, batch_size=16)  # warm-up (graph optimisation)
        rows = {}
        for name, bs, pf in (
            ("naive (batch 64, no prefetch)", 64, False),
            ("ours (tuned batch, prefetch)", None, True),
        ):
            _, dt = timed(features.compute_features, net, imgs, batch_size=bs, prefetch=pf)
            rows[name] = {
                "images_per_s": round(n_images / dt, 1),
                "batch_size": bs or features.default_batch_size(side),
            }
        net.close()
    return rows


def naive_pr(ref: np.ndarray, sample: np.ndarray, block: int = 5000) -> tuple[float, float]:
    """Reference-style: every block fully rounded through float16; radii recomputed."""
    a, b = manifold.prepare(ref), manifold.prepare(sample)

    def radii(x):
        out = []
        for i in range(0, len(x.full), block):
            d = np.concatenate(
                [
                    manifold.exact_fp16(
                        x.norms16[i : i + block, None],
                        x.half[i : i + block] @ x.half[j : j + block].T,
                        x.norms16[None, j : j + block],
                    )
                    for j in range(0, len(x.full), block)
                ],
                axis=1,
            )
            out.append(np.partition(d, 3, axis=1)[:, 3])
        return np.concatenate(out)

    ra, rb = radii(a), radii(b)
    s_in, r_in = np.zeros(len(sample), bool), np.zeros(len(ref), bool)
    for i in range(0, len(ref), block):
        for j in range(0, len(sample), block):
            d = manifold.exact_fp16(
                a.norms16[i : i + block, None],
                a.half[i : i + block] @ b.half[j : j + block].T,
                b.norms16[None, j : j + block],
            )
            s_in[j : j + block] |= (d <= ra[i : i + block, None]).any(axis=0)
            r_in[i : i + block] |= (d <= rb[None, j : j + block]).any(axis=1)
    return float(s_in.mean()), float(r_in.mean())


def stats_and_pr(n: int, dim: int, naive: bool) -> dict:
    rng = np.random.default_rng(1)
    # Non-negative, correlated features like pool_3 (post-ReLU averages).
    mix = rng.standard_normal((dim, dim)).astype(np.float32) / np.sqrt(dim)
    ref = np.maximum(rng.standard_normal((n, dim)).astype(np.float32) @ mix, 0)
    sample = np.maximum((rng.standard_normal((n, dim)).astype(np.float32) + 0.1) @ mix, 0)
    row = {"n": n, "dim": dim}
    (mu1, s1), row["stats_s"] = timed(metrics.feature_stats, ref)
    (mu2, s2), _ = timed(metrics.feature_stats, sample)
    method = "sqrtm" if naive else "eigh"
    fid, row["fid_s"] = timed(metrics.frechet_distance, mu1, s1, mu2, s2, method)
    if naive:
        (p, r), row["pr_s"] = timed(naive_pr, ref, sample)
    else:
        a = manifold.prepare(ref)
        radii, row["ref_radii_s (cached per sweep)"] = timed(manifold.manifold_radii, a)
        pr, row["pr_s"] = timed(metrics.precision_recall, ref, sample, radii)
        row["pr_s"] += row["ref_radii_s (cached per sweep)"]  # first evaluation pays for it
        p, r = pr.precision, pr.recall
    row.update(
        fid=fid,
        precision=p,
        recall=r,
        total_s=row["stats_s"] * 2 + row["fid_s"] + row["pr_s"],
        peak_rss_mb=round(peak_rss_mb()),
    )
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}


def random_features(n: int, dim: int, shift: float, seed: int) -> np.ndarray:
    """Non-negative, correlated features like pool_3; ``seed`` fixes the mixing matrix."""
    mix = np.random.default_rng(1).standard_normal((dim, dim)).astype(np.float32) / np.sqrt(dim)
    g = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    return np.maximum((g + shift) @ mix, 0)


def radii_gflop(n: int, dim: int, block: int, symmetric: bool) -> float:
    """GEMM work of the k-NN radii: every block pair once (+ diagonal blocks) or the full n x n."""
    if not symmetric:
        return 2 * dim * n * n / 1e9
    sizes = np.diff([s.start for s in manifold._balanced_blocks(n, block)] + [n])
    return dim * (n * n + float(np.sum(sizes.astype(float) ** 2))) / 1e9


def pr_at_scale(n: int, n_ref: int, dim: int, impl: str) -> dict:
    """Stats, FID and P&R at n samples x n_ref reference; impl "after" (tree) or
    "before[@REV]" (manifold.py of git REV, default HEAD)."""
    m = manifold if impl == "after" else _head_manifold(impl.partition("@")[2] or "HEAD")
    from evaluations import tfops

    tfops._session()  # TensorFlow is loaded in the evaluator already (feature pass): untimed
    ref, sample = random_features(n_ref, dim, 0.0, 2), random_features(n, dim, 0.1, 3)
    row = {"n": n, "n_ref": n_ref, "dim": dim, "impl": impl}
    (mu1, s1), t1 = timed(metrics.feature_stats, ref)
    (mu2, s2), t2 = timed(metrics.feature_stats, sample)
    row["stats_s"] = t1 + t2
    row["fid"], row["fid_s"] = timed(metrics.frechet_distance, mu1, s1, mu2, s2, "eigh")
    (a, b), row["prepare_s"] = timed(lambda: (m.prepare(ref), m.prepare(sample)))
    ra, row["ref_radii_s"] = timed(m.manifold_radii, a, 3)
    rb, row["sample_radii_s"] = timed(m.manifold_radii, b, 3)
    (s_in, r_in), row["coverage_s"] = timed(m.coverage, a, ra, b, rb)
    row["pr_s"] = row["prepare_s"] + row["ref_radii_s"] + row["sample_radii_s"] + row["coverage_s"]
    sym = impl == "after" or "@" in impl  # both sides of a before@REV comparison are symmetric
    gemm = {
        "ref_radii": radii_gflop(n_ref, dim, 4096, sym),
        "sample_radii": radii_gflop(n, dim, 4096, sym),
        "coverage (dense)": 2 * dim * n * n_ref / 1e9,
    }
    gemm_s = row["ref_radii_s"] + row["sample_radii_s"] + row["coverage_s"]
    row.update(
        gemm_gflop=gemm,
        gflops_achieved=sum(gemm.values()) / gemm_s,
        precision=float(s_in.mean()),
        recall=float(r_in.mean()),
        total_s=row["stats_s"] + row["fid_s"] + row["pr_s"],
        peak_rss_mb=round(peak_rss_mb()),
    )
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}


def _head_manifold(rev: str = "HEAD"):
    """evaluations/manifold.py as committed at ``rev`` (the implementation to compare with)."""
    src = subprocess.run(
        ["git", "show", f"{rev}:evaluations/manifold.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "manifold_head.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("manifold_head", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["manifold_head"] = mod
    spec.loader.exec_module(mod)
    return mod


def run_child(n: int, n_ref: int, dim: int, impl: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", f"{n},{n_ref},{dim},{impl}"], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def scale_markdown(sec: dict) -> list[str]:
    lines = [
        "",
        "## P&R at scale (random features, k=3, float16 distances)",
        "",
        f"uptime before: {sec['uptime_before']}",
        f"uptime after: {sec['uptime_after']}",
        "",
        "| impl | samples x ref | stats s | FID s | prepare s | ref radii s | sample radii s |"
        " coverage s | P&R s | GEMM GFLOP | GFLOPS | peak RSS MB | P | R |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sec["rows"]:
        lines.append(
            f"| {row['impl']} | {row['n']} x {row['n_ref']} | {row['stats_s']:.1f} | "
            f"{row['fid_s']:.1f} | {row['prepare_s']:.1f} | {row['ref_radii_s']:.1f} | "
            f"{row['sample_radii_s']:.1f} | {row['coverage_s']:.1f} | "
            f"{row['pr_s']:.1f} | {sum(row['gemm_gflop'].values()):.0f} | "
            f"{row['gflops_achieved']:.0f} | {row['peak_rss_mb']} | "
            f"{row['precision']:.4f} | {row['recall']:.4f} |"
        )
    return lines + [""] + [f"{line}" for line in sec.get("notes", [])]


def markdown(res: dict) -> str:
    lines = [
        "# Evaluator benchmark",
        "",
        f"Machine: {res['machine']}; load before: {res.get('load_before')}",
        "",
        "## Feature pass (stand-in graph, 299 resize)",
        "",
        "| design | batch | images/s |",
        "|---|---|---|",
    ]
    for name, row in res.get("feature_pass", {}).items():
        lines.append(f"| {name} | {row['batch_size']} | {row['images_per_s']} |")
    lines += [
        "",
        "## Statistics + FID + precision/recall on random features",
        "",
        "| design | N | stats s | FID s | P&R s | total s | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in res.get("stats_pr", {}).items():
        lines.append(
            f"| {name} | {row['n']} | {row['stats_s']} | {row['fid_s']} | "
            f"{row['pr_s']} | {row['total_s']:.1f} | {row['peak_rss_mb']} |"
        )
    if "pr_at_scale" in res:
        lines += scale_markdown(res["pr_at_scale"])
    return "\n".join(lines) + "\n"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def only_scale(args) -> dict:
    res = (
        json.loads((OUT / "evaluator.json").read_text())
        if (OUT / "evaluator.json").exists()
        else {"machine": machine()}
    )
    sec = {"uptime_before": uptime(), "rows": []}
    if args.before_n:
        before = f"before@{args.before_rev}" if args.before_rev else "before"
        for impl in (before, "after"):
            sec["rows"].append(run_child(args.before_n, args.n_ref, args.dim, impl))
    if args.n:
        sec["rows"].append(run_child(args.n, args.n_ref, args.dim, "after"))
    sec["uptime_after"] = uptime()
    res["pr_at_scale"] = sec
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--n-naive", type=int, default=10000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--side", type=int, default=64)
    ap.add_argument("--n-ref", type=int, default=10000, help="reference size for --only-scale")
    ap.add_argument(
        "--before-n", type=int, default=20000, help="samples for the before/after pair of --only-scale (0: skip)"
    )
    ap.add_argument("--before-rev", help="git revision of the 'before' manifold.py (default HEAD)")
    ap.add_argument("--only-scale", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        n, n_ref, dim, impl = args.child.split(",")
        print(json.dumps(pr_at_scale(int(n), int(n_ref), int(dim), impl)))
        return
    if args.only_scale:
        res = only_scale(args)
        write_report(OUT, "evaluator", res, markdown(res), indent=1)
        print(markdown(res))
        return
    res = {"machine": machine(), "load_before": os.getloadavg(), "feature_pass": feature_pass(args.images, args.side)}
    res["stats_pr"] = {
        f"naive (sqrtm, full fp16 blocks), N={args.n_naive}": stats_and_pr(args.n_naive, args.dim, True),
        f"ours, N={args.n_naive}": stats_and_pr(args.n_naive, args.dim, False),
        f"ours, N={args.n}": stats_and_pr(args.n, args.dim, False),
    }
    res["load_after"] = os.getloadavg()
    write_report(OUT, "evaluator", res, markdown(res), indent=1)
    print(markdown(res))


if __name__ == "__main__":
    main()
