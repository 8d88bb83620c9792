"""Benchmark the evaluator: feature-pass throughput, and stats + P&R time at 50k x 2048.

    python bench/bench_evaluator.py [--n 50000] [--n-naive 10000] [--images 512]
    python bench/bench_evaluator.py --only-scale [--n 50000 --n-ref 10000 --before-n 20000]
    python bench/bench_evaluator.py --paper [--inception-images 500 --dinov2-images 64 --threads 0]
    python bench/bench_evaluator.py --quick [--out DIR]

``--paper`` measures at paper size in one run, each part in a child process of its own (TensorFlow
and torch never in one; each peak RSS its own): Inception features/s at 128x128 through the
evaluator's TensorFlow path (a stand-in graph of Inception-v3's architecture, see
evaluator_paper.py), stats + FID + P&R of 50k samples x 10k reference, DINOv2 ViT-L/14 features/s
at 224; with the CPU, its flags, threads, load averages, commit and date. It updates the "paper"
section of evaluator.json; ``--quick`` runs it at toy sizes into evaluator_quick.{json,md}.

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
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ (common puts the repository on sys.path)

from common import (  # noqa: E402
    OUT,
    ROOT,
    cpu_machine,
    cpu_name,
    git_commit,
    load_average,
    peak_rss_mb,
    timed,
    utc_stamp,
    write_report,
)
from evaluator_paper import dinov2_rate, inception_rate, inception_standin, paper_markdown  # noqa: E402

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


def pr_part(n: int, n_ref: int, dim: int, impl: str = "after") -> dict:
    """pr_at_scale with the BLAS threads that did its GEMMs."""
    from threadpoolctl import threadpool_info

    row = pr_at_scale(n, n_ref, dim, impl)
    return row | {"blas_threads": max((p["num_threads"] for p in threadpool_info()), default=None)}


PARTS = {"pr": pr_part, "inception-graph": inception_standin, "inception": inception_rate, "dinov2": dinov2_rate}


def run_part(name: str, **kwargs) -> dict:
    """PARTS[name](**kwargs) in a child process (its own peak RSS; TensorFlow and torch apart),
    with the load average before and after it."""
    before = load_average()
    res = subprocess.run([sys.executable, __file__, "--part", name, json.dumps(kwargs)], capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"part {name} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1]) | {"load_before": before, "load_after": load_average()}


def scale_markdown(sec: dict, title: str = "P&R at scale (random features, k=3, float16 distances)") -> list[str]:
    lines = [
        "",
        f"## {title}",
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
    lines = ["# Evaluator benchmark", ""] + (paper_markdown(res["paper"]) if "paper" in res else [])
    if "feature_pass" in res:
        lines += designs_markdown(res)
    if "pr_at_scale" in res:
        lines += scale_markdown(res["pr_at_scale"])
    if "pr_at_scale_idle" in res:
        lines += scale_markdown(res["pr_at_scale_idle"], "P&R at scale, idle machine (rerun)")
    return "\n".join(lines) + "\n"


def designs_markdown(res: dict) -> list[str]:
    """The default run's sections: feature pass and stats + P&R, ours against the reference's design."""
    lines = [
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
    return lines


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def only_scale(args) -> dict:
    res = (
        json.loads((args.out / "evaluator.json").read_text())
        if (args.out / "evaluator.json").exists()
        else {"machine": machine()}
    )
    sec = {"uptime_before": uptime(), "rows": []}
    if args.before_n:
        before = f"before@{args.before_rev}" if args.before_rev else "before"
        for impl in (before, "after"):
            sec["rows"].append(run_part("pr", n=args.before_n, n_ref=args.n_ref, dim=args.dim, impl=impl))
    if args.n:
        sec["rows"].append(run_part("pr", n=args.n, n_ref=args.n_ref, dim=args.dim))
    sec["uptime_after"] = uptime()
    res["pr_at_scale"] = sec
    return res


# --quick: every part at toy size, a check that the run works end to end, not a measurement (more
# samples than the 2048 dimensions, so the covariances are full rank as at paper size)
QUICK = {"n": 4000, "n_ref": 3000, "inception_images": 8, "dinov2_images": 2, "dinov2_batch": 2}


def paper(args) -> dict:
    """The paper-size run: Inception features/s at --inception-side, stats + FID + P&R at
    --n x --n-ref, DINOv2 features/s, each part in its own process, in that order."""
    sizes = {k: getattr(args, k) for k in ("n", "n_ref", "dim", "inception_images", "inception_side")}
    sizes |= {k: getattr(args, k) for k in ("dinov2_images", "dinov2_batch", "threads")}
    sec = {"date": utc_stamp(), "commit": git_commit(), "machine": cpu_machine(), "sizes": sizes}
    sec["load_before"], t0 = load_average(), time.perf_counter()
    parts = sec["parts"] = {}
    with tempfile.TemporaryDirectory() as d:
        sec["inception_graph"] = run_part("inception-graph", path=f"{d}/inception_standin.pb")
        parts["inception"] = run_part(
            "inception",
            graph_path=f"{d}/inception_standin.pb",
            images=args.inception_images,
            side=args.inception_side,
            batch_size=None,
            threads=args.threads,
        )
    parts["precision_recall"] = run_part("pr", n=args.n, n_ref=args.n_ref, dim=args.dim)
    parts["dinov2"] = run_part(
        "dinov2",
        images=args.dinov2_images,
        side=args.inception_side,
        batch_size=args.dinov2_batch,
        threads=args.threads,
    )
    sec["load_after"], sec["total_s"] = load_average(), round(time.perf_counter() - t0, 1)
    return sec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50000, help="samples (stats, FID, P&R)")
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
    ap.add_argument("--paper", action="store_true", help="paper-size run of every part (see the docstring)")
    ap.add_argument("--quick", action="store_true", help=f"--paper at toy sizes {QUICK}, into evaluator_quick.*")
    ap.add_argument("--inception-images", type=int, default=500, help="images timed through Inception (--paper)")
    ap.add_argument("--inception-side", type=int, default=128, help="image side of both feature parts (--paper)")
    ap.add_argument("--dinov2-images", type=int, default=64, help="images timed through DINOv2 (--paper)")
    ap.add_argument("--dinov2-batch", type=int, default=64, help="DINOv2 batch (features-dinov2's default)")
    ap.add_argument("--threads", type=int, default=0, help="TF/torch threads of the feature parts (0: all cores)")
    ap.add_argument("--out", type=Path, default=OUT, help="report folder (default bench/out)")
    ap.add_argument("--part", nargs=2, metavar=("NAME", "KWARGS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:
        name, kwargs = args.part
        print(json.dumps(PARTS[name](**json.loads(kwargs))))
        return
    if args.paper or args.quick:
        vars(args).update(QUICK if args.quick else {})
        stem = "evaluator_quick" if args.quick else "evaluator"
        old = args.out / f"{stem}.json"
        res = json.loads(old.read_text()) if old.exists() and not args.quick else {}
        res["paper"] = paper(args)
        write_report(args.out, stem, res, markdown(res), indent=1)
        print(markdown(res))
        return
    if args.only_scale:
        res = only_scale(args)
        write_report(args.out, "evaluator", res, markdown(res), indent=1)
        print(markdown(res))
        return
    res = {"machine": machine(), "load_before": os.getloadavg(), "feature_pass": feature_pass(args.images, args.side)}
    res["stats_pr"] = {
        f"naive (sqrtm, full fp16 blocks), N={args.n_naive}": stats_and_pr(args.n_naive, args.dim, True),
        f"ours, N={args.n_naive}": stats_and_pr(args.n_naive, args.dim, False),
        f"ours, N={args.n}": stats_and_pr(args.n, args.dim, False),
    }
    res["load_after"] = os.getloadavg()
    write_report(args.out, "evaluator", res, markdown(res), indent=1)
    print(markdown(res))


if __name__ == "__main__":
    main()
