"""Sharded, seed-exact guided sampling and the merge of shards (the `sample` / `merge` programs).

Sample i (a global index in 0..N-1) draws its label and every noise tensor from (seed, i) only
(adm.sampling.rng), so shards can run anywhere, in any order, at any batch size, and the merged file is
what one unsharded run writes; the same indices get the same seeds at every guidance scale.
Shard k of n covers [k·N//n, (k+1)·N//n). Batches are aligned to multiples of `batch_size` in
the global index space, so a shard computes the same batches an unsharded run does wherever
the shard boundaries allow.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from adm.data.datasets import save_npz
from adm.fileio import write_json
from adm.programs.shards import ShardError, merge_shards, shard_range  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class SampleConfig:
    model: str  # diffusion checkpoint .pt (our JSON beside it, or --model-preset)
    out: str  # shard npz to write (atomic); the resolved config goes to .json beside
    num_samples: int  # N: total samples over all shards
    classifier: str | None = None  # classifier checkpoint .pt; needed when scale > 0 (classifier guidance)
    scale: float = 0.0  # classifier guidance scale s, or the CFG weight w (0 = unguided)
    shard: int = 0  # k: this shard's number, 0 <= k < num_shards
    num_shards: int = 1  # n: shard k covers global indices [k·N//n, (k+1)·N//n)
    seed: int = 0  # base seed: sample i uses (seed, i) only
    respacing: str = "250"  # sampling steps: "250", "25" (DDPM) or "ddim25" (DDIM)
    batch_size: int | str = (
        64  # images per forward pass (images equal up to float rounding, see tests/unit/test_invariance.py), or "auto":
    )
    # the largest that fits the device, from two probe steps
    labels: str = "uniform"  # "uniform" (i.i.d. per index) | "balanced" (each block of C holds every class)
    model_preset: str | None = None  # config for OpenAI files that carry no JSON
    classifier_preset: str | None = None  # likewise for the classifier
    diffusion_preset: str | None = None  # T/schedule when the model's JSON has none (default: model_preset)
    clip_denoised: bool = True  # clip x̂₀ to [-1, 1] at every step (as the paper's sampler)
    precision: str = "fp32"  # fp32 (exact) | fp16 (CUDA; the paper's) | bf16 | auto (fp16 on CUDA, else fp32)
    compile: bool = False  # torch.compile both networks (pays only on long runs; see bench/)
    fast: str = "exact"  # named fast path (adm.sampling.precision.FAST_MODES): exact (bytes equal to the
    # reference) | fast (fused attention) | compiled (fast + torch.compile)
    channels_last: bool = False  # NHWC weights and activations on top of the mode (rounding only)
    fused_attention: bool = False  # SDPA's fused attention kernels on top of the mode (rounding only)
    guidance_interval: tuple[float, float] | None = None  # guide only where sigma_lo < sigma_t <= sigma_hi
    # (Kynkaanniemi et al. 2024; sigma of the original timestep); None: every step
    sampler: str | None = None  # ddpm | ddim | dpmpp-2m | dpmpp-3m | dpmpp-2m-sde (adm.sampling.solvers); None: from
    # respacing ("ddimN" -> ddim, else ddpm); a solver takes respacing = its number of steps
    step_schedule: str = "uniform"  # solver nodes: uniform (in t) | logsnr | karras (rho 7); see step_schedule
    guidance: str = "classifier"  # "classifier" (Dhariwal & Nichol) | "cfg": classifier-free, eps~ =
    # (1 + w) eps(x, y) - w eps(x, null) with w = scale (a null-class model) | "autoguidance" (Karras
    # et al. 2024): eps~ = eps_guide + w (eps_main - eps_guide), w = scale >= 1
    guide_model: str | None = None  # autoguidance: the weaker guide's checkpoint .pt (same task and size)
    guide_model_preset: str | None = None  # config for a guide file that carries no JSON

    def __post_init__(self) -> None:
        if self.batch_size != "auto" and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)):
            raise ValueError(f"--batch-size must be an integer or auto, got {self.batch_size!r}")
        if self.num_samples < 1 or (self.batch_size != "auto" and self.batch_size < 1):
            raise ValueError("--num-samples and --batch-size must be >= 1")
        if not 0 <= self.shard < self.num_shards:
            raise ValueError(f"--shard must be in 0..{self.num_shards - 1}, got {self.shard}")
        if not math.isfinite(self.scale) or self.scale < 0:  # NaN passes `< 0`: test finiteness first
            raise ValueError(f"--scale must be a finite number >= 0, got {self.scale}")
        if self.guidance not in ("classifier", "cfg", "autoguidance"):
            raise ValueError(f"--guidance must be classifier, cfg or autoguidance, got {self.guidance!r}")
        if self.guidance != "classifier" and (self.classifier is not None or self.classifier_preset is not None):
            raise ValueError(f"--guidance {self.guidance} takes no --classifier: a model guides the samples")
        if (self.guidance == "autoguidance") != (self.guide_model is not None):
            raise ValueError("--guide-model is the guide of --guidance autoguidance, which needs one")
        if self.guide_model_preset is not None and self.guide_model is None:
            raise ValueError("--guide-model-preset needs --guide-model")
        if self.guidance == "autoguidance" and self.scale < 1:
            raise ValueError(
                f"--guidance autoguidance needs --scale w >= 1 (1 = the main model alone), got {self.scale}"
            )
        if self.guidance == "classifier" and self.scale > 0 and self.classifier is None:
            raise ValueError("--scale > 0 needs --classifier")
        if self.guidance_interval is not None:  # (lo, hi) floats; a list from JSON/argparse becomes a tuple
            from adm.sampling.guidance import check_interval

            object.__setattr__(self, "guidance_interval", check_interval(self.guidance_interval))
        from adm.sampling.precision import check_fast_mode

        check_fast_mode(self.fast)
        if self.sampler not in (None, "ddpm", "ddim", "dpmpp-2m", "dpmpp-3m", "dpmpp-2m-sde"):
            raise ValueError(f"--sampler must be ddpm, ddim, dpmpp-2m, dpmpp-3m or dpmpp-2m-sde, got {self.sampler!r}")
        if self.sampler is not None and self.sampler.startswith("dpmpp") and not self.respacing.strip().isdigit():
            raise ValueError(f"--sampler {self.sampler} takes --respacing as a number of steps, got {self.respacing!r}")
        from adm.diffusion.schedule import STEP_SCHEDULES

        if self.step_schedule not in STEP_SCHEDULES:
            raise ValueError(f"--step-schedule must be one of {', '.join(STEP_SCHEDULES)}, got {self.step_schedule!r}")
        if self.step_schedule != "uniform" and not (self.sampler or "").startswith("dpmpp"):
            raise ValueError("--step-schedule is for the solvers (--sampler dpmpp-2m / dpmpp-3m / dpmpp-2m-sde)")
        if self.labels not in ("uniform", "balanced"):
            raise ValueError(f"--labels must be uniform or balanced, got {self.labels!r}")


def _batches(indices: range, batch_size: int):
    """Split a shard at multiples of batch_size in GLOBAL index space."""
    lo = indices.start
    while lo < indices.stop:
        hi = min(indices.stop, (lo // batch_size + 1) * batch_size)
        yield range(lo, hi)
        lo = hi


def load_networks(cfg: SampleConfig, device):
    """(model, model_cfg, diffusion_cfg, classifier | None, classifier_cfg | None)."""
    from adm.nets.checkpoints import load_model, read_sidecar
    from adm.nets.config import DiffusionConfig, from_dict
    from adm.nets.presets import get_preset

    model, model_cfg = load_model(cfg.model, cfg.model_preset, expect_kind="unet", map_location=device)
    meta = read_sidecar(cfg.model) or {}
    if meta.get("diffusion"):
        diffusion_cfg = from_dict(DiffusionConfig, meta["diffusion"])
    else:
        name = cfg.diffusion_preset or cfg.model_preset
        if name is None:
            raise ValueError(f"{cfg.model}: its JSON names no diffusion process; give --diffusion-preset")
        diffusion_cfg = get_preset(name, kind="diffusion")
    classifier = classifier_cfg = None
    if cfg.scale > 0 and cfg.guidance == "classifier":
        classifier, classifier_cfg = load_model(
            cfg.classifier, cfg.classifier_preset, expect_kind="classifier", map_location=device
        )
        if classifier_cfg.image_size != model_cfg.image_size:
            raise ValueError(f"classifier is {classifier_cfg.image_size}px but the model is {model_cfg.image_size}px")
    return model, model_cfg, diffusion_cfg, classifier, classifier_cfg


def load_guide(cfg: SampleConfig, model_cfg, diffusion_cfg, device):
    """The autoguidance guide: a model of the same task (image size, classes, output channels)
    and the same diffusion process as the main one, so its eps is comparable at every x_t."""
    from adm.nets.checkpoints import load_model, read_sidecar
    from adm.nets.config import DiffusionConfig, from_dict

    guide, guide_cfg = load_model(cfg.guide_model, cfg.guide_model_preset, expect_kind="unet", map_location=device)
    same = ("image_size", "num_classes", "learn_sigma", "out_channels")
    differ = [k for k in same if getattr(guide_cfg, k, None) != getattr(model_cfg, k, None)]
    if differ:
        raise ValueError(f"{cfg.guide_model}: the guide differs from the main model in {differ}: not the same task")
    meta = (read_sidecar(cfg.guide_model) or {}).get("diffusion")
    if meta and from_dict(DiffusionConfig, meta) != diffusion_cfg:
        raise ValueError(f"{cfg.guide_model}: the guide was trained on another diffusion process than the main model")
    return guide


def self_guided(cfg: SampleConfig, model_cfg, model_fn, schedule):
    """The classifier-free guided model_fn (w = cfg.scale) of a model trained with a null class;
    the interval, if any, is applied to it (plain conditional eps outside)."""
    from adm.sampling.guidance import classifier_free_guidance

    if not model_cfg.null_class:
        raise ValueError(
            f"{cfg.model}: --guidance cfg needs a model trained with a null class "
            f"(train-diffusion --label-dropout P > 0); this one has none"
        )
    return classifier_free_guidance(
        model_fn, cfg.scale, model_cfg.num_classes, model_cfg.learn_sigma, schedule, cfg.guidance_interval
    )


GUIDANCE_RULES = {
    "classifier": "mean + scale * Sigma * grad log p(y | x_t) (DDIM: eps form)",
    "cfg": "eps~ = (1 + w) eps(x, y) - w eps(x, null), w = scale; v from the conditional pass",
    "autoguidance": "eps~ = eps_guide + w (eps_main - eps_guide), w = scale; v from the main model",
}


def guidance_record(cfg: SampleConfig) -> dict:
    """How the shard was guided, for its JSON: method, weight and its convention, interval."""
    rule = GUIDANCE_RULES[cfg.guidance]
    interval = None if cfg.guidance_interval is None else [cfg.guidance_interval[0], cfg.guidance_interval[1]]
    record = {"method": cfg.guidance, "scale": cfg.scale, "rule": rule, "sigma_interval": interval}
    return record | ({"guide_model": cfg.guide_model} if cfg.guide_model else {})


def count_guided_steps(cfg: SampleConfig, base_schedule, schedule) -> int:
    """How many of the run's steps are guided: every step, those inside --guidance-interval, or 0
    for a weight that does not guide (s = 0, CFG w = 0, autoguidance w = 1). A limited interval
    that guides none is announced in one warning line on stderr (the workflow refuses such an
    interval in its config check; by hand it would give unguided samples under a guided name)."""
    from adm.sampling.guidance import guided_step_count, step_sigmas

    if cfg.scale == 0 or (cfg.guidance == "autoguidance" and cfg.scale == 1):
        return 0
    guided = guided_step_count(base_schedule, schedule.timesteps, cfg.guidance_interval)
    if guided == 0:
        lo, hi = cfg.guidance_interval
        sigma = step_sigmas(schedule)
        print(
            f"warning: --guidance-interval {lo:g} {hi:g} contains none of the {len(schedule)} sampling steps "
            f"(sigma {sigma.min():.4g} to {sigma.max():.4g}): no step is guided, the samples are unguided",
            file=sys.stderr,
        )
    return guided


def _probe_after_oom(step, dev, cap: int, probe: dict | None) -> dict | None:
    """The batch-size probe, run after an out-of-memory error to name a size that fits (None if
    even the probe does not fit)."""
    if probe is not None:
        return probe
    from adm.sampling.batch_memory import probe_batch_size

    if dev.type == "cuda":
        torch.cuda.empty_cache()
    try:
        return probe_batch_size(step, dev, cap)
    except torch.OutOfMemoryError:
        return None


def sample_shard(cfg: SampleConfig, device: str = "cpu", progress: bool = True, run_info: dict | None = None) -> dict:
    """Generate shard `cfg.shard` and write `arr_0` uint8 NHWC, `arr_1` labels, `indices`; returns a summary."""
    from adm.diffusion.schedule import make_schedule, respace, step_schedule
    from adm.sampling.batch_memory import guided_step, out_of_memory_message, probe_batch_size
    from adm.sampling.guidance import autoguidance, classifier_guidance, limited_interval
    from adm.sampling.precision import (
        fast_path,
        resolve_sampling_precision,
        sampling_classifier_fn,
        sampling_model_fn,
    )
    from adm.sampling.rng import randn_per_sample, sample_generators, sample_labels
    from adm.sampling.samplers import ddim_sample, ddpm_sample, to_uint8
    from adm.sampling.solvers import SOLVERS

    dev = torch.device(device)
    model, model_cfg, diffusion_cfg, classifier, classifier_cfg = load_networks(cfg, dev)
    spec = cfg.respacing.strip()
    sampler_name = cfg.sampler or ("ddim" if spec.startswith("ddim") else "ddpm")
    base_schedule = make_schedule(diffusion_cfg.noise_schedule, diffusion_cfg.diffusion_steps)
    if sampler_name in SOLVERS:  # the solver's nodes (as respace's for "uniform")
        schedule = step_schedule(base_schedule, cfg.step_schedule, int(spec))
    else:
        schedule = respace(base_schedule, spec)  # "ddimN" striding or the reference's "N" with either sampler
    num_classes = model_cfg.num_classes or (classifier_cfg.num_classes if classifier_cfg else None)
    fast = fast_path(
        cfg.fast,
        resolve_sampling_precision(cfg.precision, dev.type),
        compile=cfg.compile,
        channels_last=cfg.channels_last,
        fused_attention=cfg.fused_attention,
    )
    classifier_fn = sampling_classifier_fn(classifier, fast, dev.type) if classifier is not None else None
    full_cond_fn = classifier_guidance(classifier_fn, cfg.scale) if classifier is not None else None
    # sigma bounds are looked up at the ORIGINAL timestep in the training schedule; a full
    # interval (or None) returns full_cond_fn itself, so today's samples are unchanged
    cond_fn = limited_interval(full_cond_fn, base_schedule, cfg.guidance_interval)
    sampler = {"ddpm": ddpm_sample, "ddim": ddim_sample, **SOLVERS}[sampler_name]
    # Only a class-conditional network sees y; the classifier always gets the label it guides to.
    net_fn = sampling_model_fn(model, fast, dev.type)
    model_fn = net_fn if model_cfg.num_classes else (lambda x, t, y: net_fn(x, t, None))
    if cfg.guidance == "cfg":  # the model guides itself: a model_fn transform, no cond_fn
        model_fn = self_guided(cfg, model_cfg, model_fn, base_schedule)
    if cfg.guidance == "autoguidance":  # a weaker model of the same task guides: a model_fn transform
        guide_fn = sampling_model_fn(load_guide(cfg, model_cfg, diffusion_cfg, dev), fast, dev.type)
        guide = guide_fn if model_cfg.num_classes else (lambda x, t, y: guide_fn(x, t, None))
        model_fn = autoguidance(model_fn, guide, cfg.scale, model_cfg.learn_sigma, base_schedule, cfg.guidance_interval)
    guided_steps = count_guided_steps(cfg, base_schedule, schedule)
    size, channels = model_cfg.image_size, 3
    # the probe measures a guided step whatever the interval: the peak memory of the run
    step = guided_step(model_fn, full_cond_fn, (channels, size, size), num_classes, int(schedule.timesteps[-1]), dev)

    indices = shard_range(cfg.num_samples, cfg.shard, cfg.num_shards)
    images = np.zeros((len(indices), size, size, 3), np.uint8)
    labels = (
        sample_labels(cfg.seed, indices, num_classes, cfg.labels).numpy()
        if num_classes
        else np.zeros(len(indices), np.int64)
    )
    probe = probe_batch_size(step, dev, cap=len(indices)) if cfg.batch_size == "auto" else None
    if probe is not None and probe["batch_size"] < 1:
        raise ValueError(out_of_memory_message(1, dev, probe))
    batch_size = probe["batch_size"] if probe else cfg.batch_size
    t0 = time.time()
    bar = tqdm(
        total=len(indices),
        desc=f"sample {cfg.guidance} {cfg.scale:g} shard {cfg.shard}/{cfg.num_shards}",
        unit="img",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        for batch in _batches(indices, batch_size):
            sl = slice(batch.start - indices.start, batch.stop - indices.start)
            gens = sample_generators(cfg.seed, batch)  # CPU generators: identical noise on any device
            noise = randn_per_sample(gens, (channels, size, size), dev)  # x_T of each sample
            y = torch.from_numpy(labels[sl]).to(dev) if num_classes else None
            x0 = sampler(
                model_fn,
                noise,
                schedule,
                labels=y,
                cond_fn=cond_fn,
                generators=gens,
                clip_denoised=cfg.clip_denoised,
                learn_sigma=model_cfg.learn_sigma,
            )
            if not bool(torch.isfinite(x0).all()):  # the uint8 cast would turn NaN into black pixels
                bar.close()
                raise ValueError(
                    f"samples {batch.start}..{batch.stop - 1} are not finite (NaN/inf) at --scale "
                    f"{cfg.scale:g} (the guidance gradient or the network overflowed); nothing written to {cfg.out}"
                )
            images[sl] = to_uint8(x0)
            bar.update(len(batch))
    except torch.OutOfMemoryError:  # one line naming a size that fits; no shard file is written
        bar.close()
        raise ValueError(
            out_of_memory_message(batch_size, dev, _probe_after_oom(step, dev, len(indices), probe))
        ) from None
    bar.close()
    elapsed = time.time() - t0
    save_npz(cfg.out, images, labels, indices=np.arange(indices.start, indices.stop, dtype=np.int64))
    summary = {
        "n": len(indices),
        "first_index": indices.start,
        "sampling_s": elapsed,
        "images_per_s": len(indices) / max(elapsed, 1e-9),
        "steps": len(schedule),
        "guided_steps": guided_steps,  # steps whose guidance term was applied (see count_guided_steps)
        "sampler": sampler_name,
        "num_classes": num_classes,
    }
    write_json(
        Path(cfg.out).with_suffix(".json"),
        {
            "command": "sample",
            "config": dataclasses.asdict(cfg),
            "device": device,
            "precision": fast.precision,
            "fast_path": dataclasses.asdict(fast),
            "batch_size": batch_size,
            "batch_probe": probe,
            "guidance": guidance_record(cfg),
            "diffusion": dataclasses.asdict(diffusion_cfg),
            **summary,
            **(run_info or {}),
        },
    )
    return summary
