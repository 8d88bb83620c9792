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

--time-to-gold times, in the same process on the same networks, labels and noise, the
reference's p_sample_loop at the gold setting (250 DDPM steps, fp32) against ours at a frontier
setting (e.g. `--solver dpmpp-2m --steps 20`); `ratio` = reference seconds / ours. Whether that
setting keeps the gold quality is the frontier's answer, read from `--frontier frontier.csv`.
Writes time_to_gold.{json,md}.
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ (common puts the repository on sys.path)

from common import bf16_drift_section, timed, timed_cpu, torch_machine, utc_stamp, write_report  # noqa: E402

from adm.diffusion.schedule import make_schedule, respace  # noqa: E402
from adm.nets.classifier import Classifier  # noqa: E402
from adm.nets.config import ClassifierConfig, UNetConfig  # noqa: E402
from adm.nets.presets import get_preset  # noqa: E402
from adm.nets.unet import UNet  # noqa: E402
from adm.sampling.batch_memory import _RSSPeak, affine_fit  # noqa: E402
from adm.sampling.guidance import classifier_guidance  # noqa: E402
from adm.sampling.precision import FastPath, fast_path, sampling_classifier_fn, sampling_model_fn  # noqa: E402
from adm.sampling.rng import randn_per_sample, sample_generators  # noqa: E402
from adm.sampling.samplers import ddim_sample, ddpm_sample  # noqa: E402
from adm.sampling.solvers import SOLVERS  # noqa: E402

# (b) a mid-size ADM: the ImageNet-64 architecture (4 levels, attention at 32/16/8, AdaGN,
# BigGAN up/down) at width 64 instead of 192, with a classifier of the same width.
MID64_UNET = UNetConfig(
    image_size=64,
    model_channels=64,
    num_res_blocks=2,
    attention_resolutions=(32, 16, 8),
    channel_mult=(1, 2, 3, 4),
    num_classes=1000,
    num_head_channels=32,
    use_new_attention_order=True,
)
MID64_CLF = ClassifierConfig(
    image_size=64, model_channels=64, num_res_blocks=2, channel_mult=(1, 2, 3, 4), num_head_channels=32
)

# case -> (UNet config, classifier config, noise schedule, batch, respacing, guidance scale)
CASES = {
    # the demo's networks and batch (config/config.yaml); 4 of its 25 steps keep the run short on
    # a shared machine (ms per image-step does not depend on the step count)
    "demo": (get_preset("demo-digits"), get_preset("demo-digits-classifier"), "cosine", 250, "4", 1.0),
    "mid64": (MID64_UNET, MID64_CLF, "cosine", 4, "2", 1.0),
}
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


def randomise_(net: torch.nn.Module, seed: int, std: float = 0.05) -> torch.nn.Module:
    """Non-zero weights (a fresh ADM outputs exactly 0, which would make every sampler agree)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return net.eval()


def reference_nets(ucfg: UNetConfig, ccfg: ClassifierConfig):
    from guided_diffusion import unet as gu

    unet = gu.UNetModel(
        image_size=ucfg.image_size,
        in_channels=ucfg.in_channels,
        model_channels=ucfg.model_channels,
        out_channels=ucfg.out_channels,
        num_res_blocks=ucfg.num_res_blocks,
        attention_resolutions=tuple(ucfg.image_size // r for r in ucfg.attention_resolutions),
        dropout=ucfg.dropout,
        channel_mult=ucfg.channel_mult,
        num_classes=ucfg.num_classes,
        num_heads=ucfg.num_heads,
        num_head_channels=ucfg.num_head_channels,
        num_heads_upsample=ucfg.num_heads_upsample,
        use_scale_shift_norm=ucfg.use_scale_shift_norm,
        resblock_updown=ucfg.resblock_updown,
        use_new_attention_order=ucfg.use_new_attention_order,
    )
    clf = gu.EncoderUNetModel(
        image_size=ccfg.image_size,
        in_channels=ccfg.in_channels,
        model_channels=ccfg.model_channels,
        out_channels=ccfg.num_classes,
        num_res_blocks=ccfg.num_res_blocks,
        attention_resolutions=tuple(ccfg.image_size // r for r in ccfg.attention_resolutions),
        dropout=ccfg.dropout,
        channel_mult=ccfg.resolved_channel_mult,
        num_head_channels=ccfg.num_head_channels,
        use_scale_shift_norm=ccfg.use_scale_shift_norm,
        resblock_updown=ccfg.resblock_updown,
        pool=ccfg.pool,
    )
    return randomise_(unet, 0), randomise_(clf, 1, std=0.1)


def case_networks(ucfg: UNetConfig, ccfg: ClassifierConfig):
    """(reference UNet, reference classifier, our UNet, our classifier), ours holding the same seeded
    random weights, copied by OpenAI's key names."""
    ref_unet, ref_clf = reference_nets(ucfg, ccfg)
    unet, clf = UNet(ucfg).eval(), Classifier(ccfg).eval()
    unet.load_state_dict(ref_unet.state_dict(), strict=True)
    clf.load_state_dict(ref_clf.state_dict(), strict=True)
    return ref_unet, ref_clf, unet, clf


