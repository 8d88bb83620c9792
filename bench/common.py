"""What the bench scripts share: the repository on sys.path, the machine a report was measured on,
a UTC stamp, timing and peak memory, FLOP counting, and the JSON + Markdown pair every report is.

Importing this module puts the repository root on sys.path, so a script started as
`python bench/x.py` (or `python bench/studies/x.py`) imports `adm` and `evaluations`. It imports
the standard library only: bench_evaluator.py runs TensorFlow and must not pull torch in, so
torch is imported inside the functions that need it.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"  # where the committed reports live
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# CPU features that decide which kernels torch can use (bf16 is emulated without the first two)
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16")


# Dense spec-sheet peaks in TFLOP/s (fp32 without TF32, tf32, bf16, fp16 with fp32 accumulate).
PEAKS = {
    "H200": (67, 495, 989, 989),
    "H100 PCIe": (51, 378, 756, 756),
    "H100": (67, 495, 989, 989),
    "A100": (19.5, 156, 312, 312),
    "L40S": (91.6, 183, 362, 362),
    "L4": (30.3, 60, 121, 121),
    "A10": (31.2, 62.5, 125, 125),
    "V100": (15.7, None, None, 125),
}
# Table 1: 8 scales x 50,000 samples x 250 DDPM steps; scale 0 runs without the classifier.
TABLE1 = {"scales": 8, "guided_scales": 7, "samples": 50_000, "steps": 250}


def utc_stamp() -> str:
    """The date line of a report: '2026-12-03 13:57 UTC'."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def _cpuinfo(key: str) -> str | None:
    """The first value of `key` in /proc/cpuinfo (None off Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The CPU's model name ('AMD EPYC ...'); the architecture where /proc/cpuinfo has none."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> dict[str, bool]:
    """Which of CPU_FLAGS this CPU has."""
    flags = set((_cpuinfo("flags") or "").split())
    return {f: f in flags for f in CPU_FLAGS}


def ram_gb() -> float:
    """Total RAM in GB (GiB, one decimal), from /proc/meminfo."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            return round(int(line.split()[1]) / 2**20, 1)
    raise OSError("no MemTotal in /proc/meminfo")


def git_commit() -> str:
    """The commit a report measured: HEAD's hash, with "+dirty" when tracked files differ from it."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, two decimals (other jobs on the cores show here)."""
    return [round(x, 2) for x in os.getloadavg()]


