"""Side-by-side guided sampling: our sampler against the reference's, in one process and one run.

    python bench/bench_sampling.py [--threads 2] [--repeats 3] [--cases demo mid64] [--compile]
                                   [--memory-128] [--out bench/out]

Both sides get the same weights (seeded random, copied into ours by OpenAI's key names), batch,
steps, guidance scale and noise (x_T and every step's z from the same per-sample generators; the
reference's torch.randn_like is fed from them), so the x_0 of the two agree and only the speed
differs. The reference is guided_diffusion (PyPI guided-diffusion-sdk, a test/bench-only
dependency) driven the way its classifier_sample.py drives it. Variants of ours run round-robin
with the reference (the order rotates every repeat) so that the load of other processes falls on
all of them alike; the figure that counts is the same-run `ratio` = our images/s over the
reference's. --memory-128 measures the peak memory per image of one guided step of the 128x128
UNet + classifier (batches 1 and 2, each in a fresh subprocess). Writes sampling.{json,md}.

--time-to-gold times, per guidance scale and in one process on the same networks, labels and
noise, the reference's p_sample_loop at the gold setting (250 DDPM steps, fp32) against ours at a
frontier setting: given (`--solver dpmpp-2m --steps 20`) or the cheapest one inside the gold row's
interval read from `--frontier-csv frontier.csv`. Per scale: the NFE ratio and the wall- and
CPU-time ratios (reference / ours). The code is bench/time_to_gold.py; writes time_to_gold.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ (common puts the repository on sys.path)

from common import bf16_drift_section, timed, timed_cpu, torch_machine, utc_stamp, write_report  # noqa: E402
from sampling_cases import CASES, case_networks, reference_runner  # noqa: E402  (the studies read them here too)

from adm.diffusion.schedule import make_schedule, respace  # noqa: E402
from adm.nets.classifier import Classifier  # noqa: E402
from adm.nets.presets import get_preset  # noqa: E402
from adm.nets.unet import UNet  # noqa: E402
from adm.sampling.batch_memory import _RSSPeak, affine_fit  # noqa: E402
from adm.sampling.guidance import classifier_guidance  # noqa: E402
from adm.sampling.precision import FastPath, fast_path, sampling_classifier_fn, sampling_model_fn  # noqa: E402
from adm.sampling.rng import randn_per_sample, sample_generators  # noqa: E402
from adm.sampling.samplers import ddpm_sample  # noqa: E402

# mid64 costs ~1-10 s per guided image-step on 2 shared cores: only the variants that decide the
# fast mode run there (the demo runs them all).
CASE_VARIANTS = {
    "mid64": (
        "ours_fp32",
        "ours_fp32_plain",
        "ours_channels_last",
        "ours_fast",
        "ours_fast_channels_last",
        "ours_bf16",
        "ours_bf16_fast",
        "ours_bf16_fast_channels_last",
        "ours_compiled",
        "ours_compiled_fast",
    )
}
MAX_REPEATS = {"mid64": 2}
VARIANTS = {  # name -> FastPath (None: our networks called directly, as before the fast path)
    "ours_fp32": FastPath(),  # the default: `adm sample` / `--fast exact`
    "ours_fp32_plain": None,
    "ours_fp32_no_grad": FastPath(inference_mode=False),  # isolates inference_mode's share of ours_fp32
    "ours_channels_last": FastPath(channels_last=True),
    "ours_bf16": FastPath(precision="bf16"),
    "ours_fused_attention": FastPath(fused_attention=True),
    "ours_fast": fast_path("fast", "fp32"),  # `adm sample --fast`
    "ours_fast_channels_last": fast_path("fast", "fp32", channels_last=True),
    # bf16 pays only where the CPU has native bf16 (avx512_bf16 / amx_bf16); elsewhere it is emulated
    "ours_bf16_fast": fast_path("fast", "bf16"),
    "ours_bf16_channels_last": FastPath(precision="bf16", channels_last=True),
    "ours_bf16_fast_channels_last": fast_path("fast", "bf16", channels_last=True),
}
# torch.compile variants (--compile): the first call compiles, timed on its own, never in the repeats
COMPILED = {
    "ours_compiled": FastPath(compile=True),
    "ours_compiled_fast": fast_path("compiled", "fp32"),  # `adm sample --fast compiled`
    "ours_compiled_fast_channels_last": fast_path("compiled", "fp32", channels_last=True),
}


def our_runner(unet, clf, fast: FastPath | None, schedule, scale: float):
    unet, clf = copy.deepcopy(unet), copy.deepcopy(clf)
    if fast is None:  # the networks called directly (eval mode, weights still requiring grad)
        model_fn, cond_fn = (lambda x, t, y: unet(x, t, y)), classifier_guidance(clf, scale)
    else:
        model_fn = sampling_model_fn(unet, fast, "cpu")
        cond_fn = classifier_guidance(sampling_classifier_fn(clf, fast, "cpu"), scale)
    return lambda noise, y, gens: ddpm_sample(model_fn, noise, schedule, y, cond_fn, gens)


def bench_case(name: str, repeats: int, compile_: bool, only: list[str] | None = None) -> dict:
    ucfg, ccfg, sched_name, n, spec, scale = CASES[name]
    ref_unet, ref_clf, unet, clf = case_networks(ucfg, ccfg)
    schedule = respace(make_schedule(sched_name, 1000), spec)
    hw, steps = ucfg.image_size, len(schedule)
    y = torch.arange(n) % ucfg.num_classes
    runners = {"reference": reference_runner(ref_unet, ref_clf, sched_name, spec, scale, n, hw)}
    keep = only or CASE_VARIANTS.get(name, (*VARIANTS, *COMPILED))
    variants = {k: v for k, v in {**VARIANTS, **(COMPILED if compile_ else {})}.items() if k in keep}
    runners.update({k: our_runner(unet, clf, v, schedule, scale) for k, v in variants.items()})
    result = {
        "unet": ucfg.__dict__,
        "classifier": ccfg.__dict__,
        "schedule": sched_name,
        "batch": n,
        "steps": steps,
        "scale": scale,
        "threads": torch.get_num_threads(),
        "load_before": os.getloadavg(),
        "runs": {},
        "compile_and_first_run_s": {},
        "compile_and_first_run_cpu_s": {},
        # a warm inductor cache (an earlier run's) compiles in seconds: say which one this was
        "inductor_cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR", "default (may be warm)"),
    }
    for k in (k for k in variants if k in COMPILED):  # the first call compiles: timed alone
        gens = sample_generators(0, range(n))
        _, wall, cpu_s = timed_cpu(runners[k], randn_per_sample(gens, (3, hw, hw)), y, gens)
        result["compile_and_first_run_s"][k] = wall
        result["compile_and_first_run_cpu_s"][k] = cpu_s  # this process; inductor compiles in worker processes too
        print(f"{name} {k} compile + first run: {result['compile_and_first_run_s'][k]:.0f} s", flush=True)
    times: dict[str, list[float]] = {k: [] for k in runners}
    cpu: dict[str, list[float]] = {k: [] for k in runners}  # CPU seconds: far less sensitive to
    x0, peak = {}, {}  # other processes' load than wall time
    names = list(runners)
    for r in range(min(repeats, MAX_REPEATS.get(name, repeats))):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            gens = sample_generators(0, range(n))
            noise = randn_per_sample(gens, (3, hw, hw))
            with _RSSPeak() as mem:
                x0[k], wall, cpu_s = timed_cpu(runners[k], noise, y, gens)
            times[k].append(wall)
            cpu[k].append(cpu_s)
            peak[k] = max(peak.get(k, 0), mem.bytes)
            print(f"{name} {k} repeat {r}: {times[k][-1]:.2f} s", flush=True)
    ref_ips = n / statistics.median(times["reference"])
    ref_cpu, ref_best = statistics.median(cpu["reference"]), min(times["reference"])
    for k in runners:
        med, med_cpu = statistics.median(times[k]), statistics.median(cpu[k])
        # best of repeats: the run the other jobs disturbed least (their load only ever adds time)
        result["runs"][k] = {
            "seconds": times[k],
            "median_s": med,
            "images_per_s": n / med,
            "ms_per_guided_image_step": 1000 * med / (n * steps),
            "ratio": (n / med) / ref_ips,
            "ratio_best": ref_best / min(times[k]),
            "cpu_seconds": cpu[k],
            "median_cpu_s": med_cpu,
            "ms_cpu_per_guided_image_step": 1000 * med_cpu / (n * steps),
            "ratio_cpu_time": ref_cpu / med_cpu,
            "peak_rss_delta_mb": peak[k] / 2**20,
            "max_abs_dx0_vs_reference": (x0[k] - x0["reference"]).abs().max().item(),
        }
    result["load_after"] = os.getloadavg()
    return result


def probe_child(batch: int) -> int:
    """One guided step of the 128x128 UNet + classifier at `batch`, our default CPU path; prints
    the peak RSS rise of the step in bytes (ru_maxrss is this fresh process's high-water mark)."""
    unet, clf = UNet(get_preset("imagenet128-cond")), Classifier(get_preset("imagenet128-classifier"))
    model_fn = sampling_model_fn(unet, FastPath(), "cpu")
    cond_fn = classifier_guidance(sampling_classifier_fn(clf, FastPath(), "cpu"), 1.0)
    x, t, y = torch.randn(batch, 3, 128, 128), torch.full((batch,), 999), torch.zeros(batch, dtype=torch.int64)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    _, seconds = timed(lambda: (model_fn(x, t, y), cond_fn(x, t, y)))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"batch": batch, "peak_rise_bytes": after - before, "seconds": seconds}))
    return 0