def reference_runner(ref_unet, ref_clf, schedule_name: str, spec: str, scale: float, n: int, hw: int):
    """run(noise, y, gens) -> x_0 by guided_diffusion's p_sample_loop, as classifier_sample.py calls it."""
    from guided_diffusion import gaussian_diffusion as gd
    from guided_diffusion import respace as gr

    diffusion = gr.SpacedDiffusion(
        use_timesteps=gr.space_timesteps(1000, spec),
        betas=gd.get_named_beta_schedule(schedule_name, 1000),
        model_mean_type=gd.ModelMeanType.EPSILON,
        model_var_type=gd.ModelVarType.LEARNED_RANGE,
        loss_type=gd.LossType.MSE,
    )

    def cond_fn(x, t, y=None):  # classifier_sample.py's cond_fn
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            log_probs = F.log_softmax(ref_clf(x_in, t), dim=-1)
            selected = log_probs[range(len(log_probs)), y.view(-1)]
            return torch.autograd.grad(selected.sum(), x_in)[0] * scale

    def run(noise, y, gens):
        real = gd.th.randn_like
        gd.th.randn_like = lambda x, *a, **k: randn_per_sample(gens, x.shape[1:]).to(x.dtype)
        try:
            return diffusion.p_sample_loop(
                ref_unet, (n, 3, hw, hw), noise=noise, cond_fn=cond_fn, model_kwargs={"y": y}
            )
        finally:
            gd.th.randn_like = real

    return run


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


# ---------------------------------------------------------------- time to gold quality


def gold_networks(model: str | None, classifier: str | None):
    """(reference UNet, reference classifier, our UNet, our classifier, noise schedule name, num
    classes): a trained checkpoint pair (its weights copied into the reference's networks by
    OpenAI's key names), or the demo case's seeded random networks."""
    if model is None:
        ucfg, ccfg, sched_name = CASES["demo"][:3]
        return (*case_networks(ucfg, ccfg), sched_name, ucfg.num_classes)
    from adm.nets.checkpoints import load_model, read_sidecar

    unet, ucfg = load_model(model, expect_kind="unet")
    clf, ccfg = load_model(classifier, expect_kind="classifier")
    diffusion = (read_sidecar(model) or {}).get("diffusion") or {}
    if diffusion.get("diffusion_steps", 1000) != 1000:
        raise SystemExit(f"{model}: the reference runner here takes a 1000-step diffusion")
    ref_unet, ref_clf = reference_nets(ucfg, ccfg)
    ref_unet.load_state_dict(unet.state_dict(), strict=True)
    ref_clf.load_state_dict(clf.state_dict(), strict=True)
    return ref_unet, ref_clf, unet, clf, diffusion.get("noise_schedule", "cosine"), ucfg.num_classes


