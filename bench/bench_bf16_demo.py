"""Is bf16 sampling faithful on the demo? (issue 9, item 6)

Re-samples chosen scales of a finished demo run in bf16 (same models, seed, labels, steps, batch)
and evaluates them with the run's own evaluator settings; reports each metric beside the fp32
run's value and 95% bootstrap interval, and whether the bf16 value lies inside it.

    .venv/bin/python bench/bench_bf16_demo.py --run-dir results/demo --scales 0 1 10

Writes bench/out/bf16_demo.{json,md}. bf16 on a CPU without native bf16 (AVX2) is emulated and
slow (see sampling.md): the point here is fidelity, not speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METRICS = ("fid", "sfid", "inception_score", "precision", "recall")
OUT = Path(__file__).resolve().parent / "out"


def scale_name(s: float) -> str:
    return f"{s:g}"


def run(cmd: list[str], log: Path) -> float:
    t0 = time.monotonic()
    with open(log, "w") as f:
        res = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        sys.exit(f"bench_bf16_demo: {' '.join(cmd[:4])} ... failed; see {log}")
    return time.monotonic() - t0


def sample_cmd(run_dir: Path, fp32_json: dict, out: Path, precision: str) -> list[str]:
    c = fp32_json["config"]
    return [sys.executable, "-m", "adm", "sample", "--model", str(run_dir / "diffusion/ema.pt"),
            "--classifier", str(run_dir / "classifier/model.pt"), "--scale", str(c["scale"]),
            "--num-samples", str(c["num_samples"]), "--seed", str(c["seed"]),
            "--respacing", c["respacing"], "--batch-size", str(c["batch_size"]),
            "--labels", c["labels"], "--precision", precision, "--threads", "1",
            "--no-progress", "--out", str(out)]


def eval_cmd(run_dir: Path, samples: Path, out: Path, bootstrap: int) -> list[str]:
    return [sys.executable, "-m", "evaluations.evaluator", str(run_dir / "reference/ref.npz"),
            str(samples), "--bootstrap", str(bootstrap), "--graph", str(run_dir / "featurenet/graph.pb"),
            "--label-demo", "--threads", "1", "--out", str(out)]


def compare(fp32: dict, bf16: dict) -> dict:
    rows = {}
    for m in METRICS:
        lo, hi = fp32["ci"][m]
        v = bf16["metrics"][m]
        rows[m] = {"fp32": fp32["metrics"][m], "fp32_ci": [lo, hi], "bf16": v,
                   "bf16_ci": bf16["ci"][m], "inside": bool(lo <= v <= hi)}
    return rows


def write_report(run_dir: Path, results: dict, timings: dict, bootstrap: int) -> None:
    """bench/out/bf16_demo.{json,md} from the scales finished so far (written after each one)."""
    doc = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "load_avg_1m_at_end": os.getloadavg()[0]},
           "run_dir": str(run_dir), "scales": results, "timings": timings,
           "all_inside": all(r["inside"] for rows in results.values() for r in rows.values())}
    OUT.mkdir(exist_ok=True)
    (OUT / "bf16_demo.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = ["# bf16 sampling on the demo: metrics beside the fp32 run's bootstrap intervals", "",
             f"Run: `{run_dir}` (fp32 = the DAG's own metrics); bf16 = `adm sample --precision bf16`, "
             "same models, seed, labels, steps and batch, evaluated with the same demo feature network "
             f"and {bootstrap} bootstrap resamples. Machine: {doc['machine']}. "
             f"All inside: **{doc['all_inside']}**.", "",
             "| scale | metric | fp32 | fp32 95% interval | bf16 | inside |", "|---:|:---|---:|:---|---:|:---|"]
    for name, rows in results.items():
        for m, r in rows.items():
            lo, hi = r["fp32_ci"]
            lines.append(f"| {name} | {m} | {r['fp32']:.4g} | [{lo:.4g}, {hi:.4g}] | {r['bf16']:.4g} | "
                         f"{'yes' if r['inside'] else 'NO'} |")
    (OUT / "bf16_demo.md").write_text("\n".join(lines) + "\n")



def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", type=Path, default=Path("results/demo"))
    p.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0, 10.0])
    p.add_argument("--bootstrap", type=int, default=10)
    a = p.parse_args()
    run_dir = a.run_dir
    results, timings = {}, {}
    with tempfile.TemporaryDirectory(prefix="bf16demo") as tmp:
        tmp = Path(tmp)
        for s in a.scales:
            name = scale_name(s)
            fp32_metrics = run_dir / f"metrics/scale{name}.json"
            shard_json = run_dir / f"samples/scale{name}/shard0.json"
            if not fp32_metrics.is_file() or not shard_json.is_file():
                sys.exit(f"bench_bf16_demo: {run_dir} has no finished scale {name} (run the demo DAG first)")
            fp32 = json.loads(fp32_metrics.read_text())
            samples = tmp / f"bf16_scale{name}.npz"
            t_sample = run(sample_cmd(run_dir, json.loads(shard_json.read_text()), samples, "bf16"),
                           tmp / f"sample{name}.log")
            metrics = tmp / f"bf16_scale{name}.json"
            run(eval_cmd(run_dir, samples, metrics, a.bootstrap), tmp / f"eval{name}.log")
            results[name] = compare(fp32, json.loads(metrics.read_text()))
            timings[name] = {"bf16_sampling_s": t_sample}
            print(f"scale {name}: " + ", ".join(
                f"{m} {r['bf16']:.4g} vs {r['fp32']:.4g} {'in' if r['inside'] else 'OUT'}"
                for m, r in results[name].items()), flush=True)
            write_report(run_dir, results, timings, a.bootstrap)
if __name__ == "__main__":
    main()
