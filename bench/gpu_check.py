"""The prepared GPU check (run by bench/gpu_check.sh): guided sampling of the ImageNet-128 presets
with random weights, no downloads, about 5-8 minutes on one GPU.

    python bench/gpu_check.py [--out bench/out] [--budget-s 420]     # on a CUDA machine
    python bench/gpu_check.py --dry [--out DIR]                      # tiny sizes on CPU, proves the script

Measures: guided DDPM image-steps/s in fp32 / fp16 (the paper's) / bf16 / compiled; FLOPs per
guided image-step (torch's FLOP counter: UNet forward + classifier forward and backward to x) and
the achieved TFLOP/s as a share of the card's spec-sheet peak; a whole guided run of the fast
solver (--solver, default DPM-Solver++(2M) SDE) at --solver-steps (set it to the frontier's
cheapest setting inside the gold interval); peak memory at the batch sizes it tries (and what `--batch-size auto` would pick);
CUDA-vs-CPU fp32 agreement over a few steps; fp16-vs-fp32 and bf16-vs-fp32 drift of x_0; host
syncs per sampler step; the projected GPU-hours of the full Table 1 sweep at 250 DDPM steps and
at the solver's steps. Every part is guarded: a failure or the time budget records a reason and
the rest still runs; gpu.json/gpu.md are always written. --dry labels its output as dry.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ (common puts the repository on sys.path)

from common import count_flops, cpu_name, peak_of, project, project_solver, utc_stamp, write_report  # noqa: E402

from adm.diffusion.schedule import make_schedule, respace, step_schedule  # noqa: E402
from adm.nets.classifier import Classifier  # noqa: E402
from adm.nets.presets import get_preset  # noqa: E402
from adm.nets.unet import UNet  # noqa: E402
from adm.sampling.batch_memory import guided_step, peak_bytes, probe_batch_size  # noqa: E402
from adm.sampling.guidance import classifier_guidance  # noqa: E402
from adm.sampling.precision import FastPath, sampling_classifier_fn, sampling_model_fn  # noqa: E402
from adm.sampling.rng import randn_per_sample, sample_generators  # noqa: E402
from adm.sampling.samplers import ddpm_sample  # noqa: E402
from adm.sampling.solvers import SOLVERS  # noqa: E402

# The fast solver and its steps when not given: the cheapest setting inside the gold interval that
# the demo's frontier found (DPM-Solver++(2M) SDE, 10 steps; docs/frontier.md). Set them to what the
# paper config's frontier finds on ADM's ImageNet 128 model once it has run.
SOLVER, SOLVER_STEPS = "dpmpp-2m-sde", 10

SIZES = {  # full: the paper's networks; dry: the unit-test presets, sized for a CPU
    "full": dict(
        unet="imagenet128-cond",
        clf="imagenet128-classifier",
        speed_batch={"fp32": 16, "default": 64},
        mem_batches=(16, 64, 128, 256),
        steps=3,
        drift_steps=25,
        drift_batch=8,
        agree_batch=2,
        agree_steps=2,
    ),
    "dry": dict(
        unet="tiny-test",
        clf="tiny-test-classifier",
        speed_batch={"fp32": 2, "default": 2},
        mem_batches=(1, 2),
        steps=2,
        drift_steps=3,
        drift_batch=2,
        agree_batch=2,
        agree_steps=2,
    ),
}


def networks(size: dict, device: torch.device):
    """Default-initialised networks whose zero-initialised layers get small random weights (a fresh
    ADM outputs exactly 0; realistic magnitudes keep fp16 honest)."""
    torch.manual_seed(0)
    unet, clf = UNet(get_preset(size["unet"])), Classifier(get_preset(size["clf"]))
    with torch.no_grad():
        for net in (unet, clf):
            for p in net.parameters():
                if not p.abs().max():
                    p.normal_(0, 0.02)
    return unet.to(device), clf.to(device)


def sampler_fns(unet, clf, fast: FastPath, device: torch.device, scale: float = 1.0):
    import copy

    u, c = copy.deepcopy(unet), copy.deepcopy(clf)
    cond_fn = classifier_guidance(sampling_classifier_fn(c, fast, device.type), scale) if scale else None
    return sampling_model_fn(u, fast, device.type), cond_fn


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_sampler(model_fn, cond_fn, n, steps, device, hw, num_classes, seed=0, solver=None):
    """x_0 of n guided samples (labels 0, 1, 2, ...) over `steps` respaced DDPM steps, or `steps`
    time-uniform nodes of a SOLVERS entry (the ImageNet-128 model's linear schedule)."""
    base = make_schedule("linear", 1000)
    if solver:
        sched, sample = step_schedule(base, "uniform", steps), SOLVERS[solver]
    else:
        sched, sample = respace(base, str(steps)), ddpm_sample
    gens = sample_generators(seed, range(n))
    noise = randn_per_sample(gens, (3, hw, hw), device)
    y = (torch.arange(n) % num_classes).to(device)
    return sample(model_fn, noise, sched, y, cond_fn, gens)


def speed(unet, clf, fast, n, steps, device, scale=1.0, solver=None) -> dict:
    model_fn, cond_fn = sampler_fns(unet, clf, fast, device, scale)
    hw, classes = unet.cfg.image_size, unet.cfg.num_classes
    t0 = time.perf_counter()
    # warm-up (and the compile, when compiling): 2 steps, the fewest respace and the solvers accept
    run_sampler(model_fn, cond_fn, n, 2, device, hw, classes, solver=solver)
    sync(device)
    warm = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    run_sampler(model_fn, cond_fn, n, steps, device, hw, classes, solver=solver)
    sync(device)
    sec = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {
        **({"solver": solver} if solver else {}),
        "precision": fast.precision,
        "batch": n,
        "steps": steps,
        "seconds": sec,
        "image_steps_per_s": n * steps / sec,
        "warmup_s": warm,
        "peak_mem_mb": peak,
    }


def flops_per_image_step(unet, clf, device) -> dict:
    import copy

    model_fn = sampling_model_fn(copy.deepcopy(unet), FastPath(), device.type)
    classifier_fn = sampling_classifier_fn(copy.deepcopy(clf), FastPath(), device.type)
    hw = unet.cfg.image_size
    x, t, y = (
        torch.randn(1, 3, hw, hw, device=device),
        torch.full((1,), 500, device=device),
        torch.zeros(1, dtype=torch.int64, device=device),
    )
    out = {"unet_forward": count_flops(lambda: model_fn(x, t, y))}
    # the classifier's forward and backward to x, as cond_fn runs them (.backward(): the counter's
    # module hooks do not support autograd.grad)
    x_in = x.clone().requires_grad_(True)

    def classifier_fwd_bwd():
        log_probs = torch.log_softmax(classifier_fn(x_in, t), dim=-1)
        log_probs[torch.arange(1, device=device), y].sum().backward()

    out["classifier_fwd_bwd"] = count_flops(classifier_fwd_bwd)
    out["guided_step"] = out["unet_forward"] + out["classifier_fwd_bwd"]
    return out


def syncs_per_step(unet, clf, device) -> dict | None:
    """Host-device syncs (torch.cuda sync debug warnings) per sampler step: a 3-step run minus a
    1-step run, halved, so the once-per-batch ones (x_T's copy, the label check) cancel."""
    if device.type != "cuda":
        return None
    model_fn, cond_fn = sampler_fns(unet, clf, FastPath(), device)
    run_sampler(model_fn, cond_fn, 2, 1, device, unet.cfg.image_size, unet.cfg.num_classes)  # warm caches
    counts = {}
    torch.cuda.set_sync_debug_mode("warn")
    try:
        for steps in (1, 3):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                run_sampler(model_fn, cond_fn, 2, steps, device, unet.cfg.image_size, unet.cfg.num_classes)
            counts[steps] = len(caught)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return {"per_step": (counts[3] - counts[1]) / 2, "run_1_step": counts[1], "run_3_steps": counts[3]}


def drift(unet, clf, size, device, modes) -> dict:
    """max/mean |x_0(mode) - x_0(fp32)| over drift_steps guided steps, same noise."""
    n, steps, hw = size["drift_batch"], size["drift_steps"], unet.cfg.image_size
    x0 = {}
    for mode in ("fp32", *modes):
        model_fn, cond_fn = sampler_fns(unet, clf, FastPath(precision=mode), device)
        x0[mode] = run_sampler(model_fn, cond_fn, n, steps, device, hw, unet.cfg.num_classes).float().cpu()
    return {
        m: {
            "max_abs": (x0[m] - x0["fp32"]).abs().max().item(),
            "mean_abs": (x0[m] - x0["fp32"]).abs().mean().item(),
            "steps": steps,
            "batch": n,
        }
        for m in modes
    }


def agreement(unet, clf, size, device) -> dict:
    """fp32 on this device vs fp32 on the CPU (TF32 off), same weights and noise."""
    n, steps, hw = size["agree_batch"], size["agree_steps"], unet.cfg.image_size
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        outs = []
        for dev in (device, torch.device("cpu")):
            model_fn, cond_fn = sampler_fns(unet.to(dev), clf.to(dev), FastPath(), dev)
            outs.append(run_sampler(model_fn, cond_fn, n, steps, dev, hw, unet.cfg.num_classes).cpu())
    finally:  # whatever failed, the later parts get their networks back on the device
        unet.to(device), clf.to(device)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return {
        "max_abs": (outs[0] - outs[1]).abs().max().item(),
        "steps": steps,
        "batch": n,
        "devices": [device.type, "cpu"],
    }


def memory(unet, clf, size, device, mode) -> dict:
    rows = {}
    model_fn, cond_fn = sampler_fns(unet, clf, FastPath(precision=mode), device)
    step = guided_step(
        model_fn, cond_fn, (3, unet.cfg.image_size, unet.cfg.image_size), unet.cfg.num_classes, 999, device
    )
    for b in size["mem_batches"]:  # peak above what was allocated before the step (the weights)
        try:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            rows[str(b)] = round(peak_bytes(lambda: step(b), device) / 2**20, 1)
        except torch.OutOfMemoryError:
            rows[str(b)] = "OOM"
            break
    probe = probe_batch_size(step, device, cap=4096)
    return {
        "precision": mode,
        "peak_rise_mb_by_batch": rows,
        "auto_probe": probe,
        "note": "CUDA allocator peak (CPU: RSS) above the weights, one guided step",
    }


SAVE = []  # [callable]: writes the report as it stands (set by main)


def guarded(report: dict, key: str, deadline: float, fn):
    """report[key] = fn(), or the reason it is missing; then the files are rewritten, so a crash,
    a kill by the shell's timeout or a poisoned CUDA context later loses no finished part."""
    if time.time() > deadline:
        report[key] = {"skipped": "time budget spent"}
    else:
        try:
            report[key] = fn()
        except Exception as e:  # noqa: BLE001 - the check records every failure and goes on
            report[key] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # an OOM's leftovers must not starve the next part
    print(f"{key}: {json.dumps(report[key], default=str)[:300]}", flush=True)
    for save in SAVE:
        save()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--dry", action="store_true", help="tiny presets on the CPU: proves the script, measures nothing real"
    )
    p.add_argument("--out", default="bench/out")
    p.add_argument("--budget-s", type=float, default=420, help="stop starting new parts after this many seconds")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument(
        "--solver",
        choices=sorted(SOLVERS),
        default=SOLVER,
        help=f"the fast solver timed beside DDPM (default {SOLVER})",
    )
    p.add_argument(
        "--solver-steps",
        type=int,
        default=SOLVER_STEPS,
        help=f"its steps (= NFE; default {SOLVER_STEPS}): set it to the cheapest setting inside the gold interval "
        "that the frontier found (frontier.md)",
    )
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    start = time.time()
    deadline = start + a.budget_s
    cuda = torch.cuda.is_available() and not a.dry
    device = torch.device("cuda" if cuda else "cpu")
    size = SIZES["dry" if a.dry else "full"]
    if not cuda and not a.dry:
        print("error: no CUDA device; run with --dry to prove the script on the CPU", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(device) if cuda else cpu_name()
    r = {
        "dry": a.dry,
        "device": name,
        "torch": torch.__version__,
        "date": utc_stamp(),
        "presets": [size["unet"], size["clf"]],
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "note": (
            "DRY RUN on CPU with the tiny-test presets (no GPU was at hand): proves the script runs end to end; "
            "its numbers say nothing about a GPU."
            if a.dry
            else "ImageNet-128 presets, random weights"
        ),
    }
    stem = "gpu_dry" if a.dry else "gpu"
    r["speed"] = {}

    def finish():
        derive(r, name if cuda else None, start)
        write_report(a.out, stem, r, markdown(r))

    SAVE[:] = [finish]
    unet, clf = networks(size, device)
    guarded(r, "flops", deadline, lambda: flops_per_image_step(unet, clf, device))
    modes = ["fp32", "bf16"] + (["fp16"] if cuda else [])
    for mode in modes:
        n = size["speed_batch"].get(mode, size["speed_batch"]["default"])
        guarded(
            r["speed"], mode, deadline, lambda: speed(unet, clf, FastPath(precision=mode), n, size["steps"], device)
        )
    best = "fp16" if cuda else "fp32"
    n = size["speed_batch"]["default"]  # SDPA's fused kernels instead of its math path (adm.nets.blocks.qkv_attention)
    guarded(
        r["speed"],
        f"{best}_fused_attention",
        deadline,
        lambda: speed(unet, clf, FastPath(precision=best, fused_attention=True), n, size["steps"], device),
    )
    if cuda:  # the paper's mode, compiled; and the classifier in fp16 too (OpenAI's --classifier_use_fp16)
        guarded(
            r["speed"],
            "fp16_compiled",
            deadline,
            lambda: speed(unet, clf, FastPath(precision="fp16", compile=True), n, size["steps"], device),
        )
        guarded(
            r["speed"],
            "fp16_classifier_fp16",
            deadline,
            lambda: speed(unet, clf, FastPath(precision="fp16", classifier_fp16=True), n, size["steps"], device),
        )
    else:
        r["speed"]["fp16"] = {"skipped": "fp16 runs on CUDA only"}
        r["speed"]["fp16_compiled"] = {"skipped": "compile is measured on the GPU run only (minutes on a CPU)"}
    r["unguided"] = {}
    guarded(
        r["unguided"],
        best,
        deadline,
        lambda: speed(
            unet, clf, FastPath(precision=best), size["speed_batch"]["default"], size["steps"], device, scale=0.0
        ),
    )
    fast, n = FastPath(precision=best), size["speed_batch"]["default"]  # a whole run of the solver
    guarded(r, "solver", deadline, lambda: speed(unet, clf, fast, n, a.solver_steps, device, solver=a.solver))
    guarded(r, "memory", deadline, lambda: memory(unet, clf, size, device, best))
    guarded(r, "syncs_per_step", deadline, lambda: syncs_per_step(unet, clf, device))
    guarded(r, "drift_vs_fp32", deadline, lambda: drift(unet, clf, size, device, [m for m in modes if m != "fp32"]))
    guarded(r, "agreement_vs_cpu_fp32", deadline, lambda: agreement(unet, clf, size, device))
    finish()
    print(markdown(r))
    return 0


def derive(r: dict, device_name: str | None, start: float) -> None:
    """Achieved TFLOP/s, share of peak and the projection from whatever parts have finished."""
    peaks = peak_of(device_name) if device_name else None
    flops = r.get("flops", {}).get("guided_step")
    r["achieved"] = {}
    for mode, s in r["speed"].items():
        if flops and "image_steps_per_s" in s:
            tflops = flops * s["image_steps_per_s"] / 1e12
            idx = {"fp32": 1 if torch.backends.cudnn.allow_tf32 else 0, "bf16": 2, "fp16": 3}[mode.split("_")[0]]
            peak = peaks[idx] if peaks else None
            r["achieved"][mode] = {
                "tflops": tflops,
                "peak_tflops": peak,
                "share_of_peak": tflops / peak if peak else None,
            }
    r["projection"] = project(r["speed"], r.get("unguided"))
    r["projection"]["solver"] = project_solver(
        r.get("solver", {}), r.get("unguided"), r["projection"]["gpu_hours_by_mode"]
    )
    r["wall_s"] = time.time() - start


def markdown(r: dict) -> str:
    lines = [
        f"# GPU check{' (DRY RUN, CPU, tiny presets)' if r['dry'] else ''}: {r['device']}, torch {r['torch']}, {r['date']}",
        "",
        r["note"],
        "",
        "| mode | batch | image-steps/s | TFLOP/s | share of peak | peak MB |",
        "|---|---|---|---|---|---|",
    ]
    for mode, s in r["speed"].items():
        if "image_steps_per_s" not in s:
            lines.append(f"| {mode} | – | {s.get('skipped') or s.get('error')} | | | |")
            continue
        ach = r["achieved"].get(mode, {})
        share = ach.get("share_of_peak")
        lines.append(
            f"| {mode} | {s['batch']} | {s['image_steps_per_s']:.2f} | {ach.get('tflops', 0):.2f} | "
            f"{'' if share is None else f'{share:.0%}'} | {s['peak_mem_mb'] or ''} |"
        )
    f = r.get("flops", {})
    if "guided_step" in f:
        lines += [
            "",
            f"FLOPs per guided image-step: {f['guided_step'] / 1e9:.1f} G (UNet forward {f['unet_forward'] / 1e9:.1f} G, "
            f"classifier forward+backward {f['classifier_fwd_bwd'] / 1e9:.1f} G)",
        ]
    for key in ("memory", "syncs_per_step", "drift_vs_fp32", "agreement_vs_cpu_fp32", "unguided"):
        lines += ["", f"{key}: `{json.dumps(r.get(key), default=str)}`"]
    pr = r["projection"]
    lines += [
        "",
        f"Projected GPU-hours for Table 1 ({pr['scales']} scales x {pr['samples']} samples x {pr['steps']} steps, "
        f"{pr['guided_scales']} guided): "
        + ", ".join(f"{m}: {h:.0f} h" for m, h in pr["gpu_hours_by_mode"].items())
        + (" (dry: meaningless)" if r["dry"] else ""),
        "",
        *solver_lines(r),
        f"Wall time {r['wall_s']:.0f} s",
        "",
    ]
    return "\n".join(lines)


def solver_lines(r: dict) -> list[str]:
    """The fast solver's speed and its Table 1 projection beside DDPM-250's (or why it is missing)."""
    sol, ps = r.get("solver"), r["projection"].get("solver")
    if not ps:
        return [f"solver: `{json.dumps(sol, default=str)}`", ""] if sol else []
    base = ps["ddpm_250_gpu_hours"]
    versus = f" against DDPM-250's {base:.1f} ({ps['ratio_vs_ddpm_250']:.1f}x fewer)" if base else ""
    return [
        f"{ps['solver']} at {ps['steps']} steps ({ps['mode']}, batch {sol['batch']}): "
        f"{sol['image_steps_per_s']:.2f} image-steps/s, {sol['seconds']:.2f} s per batch; Table 1 at this "
        f"setting: {ps['gpu_hours']:.1f} GPU-hours{versus}{' (dry: meaningless)' if r['dry'] else ''}",
        "",
    ]


if __name__ == "__main__":
    sys.exit(main())