def solver_runner(unet, clf, solver: str, steps: int, step_kind: str, sched_name: str, scale: float):
    """run(noise, y, gens) -> x_0 by our sampler at a frontier setting, the exact fp32 default path."""
    from adm.diffusion.schedule import step_schedule

    base = make_schedule(sched_name, 1000)
    if solver in SOLVERS:
        schedule, sample = step_schedule(base, step_kind, steps), SOLVERS[solver]
    else:
        schedule = respace(base, f"ddim{steps}" if solver == "ddim" else str(steps))
        sample = ddim_sample if solver == "ddim" else ddpm_sample
    model_fn = sampling_model_fn(unet, FastPath(), "cpu")
    cond_fn = classifier_guidance(sampling_classifier_fn(clf, FastPath(), "cpu"), scale)
    return lambda noise, y, gens: sample(model_fn, noise, schedule, y, cond_fn, gens)


def frontier_quality(path: str | None, solver: str, steps: int, scale: float) -> dict | None:
    """The frontier.csv rows of this setting and of the gold row at `scale` (the quality side)."""
    if path is None:
        return None
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    at = [r for r in rows if float(r["scale"]) == scale]
    ours = next((r for r in at if r["solver"] == solver and int(r["steps"]) == steps and r["gold"] == "False"), None)
    gold = next((r for r in at if r["gold"] == "True"), None)
    pick = ("label", "nfe", "fid", "fid_ci_lo", "fid_ci_hi", "inside_gold")
    return {
        "frontier_csv": path,
        "ours": {k: ours[k] for k in pick} if ours else None,
        "gold": {k: gold[k] for k in pick} if gold else None,
    }


def time_to_gold(a) -> dict:
    ref_unet, ref_clf, unet, clf, sched_name, classes = gold_networks(a.model, a.classifier)
    n, hw = a.batch, unet.cfg.image_size
    runners = {
        "reference": reference_runner(ref_unet, ref_clf, sched_name, str(a.gold_steps), a.scale, n, hw),
        "ours": solver_runner(unet, clf, a.solver, a.steps, a.step_schedule, sched_name, a.scale),
    }
    y = torch.arange(n) % classes
    times: dict[str, list[float]] = {k: [] for k in runners}
    cpu: dict[str, list[float]] = {k: [] for k in runners}
    load_before = os.getloadavg()
    for r in range(a.repeats):  # rotated order: other jobs' load falls on both alike
        for k in list(runners)[r % 2 :] + list(runners)[: r % 2]:
            gens = sample_generators(0, range(n))
            _, wall, cpu_s = timed_cpu(runners[k], randn_per_sample(gens, (3, hw, hw)), y, gens)
            times[k].append(wall)
            cpu[k].append(cpu_s)
            print(f"time-to-gold {k} repeat {r}: {wall:.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    return {
        "date": utc_stamp(),
        "machine": torch_machine(),
        "networks": a.model or "demo case, seeded random weights",
        "classifier": a.classifier,
        "batch": n,
        "scale": a.scale,
        "reference": {"sampler": "guided_diffusion p_sample_loop (fp32)", "steps": a.gold_steps, "nfe": a.gold_steps},
        "ours": {"solver": a.solver, "steps": a.steps, "step_schedule": a.step_schedule, "nfe": a.steps},
        "seconds": times,
        "cpu_seconds": cpu,
        "median_s": med,
        "ratio": med["reference"] / med["ours"],
        "ratio_cpu_time": med_cpu["reference"] / med_cpu["ours"],
        "nfe_ratio": a.gold_steps / a.steps,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "quality": frontier_quality(a.frontier, a.solver, a.steps, a.scale),
        "table1_gpu_hours_at_peak": table1_projection(250 / a.steps),  # Table 1 is 250 steps, whatever --gold-steps
    }


def table1_projection(nfe_ratio: float) -> dict | None:
    """Table 1's GPU-hours at the fp16 peak (bench/out/table1_cost.json), as is and at this NFE ratio:
    the FLOP count scales with the network evaluations."""
    path = Path(__file__).resolve().parent / "out" / "table1_cost.json"
    if not path.exists():
        return None
    hours = json.loads(path.read_text())["gpu_hours"]["fp16/bf16 peak 989 TFLOP/s at 100%"]
    return {"250_steps": hours, "at_this_setting": hours / nfe_ratio}