def cpu_machine() -> dict:
    """The CPU a figure depends on, without torch: model, flags, cores (and those this process may
    run on, which a container or taskset can restrict), RAM."""
    return {
        "cpu": cpu_name(),
        "flags": cpu_flags(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gb": ram_gb(),
    }


def torch_machine() -> dict:
    """The CPU and torch build a sampling figure depends on (the sampling and profile reports)."""
    import torch

    flags = cpu_flags()
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "flags": flags,
        "native_bf16": flags["avx512_bf16"] or flags["amx_bf16"],
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, *args, **kwargs):
    """(fn(*args, **kwargs), wall seconds)."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def timed_cpu(fn, *args, **kwargs):
    """(fn(*args, **kwargs), wall seconds, this process's CPU seconds). On a shared machine the CPU
    time is the steadier figure: other processes' load adds wall time, not ours."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0, time.process_time() - c0


def count_flops(fn) -> int:
    """FLOPs torch's counter sees while fn() runs (2 per multiply-add of convolutions and matmuls);
    build the networks on the meta device and nothing is computed."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def write_report(out: Path | str, stem: str, data: dict, md: str, indent: int = 2) -> None:
    """out/{stem}.json (values json cannot write become strings) and out/{stem}.md."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(data, indent=indent, default=str) + "\n")
    (out / f"{stem}.md").write_text(md)


def matching_mode(value: float, modes: dict) -> str | None:
    """The bf16 mode whose drift equals `value` to float32 resolution (the same computation), if any."""
    for name, m in modes.items():
        if abs(m["max_abs"] - value) <= 1e-6 * abs(value):
            return name
    return None


def bf16_drift_section(d: dict) -> list[str]:
    """The section of sampling.md rendered from sampling.json's "bf16_drift" (which
    studies/bench_drift.py measures and bench_sampling.py's markdown includes)."""
    m, w = d["modes"], d["worst"]
    first = w["steps"][0]
    earlier = "; ".join(
        f"`{case}` {v:.4e} = {matching_mode(v, m) or 'no mode measured here'}"
        for case, v in d.get("earlier", {}).items()
    )
    rows = [
        f"| {k} | {v['max_abs']:.2e} | {v['median_per_sample_max']:.1e} | {v['pixels_over_0.1']} of "
        f"{v['pixels']} | {v['samples_over_0.1']} of {d['batch']} |"
        for k, v in m.items()
    ]
    trace = [
        f"| {s['t']} | {s['x_t_fp32']:.5f} / {s['x_t_bf16']:.5f} | {s['eps_fp32']:.5f} / {s['eps_bf16']:.5f} "
        f"| {s['x0_hat_fp32']:.4f} / {s['x0_hat_bf16']:.4f} |"
        for s in w["steps"]
    ]
    amp = d["sqrt_recipm1_alpha_bar_per_step"][0]
    return [
        "## Why bf16's x_0 drift read 2.1e-5 in one run and 0.99 in the other",
        "",
        f"Measured {d['date']} (bench/studies/bench_drift.py, the demo case, batch {d['batch']}, "
        f"{d['steps']} steps, {d['threads']} threads); drift = |x_0(mode) - x_0(fp32)| of our sampler:",
        "",
        "| bf16 on | max abs | median per-sample max | pixels > 0.1 | samples > 0.1 |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"The earlier runs' bf16 figures, matched against these modes: {earlier or 'none recorded'}. The "
        "first run's 2.1e-5 is the classifier-only drift to all printed digits: its UNet did not run in "
        "bf16, so it measured another configuration than its label says (the committed code puts both "
        "networks under autocast, then and now). With both in bf16 the drift is "
        f"{m['both_bf16']['max_abs']:.2f}, the second run's; that large value is not a bug but the first step's "
        f"cancellation: at t = {first['t']}, x_0_hat = sqrt(1/alpha_bar) x_t - sqrt(1/alpha_bar - 1) eps with "
        f"sqrt(1/alpha_bar - 1) = {amp:.3g} (cosine schedule), so an eps rounding of a few 1e-4 moves x_0_hat by "
        "~10, and a pixel whose fp32 x_0_hat lies near 0 is clamped to the other end of [-1, 1]; the "
        "posterior mean carries that 2-unit jump to x_t of the next step. The worst pixel "
        f"(sample {w['sample']}, pixel {w['pixel']}), fp32 / bf16:",
        "",
        "| t | x_t | eps | x_0_hat (before the clamp) |",
        "|---|---|---|---|",
        *trace,
        "",
        f"Final x_0: {w['final_fp32']:.4f} / {w['final_bf16']:.4f}. The same cancellation amplifies any "
        "rounding, fp16's included (the paper's mode); it shows as a handful of outlier pixels, while the "
        "typical sample moves by the median above. Random-weight nets at 4 steps make it visible; the "
        "metric check (bf16 inside the fp32 bootstrap intervals) is what judges the mode, and on this CPU "
        "bf16 is emulated and not the default.",
        "",
    ]


def peak_of(name: str) -> tuple | None:
    for key, val in PEAKS.items():
        if key in name:
            return val
    return None


def table1_gpu_hours(guided_rate: float, unguided_rate: float, steps: int = TABLE1["steps"]) -> float:
    """GPU-hours of Table 1's sweep at `steps` sampler steps per image, from image-steps/s: the
    guided scales at `guided_rate`, scale 0 (no classifier) at `unguided_rate`."""
    guided = TABLE1["guided_scales"] * TABLE1["samples"] * steps
    plain = (TABLE1["scales"] - TABLE1["guided_scales"]) * TABLE1["samples"] * steps
    return (guided / guided_rate + plain / unguided_rate) / 3600


def project(speeds: dict, unguided: dict | None) -> dict:
    """Table 1's GPU-hours at its 250 DDPM steps, per precision mode measured."""
    out = {}
    for mode, s in speeds.items():
        if "image_steps_per_s" not in s:
            continue
        rate_u = (unguided or {}).get(mode, {}).get("image_steps_per_s", s["image_steps_per_s"])
        out[mode] = table1_gpu_hours(s["image_steps_per_s"], rate_u)
    return {"gpu_hours_by_mode": out, "image_steps": table1_image_steps(), **TABLE1}


def table1_image_steps(steps: int = TABLE1["steps"]) -> int:
    return TABLE1["scales"] * TABLE1["samples"] * steps


def project_solver(sol: dict, unguided: dict | None, ddpm_hours: dict) -> dict | None:
    """Table 1 at a fast solver's steps (`sol`: its guided speed run, with "solver" and "precision"):
    scale 0 at the unguided DDPM rate of the same mode, since a solver step, like a DDPM step,
    is one UNet forward (plus the classifier's forward and backward when guided)."""
    if "image_steps_per_s" not in sol:
        return None
    mode = sol["precision"]
    rate_u = (unguided or {}).get(mode, {}).get("image_steps_per_s", sol["image_steps_per_s"])
    hours = table1_gpu_hours(sol["image_steps_per_s"], rate_u, sol["steps"])
    base = ddpm_hours.get(mode)
    return {
        "solver": sol["solver"],
        "steps": sol["steps"],
        "mode": mode,
        "image_steps": table1_image_steps(sol["steps"]),
        "gpu_hours": hours,
        "ddpm_250_gpu_hours": base,
        "ratio_vs_ddpm_250": base / hours if base else None,
    }