def memory_128(threads: int) -> dict:
    rows = []
    for b in (1, 2):
        cmd = [sys.executable, __file__, "--probe-memory", str(b), "--threads", str(threads)]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]))
    fixed, per_image = affine_fit(rows[0]["peak_rise_bytes"], rows[1]["peak_rise_bytes"])
    return {
        "probes": rows,
        "per_image_mb": per_image / 2**20,
        "fixed_mb": fixed / 2**20,
        "note": "peak RSS rise of one guided step (UNet forward under inference_mode + classifier "
        "forward/backward), fresh process per batch size, fp32 CPU",
    }


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        f"# Guided sampling: ours vs the reference sampler ({r['date']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} torch threads, torch {m['torch']} "
        f"({m['torch_cpu_capability']}); native bf16: {m['native_bf16']} (flags {m['flags']}). "
        f"Load average at start {r['load_start']}, at end {r['load_end']}: other jobs shared the "
        "cores, so absolute speeds are low and noisy; the same-run ratios are what count.",
        "",
    ]
    for name, c in r["cases"].items():
        lines += [
            f"## {name}: batch {c['batch']}, {c['steps']} DDPM steps, scale {c['scale']}, "
            f"{c['unet']['image_size']}px width {c['unet']['model_channels']}",
            "",
            f"Measured {c.get('date', r['date'])}, {c.get('threads', m['threads'])} torch threads, load average "
            f"{c['load_before']} -> {c['load_after']}; {len(c['runs']['reference']['seconds'])} repeat(s).",
            "",
            "| variant | images/s | ms per guided image-step | CPU ms per guided image-step | ratio (wall, median) "
            "| ratio (wall, best of repeats) | ratio (CPU time) | max abs Δx0 vs reference | peak RSS rise MB |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        opt = lambda v, key, f: "" if v.get(key) is None else format(v[key], f)  # noqa: E731 (older runs lack keys)
        for k, v in c["runs"].items():
            lines.append(
                f"| {k} | {v['images_per_s']:.2f} | {v['ms_per_guided_image_step']:.2f} "
                f"| {opt(v, 'ms_cpu_per_guided_image_step', '.2f')} | {v['ratio']:.2f} | {opt(v, 'ratio_best', '.2f')} "
                f"| {opt(v, 'ratio_cpu_time', '.2f')} | {v['max_abs_dx0_vs_reference']:.1e} | {v['peak_rss_delta_mb']:.0f} |"
            )
        first = c.get("compile_and_first_run_s")
        if isinstance(first, dict) and first:
            lines.append(
                f"\ntorch.compile + first run (inductor cache `{c.get('inductor_cache_dir')}`; wall s, "
                "this process's CPU s): "
                + "; ".join(
                    f"`{k}` {s:.0f} s ({c['compile_and_first_run_cpu_s'][k]:.0f} CPU-s)" for k, s in first.items()
                )
            )
        elif isinstance(first, (int, float)):
            lines.append(f"\ntorch.compile + first run: {first:.0f} s")
        lines.append("")
    if "memory_128" in r:
        mem = r["memory_128"]
        lines += [
            "## Memory of the 128x128 model + classifier (one guided step, fp32 CPU)",
            "",
            f"{mem['per_image_mb']:.0f} MB per image + {mem['fixed_mb']:.0f} MB fixed "
            f"(probes: {[(p['batch'], round(p['peak_rise_bytes'] / 2**20)) for p in mem['probes']]} MB)",
            "",
        ]
    if "bf16_drift" in r:  # measured by bench/studies/bench_drift.py
        lines += bf16_drift_section(r["bf16_drift"])
    lines += [r["verdict"], ""]
    return "\n".join(lines)


def verdict(r: dict) -> str:
    """One paragraph from the figures: the exact default's and the fast mode's ratios per case, the
    best variant, the 2x target and bf16's status."""
    parts = []
    for name, c in r["cases"].items():
        ours = {k: v for k, v in c["runs"].items() if k != "reference"}
        key = "ratio_cpu_time" if "ratio_cpu_time" in ours["ours_fp32"] else "ratio"  # older runs: wall only
        best = max(ours, key=lambda k: ours[k][key])
        fast = f", `--fast` (`ours_fast`) {ours['ours_fast'][key]:.2f}x" if "ours_fast" in ours else ""
        parts.append(
            f"{name}: exact default `ours_fp32` {ours['ours_fp32'][key]:.2f}x the reference's speed{fast}, "
            f"best `{best}` {ours[best][key]:.2f}x ({key})"
        )
    text = (
        "Same-run ratios, median of repeats in a rotated round-robin order: " + "; ".join(parts) + ". "
        "Wall-clock ratios swing with the other jobs' load; CPU-time ratios are the steadier figure. "
        "Compiled variants' ratios leave out the compile (listed under each table). "
    )
    met = [
        n
        for n, c in r["cases"].items()
        if max(v.get("ratio_cpu_time", v["ratio"]) for k, v in c["runs"].items() if k != "reference") >= 2.0
    ]
    text += (
        f"The 2.0x target is met in: {', '.join(met)}."
        if met
        else "The 2.0x target is not met by any variant in any case on this CPU."
    )
    if not r["machine"]["native_bf16"]:
        text += (
            " This CPU has no native bf16 (no avx512_bf16 / amx_bf16): bf16 is emulated, so it is not the CPU default."
        )
    else:
        text += (
            " This CPU has native bf16 (avx512_bf16 or amx_bf16), so the `ours_bf16*` rows run bf16 kernels; "
            "whether bf16 samples stay faithful is bench/out/bf16_demo.md's metric check."
        )
    return text


def run_time_to_gold(p: argparse.ArgumentParser, a: argparse.Namespace) -> int:
    import time_to_gold

    if (a.model is None) != (a.classifier is None):
        p.error("--model and --classifier go together")
    given = {"--solver": a.solver, "--steps": a.steps, "--step-schedule": a.step_schedule}
    if a.frontier_csv and any(v is not None for v in given.values()):
        p.error("--frontier-csv picks the setting per scale: leave out " + ", ".join(k for k, v in given.items() if v))
    a.solver, a.steps, a.step_schedule = a.solver or "dpmpp-2m", a.steps or 20, a.step_schedule or "uniform"
    r = time_to_gold.run(a)
    write_report(a.out, "time_to_gold", r, time_to_gold.markdown(r))
    print(time_to_gold.markdown(r))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["demo", "mid64"])
    p.add_argument(
        "--compile", action="store_true", help="also time the torch.compile variants (minutes each on a loaded CPU)"
    )
    p.add_argument(
        "--variants",
        nargs="+",
        choices=sorted({*VARIANTS, *COMPILED}),
        help="run only these variants of ours (default: all on the demo, CASE_VARIANTS elsewhere)",
    )
    p.add_argument("--memory-128", action="store_true", help="peak memory per image of the 128x128 model + classifier")
    p.add_argument("--probe-memory", type=int, help=argparse.SUPPRESS)
    p.add_argument("--render", action="store_true", help="only rewrite sampling.md from sampling.json")
    p.add_argument("--update", action="store_true", help="replace only the cases run now in an existing sampling.json")
    p.add_argument("--out", default="bench/out")
    g = p.add_argument_group(
        "time to gold quality (--time-to-gold; bench/time_to_gold.py; writes time_to_gold.{json,md})"
    )
    g.add_argument("--time-to-gold", action="store_true", help="reference DDPM-250 vs ours, per --scales")
    g.add_argument(
        "--solver", choices=("ddim", "dpmpp-2m", "dpmpp-3m", "dpmpp-2m-sde"), help="our sampler (default dpmpp-2m)"
    )
    g.add_argument("--steps", type=int, help="our steps (= NFE; default 20)")
    g.add_argument("--step-schedule", choices=("uniform", "logsnr", "karras"), help="default uniform")
    g.add_argument("--scales", "--scale", type=float, nargs="+", default=[1.0], help="guidance scales (default 1)")
    g.add_argument("--batch", type=int, default=250, help="images per side (the demo's sampling batch)")
    g.add_argument("--gold-steps", type=int, default=250, help="the reference's DDPM steps (250: the paper's)")
    g.add_argument(
        "--model", help="trained UNet (e.g. results/demo/diffusion/ema.pt); default: seeded random demo nets"
    )
    g.add_argument("--classifier", help="its classifier (e.g. results/demo/classifier/model.pt)")
    src = g.add_mutually_exclusive_group()
    src.add_argument(
        "--frontier-csv",
        help="frontier.csv: per scale, time its cheapest setting inside the gold row's interval "
        "(instead of --solver/--steps) and report that row's quality",
    )
    src.add_argument("--frontier", help="frontier.csv whose rows say whether --solver/--steps keeps the gold quality")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.time_to_gold:
        return run_time_to_gold(p, a)
    if a.probe_memory:
        return probe_child(a.probe_memory)
    if a.render:
        r = json.loads((Path(a.out) / "sampling.json").read_text())
        r["verdict"] = verdict(r)
        write_report(a.out, "sampling", r, markdown(r))
        return 0
    r = {"date": utc_stamp(), "machine": torch_machine(), "load_start": os.getloadavg(), "cases": {}}
    if a.update and (Path(a.out) / "sampling.json").exists():  # keep the cases (and memory) not rerun
        r = {
            **json.loads((Path(a.out) / "sampling.json").read_text()),
            "machine": torch_machine(),
            "date": r["date"],
            "load_start": r["load_start"],
        }
    for name in a.cases:
        r["cases"][name] = bench_case(name, a.repeats, a.compile, a.variants)
        r["cases"][name]["date"] = utc_stamp()
    if a.memory_128:
        r["memory_128"] = memory_128(a.threads)
    r["load_end"] = os.getloadavg()
    r["verdict"] = verdict(r)
    write_report(a.out, "sampling", r, markdown(r))
    print(markdown(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
