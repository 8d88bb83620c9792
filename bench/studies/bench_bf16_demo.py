"""Is a sampling mode faithful on the demo? bf16, or a named fast path.

Re-samples chosen scales of a finished demo run in MODE (same models, seed, labels, steps, batch)
and evaluates them with the run's own evaluator settings; reports each metric beside the fp32
run's value and 95% bootstrap interval, and whether the mode's value lies inside it, and how far
its images moved from the run's own (uint8 pixel differences: the same samples, index by index).

    .venv/bin/python bench/studies/bench_bf16_demo.py --run-dir results/demo --scales 0 1 10 [--mode bf16]

MODE: bf16 (`--precision bf16`, both networks under autocast), a fast path of
adm.sampling.precision.FAST_MODES other than exact (`--fast fast`, `--fast compiled`), or bf16-<fast path>
(`--precision bf16 --fast fast`). Writes
bench/out/{MODE}_demo.{json,md}. bf16 on a CPU without native bf16 (AVX2) is emulated and slow
(see sampling.md): the point here is fidelity, not speed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ (common puts the repository on sys.path)

from common import OUT, cpu_name, timed, write_report  # noqa: E402

METRICS = ("fid", "sfid", "inception_score", "precision", "recall")


def scale_name(s: float) -> str:
    return f"{s:g}"


def run_logged(cmd: list[str], log: Path) -> float:
    """Runs cmd with its output in `log`; its wall seconds (exits if it fails)."""
    with open(log, "w") as f:
        res, seconds = timed(subprocess.run, cmd, stdout=f, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        sys.exit(f"bench_bf16_demo: {' '.join(cmd[:4])} ... failed; see {log}")
    return seconds


def mode_flags(mode: str) -> list[str]:
    """The `adm sample` flags of a mode: bf16 autocast, or a named fast path in fp32."""
    from adm.sampling.precision import FAST_MODES

    if mode == "bf16":
        return ["--precision", "bf16"]
    precision, _, fast = mode.rpartition("-")  # "bf16-fast": bf16 with a fast path
    if fast in FAST_MODES and fast != "exact" and precision in ("", "bf16"):
        return ["--precision", precision or "fp32", "--fast", fast]
    sys.exit(
        f"bench_bf16_demo: --mode must be bf16, a fast path of {[m for m in FAST_MODES if m != 'exact']} "
        f"or bf16-<fast path>, got {mode!r}"
    )


def pixel_change(run_dir: Path, name: str, samples: Path) -> dict:
    """uint8 differences between the run's fp32 samples and the mode's, same indices."""
    import numpy as np

    with np.load(run_dir / f"samples/scale{name}.npz") as a, np.load(samples) as b:
        if not np.array_equal(a["arr_1"], b["arr_1"]):
            sys.exit(f"bench_bf16_demo: the labels of scale {name} differ from the run's: not the same samples")
        d = np.abs(a["arr_0"].astype(np.int16) - b["arr_0"].astype(np.int16))
    per_image = d.reshape(len(d), -1).max(axis=1)
    return {
        "max_abs_uint8": int(d.max()),
        "pixels_changed": float((d > 0).mean()),
        "images_changed": int((per_image > 0).sum()),
        "images": len(d),
        "images_changed_by_more_than_8": int((per_image > 8).sum()),
    }


def sample_cmd(run_dir: Path, fp32_json: dict, out: Path, mode: str) -> list[str]:
    c = fp32_json["config"]
    return [
        sys.executable,
        "-m",
        "adm",
        "sample",
        "--model",
        str(run_dir / "diffusion/ema.pt"),
        "--classifier",
        str(run_dir / "classifier/model.pt"),
        "--scale",
        str(c["scale"]),
        "--num-samples",
        str(c["num_samples"]),
        "--seed",
        str(c["seed"]),
        "--respacing",
        c["respacing"],
        "--batch-size",
        str(c["batch_size"]),
        "--labels",
        c["labels"],
        *mode_flags(mode),
        "--threads",
        "1",
        "--no-progress",
        "--out",
        str(out),
    ]


def eval_cmd(run_dir: Path, samples: Path, out: Path, bootstrap: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "evaluations.evaluator",
        str(run_dir / "reference/ref.npz"),
        str(samples),
        "--bootstrap",
        str(bootstrap),
        "--graph",
        str(run_dir / "featurenet/graph.pb"),
        "--label-demo",
        "--threads",
        "1",
        "--out",
        str(out),
    ]


def compare(fp32: dict, other: dict, mode: str) -> dict:
    rows = {}
    for m in METRICS:
        lo, hi = fp32["ci"][m]
        v = other["metrics"][m]
        rows[m] = {
            "fp32": fp32["metrics"][m],
            "fp32_ci": [lo, hi],
            mode: v,
            f"{mode}_ci": other["ci"][m],
            "inside": bool(lo <= v <= hi),
        }
    return rows


MODE_TEXT = {"bf16": "`adm sample --precision bf16`"}


def write_mode_report(run_dir: Path, mode: str, results: dict, pixels: dict, timings: dict, bootstrap: int) -> None:
    """bench/out/{mode}_demo.{json,md} from the scales finished so far (written after each one)."""
    doc = {
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "load_avg_1m_at_end": os.getloadavg()[0]},
        "run_dir": str(run_dir),
        "mode": mode,
        "flags": mode_flags(mode),
        "scales": results,
        "pixels_vs_fp32": pixels,
        "timings": timings,
        "all_inside": all(r["inside"] for rows in results.values() for r in rows.values()),
    }
    how = MODE_TEXT.get(mode, f"`adm sample {' '.join(mode_flags(mode))}`")
    lines = [
        f"# {mode} sampling on the demo: metrics beside the fp32 run's bootstrap intervals",
        "",
        f"Run: `{run_dir}` (fp32 = the DAG's own metrics); {mode} = {how}, "
        "same models, seed, labels, steps and batch, evaluated with the same demo feature network "
        f"and {bootstrap} bootstrap resamples. Machine: {doc['machine']}. "
        f"All inside: **{doc['all_inside']}**.",
        "",
        f"| scale | metric | fp32 | fp32 95% interval | {mode} | inside |",
        "|---:|:---|---:|:---|---:|:---|",
    ]
    for name, rows in results.items():
        for m, r in rows.items():
            lo, hi = r["fp32_ci"]
            lines.append(
                f"| {name} | {m} | {r['fp32']:.4g} | [{lo:.4g}, {hi:.4g}] | {r[mode]:.4g} | "
                f"{'yes' if r['inside'] else 'NO'} |"
            )
    lines += [
        "",
        f"The same samples, index by index: {mode}'s uint8 images against the run's fp32 ones.",
        "",
        "| scale | images changed | changed by > 8 levels | pixels changed | max abs change | sampling s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for name, px in pixels.items():
        lines.append(
            f"| {name} | {px['images_changed']} of {px['images']} | {px['images_changed_by_more_than_8']} "
            f"| {100 * px['pixels_changed']:.2f}% | {px['max_abs_uint8']} | {timings[name][f'{mode}_sampling_s']:.0f} |"
        )
    write_report(OUT, f"{mode}_demo", doc, "\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", type=Path, default=Path("results/demo"))
    p.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0, 10.0])
    p.add_argument("--bootstrap", type=int, default=10)
    p.add_argument(
        "--mode",
        default="bf16",
        help="bf16, a fast path of adm.sampling.precision.FAST_MODES (fast, compiled), or bf16-fast",
    )
    a = p.parse_args()
    run_dir, mode = a.run_dir, a.mode
    mode_flags(mode)  # a bad mode is refused before anything runs
    results, pixels, timings = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix=f"{mode}demo") as tmp:
        tmp = Path(tmp)
        for s in a.scales:
            name = scale_name(s)
            fp32_metrics = run_dir / f"metrics/scale{name}.json"
            shard_json = run_dir / f"samples/scale{name}/shard0.json"
            if not fp32_metrics.is_file() or not shard_json.is_file():
                sys.exit(f"bench_bf16_demo: {run_dir} has no finished scale {name} (run the demo DAG first)")
            fp32 = json.loads(fp32_metrics.read_text())
            samples = tmp / f"{mode}_scale{name}.npz"
            t_sample = run_logged(
                sample_cmd(run_dir, json.loads(shard_json.read_text()), samples, mode), tmp / f"sample{name}.log"
            )
            metrics = tmp / f"{mode}_scale{name}.json"
            run_logged(eval_cmd(run_dir, samples, metrics, a.bootstrap), tmp / f"eval{name}.log")
            results[name] = compare(fp32, json.loads(metrics.read_text()), mode)
            pixels[name] = pixel_change(run_dir, name, samples)
            timings[name] = {f"{mode}_sampling_s": t_sample}
            print(
                f"scale {name}: "
                + ", ".join(
                    f"{m} {r[mode]:.4g} vs {r['fp32']:.4g} {'in' if r['inside'] else 'OUT'}"
                    for m, r in results[name].items()
                )
                + f"; pixels {pixels[name]}",
                flush=True,
            )
            write_mode_report(run_dir, mode, results, pixels, timings, a.bootstrap)


if __name__ == "__main__":
    main()