def time_to_gold_markdown(r: dict) -> str:
    m, ref, ours, q = r["machine"], r["reference"], r["ours"], r["quality"]
    lines = [
        f"# Time to gold quality: reference DDPM-{ref['steps']} vs ours {ours['solver']} {ours['steps']} ({r['date']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} torch threads, torch {m['torch']}. Load average "
        f"{' '.join(f'{v:.2f}' for v in r['load_before'])} -> {' '.join(f'{v:.2f}' for v in r['load_after'])}. Networks: {r['networks']}; batch {r['batch']}, scale {r['scale']}, "
        f"same labels and x_T on both sides, {len(r['seconds']['reference'])} repeat(s), rotated order.",
        "",
        "| side | sampler | NFE | median wall s | median CPU s |",
        "|---|---|---|---|---|",
        f"| reference | {ref['sampler']}, {ref['steps']} steps | {ref['nfe']} | {r['median_s']['reference']:.2f} "
        f"| {statistics.median(r['cpu_seconds']['reference']):.2f} |",
        f"| ours | {ours['solver']} {ours['steps']} ({ours['step_schedule']}), fp32 exact path | {ours['nfe']} "
        f"| {r['median_s']['ours']:.2f} | {statistics.median(r['cpu_seconds']['ours']):.2f} |",
        "",
        f"ratio (wall) {r['ratio']:.2f}x, ratio (CPU time) {r['ratio_cpu_time']:.2f}x, NFE ratio {r['nfe_ratio']:.1f}x.",
    ]
    if q and q["ours"] and q["gold"]:
        lines.append(
            f"Quality ({q['frontier_csv']}): ours FID {q['ours']['fid']}, gold FID {q['gold']['fid']} "
            f"[{q['gold']['fid_ci_lo']}, {q['gold']['fid_ci_hi']}]; inside the gold interval: {q['ours']['inside_gold']}."
        )
    else:
        lines.append("Quality: not checked in this run (pass --frontier results/<run>/frontier.csv).")
    if r["table1_gpu_hours_at_peak"]:
        t = r["table1_gpu_hours_at_peak"]
        lines.append(
            f"Table 1 at the fp16 peak: {t['250_steps']:.1f} GPU-hours at 250 steps, "
            f"{t['at_this_setting']:.1f} at this setting (FLOPs scale with NFE)."
        )
    return "\n".join(lines) + "\n"


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
    g = p.add_argument_group("time to gold quality (--time-to-gold; writes time_to_gold.{json,md})")
    g.add_argument("--time-to-gold", action="store_true", help="reference DDPM-250 vs ours at --solver/--steps")
    g.add_argument("--solver", choices=("ddim", "dpmpp-2m", "dpmpp-3m"), default="dpmpp-2m")
    g.add_argument("--steps", type=int, default=20, help="our steps (= NFE)")
    g.add_argument("--step-schedule", choices=("uniform", "logsnr", "karras"), default="uniform")
    g.add_argument("--scale", type=float, default=1.0)
    g.add_argument("--batch", type=int, default=250, help="images per side (the demo's sampling batch)")
    g.add_argument("--gold-steps", type=int, default=250, help="the reference's DDPM steps (250: the paper's)")
    g.add_argument(
        "--model", help="trained UNet (e.g. results/demo/diffusion/ema.pt); default: seeded random demo nets"
    )
    g.add_argument("--classifier", help="its classifier (e.g. results/demo/classifier/model.pt)")
    g.add_argument("--frontier", help="frontier.csv whose rows say whether this setting keeps the gold quality")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.time_to_gold:
        if (a.model is None) != (a.classifier is None):
            p.error("--model and --classifier go together")
        r = time_to_gold(a)
        write_report(a.out, "time_to_gold", r, time_to_gold_markdown(r))
        print(time_to_gold_markdown(r))
        return 0
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
