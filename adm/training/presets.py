"""Training configs: TrainConfig (every hyperparameter, one comment each with its unit) and the
named presets of the paper's and the demo's models. Torch-free: the workflow's config validation
imports it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from adm.nets.config import OMIT_AT_DEFAULT


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000  # optimizer steps to train for (the run ends there)
    batch_size: int = 256  # GLOBAL batch: images per step summed over all ranks
    microbatch: int = 0  # images per forward/backward pass; 0 = the whole rank batch
    lr: float = 1e-4  # AdamW learning rate (peak, before annealing)
    weight_decay: float = 0.0  # AdamW decoupled weight decay (per step, × lr)
    ema_rates: tuple[float, ...] = (0.9999,)  # EMA decay per step; ema.pt = the first (diffusion only)
    lr_anneal_steps: int = 0  # lr decays linearly to 0 at this step; 0 = constant lr
    schedule_sampler: str = "uniform"  # timestep sampler: "uniform" | "loss-second-moment"
    grad_clip: float = 0.0  # max global L2 grad norm; 0 = no clipping
    precision: str = "fp32"  # "fp32" | "bf16" (autocast) | "fp16" (autocast + GradScaler, CUDA only)
    save_interval: int = 10_000  # steps between resumable checkpoints (and at the end)
    log_interval: int = 100  # steps averaged into one CSV row
    eval_interval: int = 1_000  # classifier only: steps between held-out evaluations
    random_flip: bool = True  # mirror each training image left-right with p = 0.5
    seed: int = 0  # fixes init, data order, timesteps and noise
    # diffusion only: each image's label becomes the null class with this probability, so the
    # model also learns eps(x_t, null) for classifier-free guidance (0.1 in Ho & Salimans 2021)
    label_dropout: float = dataclasses.field(default=0.0, metadata=OMIT_AT_DEFAULT)
    # diffusion only: steps at which the first EMA is also kept as ema_step<N>.pt (an earlier
    # version of the model, the free guide of autoguidance, Karras et al. 2024); () = none
    keep_ema_steps: tuple[int, ...] = dataclasses.field(default=(), metadata=OMIT_AT_DEFAULT)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "save_interval", "log_interval", "eval_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.microbatch < 0 or self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("microbatch, weight_decay and grad_clip must be >= 0 and lr > 0")
        if not self.ema_rates or not all(0.0 <= r < 1.0 for r in self.ema_rates):
            raise ValueError(f"ema rates must be in [0, 1), got {self.ema_rates}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if not 0.0 <= self.label_dropout < 1.0:  # NaN fails the comparison too
            raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout}")
        if any(isinstance(n, bool) or not isinstance(n, int) or not 0 < n < self.steps for n in self.keep_ema_steps):
            raise ValueError(
                f"keep_ema_steps must be steps in 1..{self.steps - 1} (steps - 1), got {self.keep_ema_steps}"
            )
        if self.schedule_sampler not in ("uniform", "loss-second-moment"):
            raise ValueError(
                f"unknown schedule sampler {self.schedule_sampler!r}; expected 'uniform' or 'loss-second-moment'"
            )


TRAIN_PRESETS: dict[str, TrainConfig] = {
    # Paper Table 11 / README for the 128×128 conditional model: batch 256, lr 1e-4, EMA 0.9999.
    "imagenet128": TrainConfig(
        steps=4_360_000,
        batch_size=256,
        lr=1e-4,
        ema_rates=(0.9999,),
        precision="fp16",
        save_interval=10_000,
        log_interval=100,
    ),
    # README classifier flags: --iterations 300000 --anneal_lr True --batch_size 256 --lr 3e-4 --weight_decay 0.05
    "imagenet128-classifier": TrainConfig(
        steps=300_000,
        batch_size=256,
        lr=3e-4,
        weight_decay=0.05,
        lr_anneal_steps=300_000,
        precision="fp16",
        save_interval=10_000,
        log_interval=100,
        eval_interval=1_000,
    ),
    # 8×8 digits on 2 CPU threads: ~0.3 s/step, so 800 steps (~4.5 min) keep the demo DAG under
    # 10 min. A mirrored digit is not a digit: no flip. So short a run is too few steps for
    # EMA 0.9999 (it would still hold the init); 0.995 averages ~200 steps.
    "demo-digits": TrainConfig(
        steps=800,
        batch_size=128,
        lr=2e-3,
        ema_rates=(0.995, 0.999),
        lr_anneal_steps=800,
        grad_clip=1.0,
        save_interval=200,
        log_interval=50,
        random_flip=False,
    ),
    "demo-digits-classifier": TrainConfig(
        steps=500,
        batch_size=128,
        lr=2e-3,
        weight_decay=0.05,
        lr_anneal_steps=500,
        save_interval=200,
        log_interval=50,
        eval_interval=100,
        random_flip=False,
    ),
    # The 4x4 -> 8x8 demo upsampler (adm/training/upsampler.py), 120 CPU-s on one thread. Measured
    # against the base samples' FID 19 at scale 1: 200 steps x 32 gave FID 136 (raw weights), 400 x
    # 64 gave 66 (raw) / 80 (EMA 0.99, still holding the init): so short a run wants a fast EMA.
    "demo-upsample": TrainConfig(
        steps=400,
        batch_size=64,
        lr=2e-3,
        ema_rates=(0.95,),
        lr_anneal_steps=400,
        grad_clip=1.0,
        save_interval=200,
        log_interval=50,
        random_flip=False,
    ),
    # Unit tests: a handful of steps, a checkpoint every 2.
    "tiny-test": TrainConfig(
        steps=6, batch_size=8, lr=1e-3, ema_rates=(0.9, 0.99), save_interval=2, log_interval=1, random_flip=True
    ),
    "tiny-test-classifier": TrainConfig(
        steps=6,
        batch_size=8,
        lr=1e-3,
        weight_decay=0.05,
        lr_anneal_steps=6,
        save_interval=2,
        log_interval=1,
        eval_interval=3,
    ),
}

# Classifier-free guidance models: the same optimisation with labels dropped to the null class
# with p = 0.1 (Ho & Salimans 2021, Sec. 4: p_uncond 0.1 or 0.2, 0.1 in their ImageNet runs).
for _name in ("imagenet128", "demo-digits", "tiny-test"):
    TRAIN_PRESETS[f"{_name}-cfg"] = dataclasses.replace(TRAIN_PRESETS[_name], label_dropout=0.1)


def resolve_train_config(preset: str | None, **overrides) -> TrainConfig:
    """A named preset (or the ADM defaults when None) with every non-None override applied."""
    if preset is not None and preset not in TRAIN_PRESETS:
        raise KeyError(f"unknown training preset {preset!r}; known: {', '.join(sorted(TRAIN_PRESETS))}")
    base = TRAIN_PRESETS[preset] if preset else TrainConfig()
    given = {k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items() if v is not None}
    return dataclasses.replace(base, **given)
