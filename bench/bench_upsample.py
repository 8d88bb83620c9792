"""Seconds per image-step of the 128->512 upsampler on this CPU, and what 50k samples would cost.

    python bench/bench_upsample.py [--threads 2] [--batch 1] [--repeats 1] [--out bench/out] [--render]

Builds `upsample128-512` (OpenAI's 128_512_upsampler.pt architecture) with random non-zero
weights and times ONE sampler step through the upsample program's own path
(adm.programs.upsample.LowResBound + adm.sampling.precision.sampling_model_fn, fp32, inference_mode) with a
one-step respaced DDPM schedule: one UNet forward at 512x512 with the bilinearly upsampled
128x128 conditioning, plus the step's arithmetic. Wall time and the process's CPU time are both
recorded: the machine is shared, so the CPU time over the threads is the figure least moved by
other tenants. The forward's FLOPs are counted on the meta device (torch FlopCounterMode: 2 per
multiply-add of convolutions and matmuls), which is what the GPU projection rests on.
Writes upsample.{json,md}. A benchmark, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ (common puts the repository on sys.path)

from common import count_flops, cpu_name, timed_cpu, utc_stamp, write_report  # noqa: E402

from adm.diffusion.schedule import make_schedule, respace  # noqa: E402
from adm.nets.presets import get_preset  # noqa: E402
from adm.nets.unet import UNet  # noqa: E402
from adm.programs.upsample import LowResBound, upsample_generators  # noqa: E402
from adm.sampling.batch_memory import _RSSPeak  # noqa: E402
from adm.sampling.precision import FastPath, sampling_model_fn  # noqa: E402
from adm.sampling.rng import randn_per_sample  # noqa: E402
from adm.sampling.samplers import ddpm_sample  # noqa: E402

PRESET = "upsample128-512"
LOW = 128
SAMPLES, STEPS = 50_000, 250  # the paper's 50k FID samples; OpenAI's README upsamples with --timestep_respacing 250
# GPU projection assumptions (stated, not measured here: no GPU was lent to this run).
# Dense fp16/bf16 tensor-core peaks from the vendors' data sheets; the share of peak a UNet of
# 3x3 convolutions at batch 4-16 reaches is an assumption, given as a range.
GPUS = {"V100 (paper era)": 125e12, "A100": 312e12, "H100 SXM": 989e12}
PEAK_SHARE = (0.25, 0.5)


def forward_flops(cfg, batch: int) -> int:
    with torch.device("meta"):
        net = UNet(cfg)
        x, low = torch.zeros(batch, 3, cfg.image_size, cfg.image_size), torch.zeros(batch, 3, LOW, LOW)
        t, y = torch.zeros(batch, dtype=torch.long), torch.zeros(batch, dtype=torch.long)
    net.check_label_values = False  # the range check reads values, which meta tensors have none of
    return count_flops(lambda: net(x, t, y, low_res=low))


def timed_step(cfg, batch: int) -> dict:
    torch.manual_seed(0)
    net = UNet(cfg)
    with torch.no_grad():
        for p in net.parameters():  # non-zero everywhere (the zero-initialised head included)
            p.normal_(0.0, 0.02)
    bound = LowResBound(net)
    model_fn = sampling_model_fn(bound, FastPath(precision="fp32"), "cpu")
    bound.low_res = torch.rand(batch, 3, LOW, LOW) * 2 - 1
    gens = upsample_generators(0, range(batch))
    noise = randn_per_sample(gens, (3, cfg.image_size, cfg.image_size))
    labels = torch.zeros(batch, dtype=torch.long)
    # two steps (t = 999 and t = 0; a respacing of t = 0 alone is refused), timed together and
    # halved: the figures are per step, one forward + its update each
    schedule = respace(make_schedule("linear", 1000), "2")
    with _RSSPeak() as mem:
        x0, wall, cpu = timed_cpu(ddpm_sample, model_fn, noise, schedule, labels=labels, generators=gens)
    assert bool(torch.isfinite(x0).all())
    steps = len(schedule)
    return {"wall_s": wall / steps, "cpu_s": cpu / steps, "peak_extra_rss_gib": mem.bytes / 2**30}


def projection(flops_per_image_step: float) -> dict:
    total = flops_per_image_step * SAMPLES * STEPS
    return {
        gpu: {f"{int(share * 100)}% of peak": total / (peak * share) / 3600 for share in PEAK_SHARE}
        for gpu, peak in GPUS.items()
    }


def render(r: dict) -> str:
    m = r["measured"]
    lines = [
        f"# 128->512 upsampler: one sampler step on CPU ({r['date']})",
        "",
        f"`{PRESET}`: {r['params_m']:.1f} M parameters, {r['tflop_per_image_step']:.2f} TFLOP per image-step "
        f"(one forward at 512x512, FlopCounterMode).",
        "",
        f"Machine: {r['cpu']}, torch {r['torch']}, {r['threads']} threads, load average "
        f"{r['load_before']:.1f} before / {r['load_after']:.1f} after (shared with other processes).",
        "",
        "| batch | repeat | wall s / image-step | CPU s / image-step | GFLOP per CPU-s | peak extra RSS GiB |",
        "|---|---|---|---|---|---|",
    ]
    for i, s in enumerate(m):
        b = r["batch"]
        gflops = r["tflop_per_image_step"] * 1e3 * b / s["cpu_s"]
        lines.append(
            f"| {b} | {i} | {s['wall_s'] / b:.1f} | {s['cpu_s'] / b:.1f} | {gflops:.0f} "
            f"| {s['peak_extra_rss_gib']:.2f} |"
        )
    best = min(s["wall_s"] for s in m) / r["batch"]
    cores = min(s["cpu_s"] / s["wall_s"] for s in m)
    lines += [
        "",
        f"CPU s / wall s >= {cores:.2f} with {r['threads']} threads: the run had about that many cores "
        "(the rest went to other processes).",
        "",
        f"At {best:.1f} s per image-step, {SAMPLES:,} samples x {STEPS} steps on this CPU would take "
        f"{best * SAMPLES * STEPS / 3600 / 24 / 365:.1f} years of wall time.",
        "",
        f"## Projected GPU-hours for {SAMPLES:,} samples x {STEPS} steps (upsampler only)",
        "",
        f"{r['tflop_per_image_step'] * SAMPLES * STEPS / 1e6:.1f} EFLOP in all. ASSUMED, not measured: dense "
        "fp16 tensor-core peak per the vendors' data sheets, and a UNet of 3x3 convolutions reaching "
        f"{int(PEAK_SHARE[0] * 100)}-{int(PEAK_SHARE[1] * 100)}% of it (OpenAI sampled in fp16). "
        "The guided 128x128 base samples are extra.",
        "",
        "| GPU | peak TFLOP/s | " + " | ".join(f"GPU-h at {int(s * 100)}% of peak" for s in PEAK_SHARE) + " |",
        "|---|---|" + "---|" * len(PEAK_SHARE),
    ]
    for gpu, row in r["projection_gpu_hours"].items():
        lines.append(f"| {gpu} | {GPUS[gpu] / 1e12:.0f} | " + " | ".join(f"{h:,.0f}" for h in row.values()) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--render", action="store_true", help="only rewrite upsample.md from upsample.json")
    a = ap.parse_args()
    if a.render:
        r = json.loads((Path(a.out) / "upsample.json").read_text())
        (Path(a.out) / "upsample.md").write_text(render(r))
        print(render(r))
        return
    torch.set_num_threads(a.threads)
    cfg = get_preset(PRESET)
    flops = forward_flops(cfg, 1)
    with torch.device("meta"):
        params = sum(p.numel() for p in UNet(cfg).parameters())
    load_before = os.getloadavg()[0]
    measured = [timed_step(cfg, a.batch) for _ in range(a.repeats)]
    r = {
        "preset": PRESET,
        "date": utc_stamp(),
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "threads": a.threads,
        "batch": a.batch,
        "params_m": params / 1e6,
        "tflop_per_image_step": flops / 1e12,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "measured": measured,
        "seconds_per_image_step_wall": min(s["wall_s"] for s in measured) / a.batch,
        "cpu_seconds_per_image_step": min(s["cpu_s"] for s in measured) / a.batch,
        "samples": SAMPLES,
        "steps": STEPS,
        "gpu_peak_flops": GPUS,
        "peak_share_assumed": PEAK_SHARE,
        "projection_gpu_hours": projection(flops),
    }
    write_report(a.out, "upsample", r, render(r), indent=1)
    print(render(r))


if __name__ == "__main__":
    main()
