"""What a guided sampler step spends its CPU time on, ours against the reference's.

    python bench/studies/bench_step_profile.py [--cases demo mid64] [--threads 1] [--repeats 5] [--out bench/out]

For each case of bench_sampling.py: CPU seconds of guided DDPM steps, ours (fp32 fast path, plain
networks, channels_last) and the reference's, interleaved over repeats (median), and a
torch.profiler breakdown of one of our steps by operator family (convolutions forward and backward,
matmuls/attention, GroupNorm, the rest). The convolutions and matmuls are the same oneDNN / BLAS
calls on both sides, so their share bounds how much faster any reordering of the step can get
(Amdahl: 1 / (1 - removable share)). 1 thread by default: CPU time is then not inflated by OpenMP
threads spinning on a core the other jobs hold. Writes step_profile.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ (common puts the repository on sys.path)

import bench_sampling as bs  # noqa: E402
from common import timed_cpu, torch_machine, utc_stamp, write_report  # noqa: E402

from adm.diffusion.schedule import make_schedule, respace  # noqa: E402
from adm.sampling.precision import FastPath  # noqa: E402
from adm.sampling.rng import randn_per_sample, sample_generators  # noqa: E402

BATCH = {"demo": 250, "mid64": 2}
VARIANTS = {
    "ours_fp32": FastPath(),
    "ours_fp32_plain": None,
    "ours_channels_last": FastPath(channels_last=True),
    "ours_fused_attention": FastPath(fused_attention=True),
}
# operator family -> substrings of aten op names (self CPU time is attributed to the op that ran it)
FAMILIES = {
    "convolution": ("conv", "mkldnn"),
    "matmul/attention": ("mm", "matmul", "addmm", "bmm", "einsum", "linear"),
    "group_norm": ("group_norm", "native_group_norm"),
    "softmax (attention)": ("softmax",),
}


def family(op: str) -> str:
    for fam, keys in FAMILIES.items():
        if any(k in op for k in keys):
            return fam
    return "other (elementwise, softmax, copies, diffusion math)"


def setup(case: str, steps: str):
    ucfg, ccfg, sched_name, _, _, scale = bs.CASES[case]
    n = BATCH[case]
    ref_unet, ref_clf, unet, clf = bs.case_networks(ucfg, ccfg)
    schedule = respace(make_schedule(sched_name, 1000), steps)
    runners = {"reference": bs.reference_runner(ref_unet, ref_clf, sched_name, steps, scale, n, ucfg.image_size)}
    runners.update({k: bs.our_runner(unet, clf, v, schedule, scale) for k, v in VARIANTS.items()})
    y = torch.arange(n) % ucfg.num_classes

    def call(name):
        gens = sample_generators(0, range(n))
        return runners[name](randn_per_sample(gens, (3, ucfg.image_size, ucfg.image_size)), y, gens)

    return call, n, len(schedule)


def breakdown(call) -> dict:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call("ours_fp32")
    fams: dict[str, float] = {}
    for ev in prof.key_averages():
        if ev.key.startswith("aten::"):
            fams[family(ev.key)] = fams.get(family(ev.key), 0.0) + ev.self_cpu_time_total / 1e6
    total = sum(fams.values())
    top = sorted(
        (ev for ev in prof.key_averages() if ev.key.startswith("aten::")), key=lambda ev: -ev.self_cpu_time_total
    )
    return {
        "families": {k: {"self_cpu_s": v, "share": v / total} for k, v in sorted(fams.items(), key=lambda kv: -kv[1])},
        "top_ops": [{"op": ev.key, "calls": ev.count, "share": ev.self_cpu_time_total / 1e6 / total} for ev in top[:8]],
    }


def bench(case: str, repeats: int) -> dict:
    call, n, steps = setup(case, "2")
    names = ["reference", *VARIANTS]
    cpu = {k: [] for k in names}
    for r in range(repeats):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            cpu[k].append(timed_cpu(call, k)[2])
    ref = statistics.median(cpu["reference"])
    res = {
        "batch": n,
        "steps": steps,
        "threads": torch.get_num_threads(),
        "load_before": os.getloadavg(),
        "cpu_s": cpu,
        "ms_cpu_per_image_step": {k: 1000 * statistics.median(v) / (n * steps) for k, v in cpu.items()},
        "ratio_cpu_time": {k: ref / statistics.median(v) for k, v in cpu.items()},
    }
    res["ours_fp32_breakdown"] = breakdown(call)
    res["threads_sweep"] = thread_sweep(call, n * steps, pairs=2 if case == "demo" else 1)
    res["load_after"] = os.getloadavg()
    return res


def thread_sweep(call, image_steps: int, pairs: int) -> dict:
    """ours_fp32 at 1 and 2 intra-op threads, alternated: wall and CPU ms per guided image-step.

    On a machine whose cores other jobs hold, an OpenMP region waits for its slowest thread, so
    a second thread can cost more than it brings; `adm sample` defaults to --threads 1."""
    rows, before = {1: [], 2: []}, torch.get_num_threads()
    try:
        for _ in range(pairs):
            for th in (1, 2):
                torch.set_num_threads(th)
                _, wall, cpu_s = timed_cpu(call, "ours_fp32")
                rows[th].append(
                    {
                        "wall_ms": 1000 * wall / image_steps,
                        "cpu_ms": 1000 * cpu_s / image_steps,
                        "load": os.getloadavg()[0],
                    }
                )
    finally:
        torch.set_num_threads(before)
    return {
        str(th): {
            "median_wall_ms": statistics.median(r["wall_ms"] for r in v),
            "median_cpu_ms": statistics.median(r["cpu_ms"] for r in v),
            "runs": v,
        }
        for th, v in rows.items()
    }


def markdown(r: dict) -> str:
    lines = [f"# Where a guided step's CPU time goes ({r['date']})", "", r["note"], ""]
    for case, c in r["cases"].items():
        lines += [
            f"## {case}: batch {c['batch']}, {c['steps']} guided DDPM steps, {c['threads']} thread(s), "
            f"load {c['load_before'][0]:.1f} -> {c['load_after'][0]:.1f}",
            "",
            "| variant | CPU ms per guided image-step (median) | ratio vs reference (CPU time) | repeats (CPU s) |",
            "|---|---|---|---|",
        ]
        for k, ms in c["ms_cpu_per_image_step"].items():
            lines.append(f"| {k} | {ms:.2f} | {c['ratio_cpu_time'][k]:.2f} | {[round(v, 2) for v in c['cpu_s'][k]]} |")
        lines += [
            "",
            "Our fp32 step by operator family (torch.profiler, self CPU time of aten ops):",
            "",
            "| family | CPU s | share |",
            "|---|---|---|",
        ]
        fams = c["ours_fp32_breakdown"]["families"]
        lines += [f"| {k} | {v['self_cpu_s']:.2f} | {100 * v['share']:.0f}% |" for k, v in fams.items()]
        lines += [
            "",
            "Top operators: "
            + ", ".join(
                f"`{o['op']}` {100 * o['share']:.0f}% ({o['calls']} calls)" for o in c["ours_fp32_breakdown"]["top_ops"]
            ),
        ]
        kernels = sum(v["share"] for k, v in fams.items() if not k.startswith("other"))
        sw = c["threads_sweep"]
        lines += [
            "",
            "ours_fp32 by intra-op threads (alternated, same load): "
            + "; ".join(
                f"{th} thread(s) {v['median_wall_ms']:.2f} ms wall / {v['median_cpu_ms']:.2f} ms CPU per image-step"
                for th, v in sw.items()
            )
            + f" (2 threads take {sw['2']['median_wall_ms'] / sw['1']['median_wall_ms']:.1f}x "
            "the wall time of 1 here).",
        ]
        lines += [
            "",
            f"Convolutions, matmuls, GroupNorm and softmax: {100 * kernels:.0f}% of our default step. With "
            f"the same kernels as the reference, removing all the rest would give at most {1 / kernels:.2f}x; "
            "beyond that only other kernels help: `ours_fused_attention` swaps SDPA's math path (bmm + "
            "softmax + its all/where guard) for the fused flash kernel, and the convolutions (mkldnn, the "
            "same call on both sides) are what remains.",
            "",
        ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", choices=sorted(BATCH), default=["demo", "mid64"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="bench/out")
    p.add_argument("--render", action="store_true", help="only rewrite step_profile.md from step_profile.json")
    a = p.parse_args(argv)
    if a.render:
        r = json.loads((Path(a.out) / "step_profile.json").read_text())
        (Path(a.out) / "step_profile.md").write_text(markdown(r))
        return 0
    torch.set_num_threads(a.threads)
    r = {
        "date": utc_stamp(),
        "machine": torch_machine(),
        "note": "CPU seconds (process_time) of whole sampler calls (2 guided steps), the variants interleaved "
        "in a rotating order; the machine was shared with other jobs (load averages per case).",
        "cases": {c: bench(c, a.repeats) for c in a.cases},
    }
    write_report(a.out, "step_profile", r, markdown(r))
    print(markdown(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
