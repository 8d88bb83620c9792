"""Pieces shared by both training loops: the training config + presets, data order as a function
of (seed, step), EMA, lr schedule, mixed precision, resumable checkpoints and the CSV log.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from adm import dist
from adm.config import OMIT_AT_DEFAULT
from adm.errors import TrainingDiverged  # noqa: F401 (re-exported)
from adm.trainlog import CSVLog  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000                      # optimizer steps to train for (the run ends there)
    batch_size: int = 256                  # GLOBAL batch: images per step summed over all ranks
    microbatch: int = 0                    # images per forward/backward pass; 0 = the whole rank batch
    lr: float = 1e-4                       # AdamW learning rate (peak, before annealing)
    weight_decay: float = 0.0              # AdamW decoupled weight decay (per step, × lr)
    ema_rates: tuple[float, ...] = (0.9999,)  # EMA decay per step; ema.pt = the first (diffusion only)
    lr_anneal_steps: int = 0               # lr decays linearly to 0 at this step; 0 = constant lr
    schedule_sampler: str = "uniform"      # timestep sampler: "uniform" | "loss-second-moment"
    grad_clip: float = 0.0                 # max global L2 grad norm; 0 = no clipping
    precision: str = "fp32"                # "fp32" | "bf16" (autocast) | "fp16" (autocast + GradScaler, CUDA only)
    save_interval: int = 10_000            # steps between resumable checkpoints (and at the end)
    log_interval: int = 100                # steps averaged into one CSV row
    eval_interval: int = 1_000             # classifier only: steps between held-out evaluations
    random_flip: bool = True               # mirror each training image left-right with p = 0.5
    seed: int = 0                          # fixes init, data order, timesteps and noise
    # diffusion only: each image's label becomes the null class with this probability, so the
    # model also learns eps(x_t, null) for classifier-free guidance (0.1 in Ho & Salimans 2021)
    label_dropout: float = dataclasses.field(default=0.0, metadata=OMIT_AT_DEFAULT)

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
        if self.schedule_sampler not in ("uniform", "loss-second-moment"):
            raise ValueError(f"unknown schedule sampler {self.schedule_sampler!r}; expected 'uniform' or 'loss-second-moment'")


TRAIN_PRESETS: dict[str, TrainConfig] = {
    # Paper Table 11 / README for the 128×128 conditional model: batch 256, lr 1e-4, EMA 0.9999.
    "imagenet128": TrainConfig(steps=4_360_000, batch_size=256, lr=1e-4, ema_rates=(0.9999,),
                               precision="fp16", save_interval=10_000, log_interval=100),
    # README classifier flags: --iterations 300000 --anneal_lr True --batch_size 256 --lr 3e-4 --weight_decay 0.05
    "imagenet128-classifier": TrainConfig(steps=300_000, batch_size=256, lr=3e-4, weight_decay=0.05,
                                          lr_anneal_steps=300_000, precision="fp16",
                                          save_interval=10_000, log_interval=100, eval_interval=1_000),
    # 8×8 digits on 2 CPU threads: ~0.3 s/step, so 800 steps (~4.5 min) keep the demo DAG under
    # 10 min. A mirrored digit is not a digit: no flip. So short a run is too few steps for
    # EMA 0.9999 (it would still hold the init); 0.995 averages ~200 steps.
    "demo-digits": TrainConfig(steps=800, batch_size=128, lr=2e-3, ema_rates=(0.995, 0.999),
                               lr_anneal_steps=800, grad_clip=1.0, save_interval=200,
                               log_interval=50, random_flip=False),
    "demo-digits-classifier": TrainConfig(steps=500, batch_size=128, lr=2e-3, weight_decay=0.05,
                                          lr_anneal_steps=500, save_interval=200, log_interval=50,
                                          eval_interval=100, random_flip=False),
    # The 4x4 -> 8x8 demo upsampler (adm/train_upsampler.py), 120 CPU-s on one thread. Measured
    # against the base samples' FID 19 at scale 1: 200 steps x 32 gave FID 136 (raw weights), 400 x
    # 64 gave 66 (raw) / 80 (EMA 0.99, still holding the init): so short a run wants a fast EMA.
    "demo-upsample": TrainConfig(steps=400, batch_size=64, lr=2e-3, ema_rates=(0.95,),
                                 lr_anneal_steps=400, grad_clip=1.0, save_interval=200,
                                 log_interval=50, random_flip=False),
    # Unit tests: a handful of steps, a checkpoint every 2.
    "tiny-test": TrainConfig(steps=6, batch_size=8, lr=1e-3, ema_rates=(0.9, 0.99), save_interval=2,
                             log_interval=1, random_flip=True),
    "tiny-test-classifier": TrainConfig(steps=6, batch_size=8, lr=1e-3, weight_decay=0.05,
                                        lr_anneal_steps=6, save_interval=2, log_interval=1,
                                        eval_interval=3),
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


# ----------------------------------------------------------------------------- data order / seeds


def _seed(*words: int) -> int:
    """A 63-bit seed that is a pure function of the words (SeedSequence hashing)."""
    a, b = np.random.SeedSequence([int(w) for w in words]).generate_state(2)
    return (int(a) << 31) ^ int(b)


def batch_indices(seed: int, step: int, batch_size: int, n: int, rank: int = 0, world: int = 1):
    """(dataset indices, flip flags) of this rank's share of the global batch at `step`.

    The data stream is an endless concatenation of epoch permutations, epoch e shuffled by
    (seed, e); step s reads positions [s·B, (s+1)·B). Depends on (seed, step) only, so a resumed
    run sees exactly the batches of an uninterrupted one, with no data-loader state to save.
    """
    pos = step * batch_size + np.arange(batch_size, dtype=np.int64)
    epoch, offset = pos // n, pos % n
    idx = np.empty(batch_size, np.int64)
    for e in np.unique(epoch):
        perm = np.random.default_rng(_seed(seed, e, 1)).permutation(n)
        idx[epoch == e] = perm[offset[epoch == e]]
    flips = np.random.default_rng(_seed(seed, step, 2)).random(batch_size) < 0.5
    local = batch_size // world  # the same share as dist.share (rank order = batch order)
    sl = slice(rank * local, (rank + 1) * local)
    return idx[sl], flips[sl]


def step_draws(seed: int, step: int, batch_size: int, sampler, image_shape) -> tuple[torch.Tensor, ...]:
    """(k, importance weights, eps) of this rank's share of `step`'s global batch (CPU tensors).

    Every rank draws the whole batch's timesteps from one (seed, step) generator and keeps its
    share; each example's eps has its own (seed, step, position) generator. No draw depends on
    the rank count or the microbatch, so 2 ranks x B/2 see exactly the draws of 1 rank x B.
    """
    k, w = sampler.sample(batch_size, torch.Generator().manual_seed(_seed(seed, step, 3)))
    mine = dist.share(batch_size)
    eps = torch.stack([torch.randn(tuple(image_shape), generator=torch.Generator().manual_seed(_seed(seed, step, j, 4)))
                       for j in range(mine.start, mine.stop)])
    return k[mine], w[mine], eps


def label_dropout_mask(seed: int, step: int, batch_size: int, p: float, rank: int = 0, world: int = 1) -> np.ndarray:
    """bool [B / world]: which of this rank's images train with the null label at `step`.

    One (seed, step) generator draws the whole global batch's coin flips and each rank keeps
    its contiguous share (as the timesteps), so 2 ranks x B/2 or microbatches drop exactly the
    images 1 rank x B drops. Its own stream id: drawing it shifts no other draw.
    """
    drop = np.random.default_rng(_seed(seed, step, 5)).random(batch_size) < p
    local = batch_size // world
    return drop[rank * local:(rank + 1) * local]


def with_null_class(model_cfg, label_dropout: float):
    """The network config a run with this label dropout trains: with the null class when > 0."""
    if label_dropout <= 0:
        return model_cfg
    if model_cfg.num_classes is None:
        raise ValueError("--label-dropout needs a class-conditional model (this preset has no classes)")
    return dataclasses.replace(model_cfg, null_class=True)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """ADM's linear anneal: lr · (1 − step / lr_anneal_steps), or constant lr."""
    if cfg.lr_anneal_steps <= 0:
        return cfg.lr
    return cfg.lr * max(0.0, 1.0 - step / cfg.lr_anneal_steps)


# ----------------------------------------------------------------------------- EMA / gradients


@torch.no_grad()
def ema_update(ema: dict[str, torch.Tensor], model: torch.nn.Module, rate: float) -> None:
    """θ_ema ← rate · θ_ema + (1 − rate) · θ, parameters only (buffers are copied at export)."""
    for name, p in model.named_parameters():
        ema[name].mul_(rate).add_(p.detach(), alpha=1.0 - rate)


def ema_state_dict(model: torch.nn.Module, ema: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's full state_dict with the EMA parameters substituted."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    sd.update({k: v.detach().clone() for k, v in ema.items()})
    return sd


def grad_norm_and_clip(params, max_norm: float) -> float:
    """Global L2 norm of the gradients (before clipping); clips in place when max_norm > 0."""
    params = [p for p in params if p.grad is not None]
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))


def optimizer_step(model, opt, scaler, bad, step: int, ckpt, grad_clip: float, bar=None) -> float:
    """Stop on a non-finite loss (any rank) before the weights change, else unscale, clip and
    step; returns the gradient norm before clipping (NaN when it is not finite)."""
    if dist.all_reduce_sum(bad).item() > 0:
        if bar is not None:
            bar.close()
        raise TrainingDiverged(
            f"loss is not finite (NaN/inf) at step {step + 1}; stopped. The last good checkpoint "
            f"({ckpt}) is kept. Try a lower --lr, --grad-clip 1, or --precision fp32.")
    scaler.unscale_(opt)
    gnorm = grad_norm_and_clip(model.parameters(), grad_clip)
    scaler.step(opt)
    scaler.update()
    return gnorm if math.isfinite(gnorm) else float("nan")


# ----------------------------------------------------------------------------- checkpoints


def capture_rng() -> dict:
    """Every global RNG state as weights_only-loadable objects (tensors, ints, tuples)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng() -> list[dict]:
    """One RNG record per rank (all ranks call this; rank 0 writes the checkpoint)."""
    return gather_per_rank(capture_rng())


def gather_per_rank(mine) -> list:
    """[rank 0's object, rank 1's, ...] on every rank (all ranks call this)."""
    if dist.world_size() == 1:
        return [mine]
    out = [None] * dist.world_size()
    torch.distributed.all_gather_object(out, mine)
    return out


def sampler_state(sampler) -> dict:
    return {k: torch.from_numpy(np.asarray(v)) for k, v in sampler.state_dict().items()}


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic (temp file + os.replace): a kill at any moment leaves the previous checkpoint intact."""
    from adm.checkpoints import atomic_torch_save

    atomic_torch_save(state, path)


def restore_rng_for_rank(states: list[dict]) -> None:
    r = dist.rank()
    restore_rng(states[r] if r < len(states) else states[0])


# ----------------------------------------------------------------------------- logging


class Meter:
    """Running means of named scalars over one log interval (summed across ranks at read-out)."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, float] = {}

    def add(self, name: str, values: torch.Tensor) -> None:
        values = values.detach().float().reshape(-1)
        self.sums[name] = self.sums.get(name, 0.0) + float(values.sum())
        self.counts[name] = self.counts.get(name, 0.0) + values.numel()

    def add_quartiles(self, name: str, values: torch.Tensor, k: torch.Tensor, num_steps: int) -> None:
        """Also average `values` per quarter of the timestep range (q0 = least noise)."""
        self.add(name, values)
        q = (k.to(values.device) * 4) // num_steps
        for i in range(4):  # added even when empty, so every rank holds the same names
            self.add(f"{name}_q{i}", values[q == i])

    def state(self) -> dict:
        """The running sums of the unfinished interval (saved in checkpoints: exact log rows on resume)."""
        return {"sums": dict(self.sums), "counts": dict(self.counts)}

    def load_state(self, state: dict) -> None:
        self.sums, self.counts = dict(state.get("sums", {})), dict(state.get("counts", {}))

    def means(self) -> dict[str, float]:
        names = sorted(self.sums)
        t = torch.tensor([[self.sums[n] for n in names], [self.counts[n] for n in names]], dtype=torch.float64)
        if dist.world_size() > 1:
            t = dist.all_reduce_sum(t.cuda() if torch.distributed.get_backend() == "nccl" else t).cpu()
        self.sums, self.counts = {}, {}
        return {n: float(s / c) for n, s, c in zip(names, t[0].tolist(), t[1].tolist()) if c > 0}


# ----------------------------------------------------------------------------- run setup / resume


def load_training_data(path, image_size: int, num_classes: int | None, cfg: TrainConfig):
    """(images uint8 NHWC memory-mapped, labels int64, per-rank batch, microbatch) with the
    user-facing checks. The images stay on disk: each rank reads only its share's rows per step."""
    from adm.data import DataError
    from adm.diskdata import open_dataset

    images, labels = open_dataset(path, image_size)
    if num_classes is not None and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: labels span {labels.min()}..{labels.max()} but the model has {num_classes} classes")
    world = dist.world_size()
    if cfg.batch_size % world:
        raise ValueError(f"--batch-size {cfg.batch_size} is not divisible by the {world} processes")
    local = cfg.batch_size // world
    micro = cfg.microbatch or local
    if micro > local:
        micro = local
    return images, labels, local, micro


def checkpoint_state(step: int, meta: dict, model, opt, scaler, sampler=None, ema=None,
                     meter=None, elapsed_s: float = 0.0) -> dict:
    """Everything needed to continue bit-exactly: weights, EMA, optimizer, loss scale, RNG, step,
    and the unfinished log interval of every rank (so the resumed log rows are exact)."""
    return {"step": step, "meta": meta, "model": model.state_dict(), "opt": opt.state_dict(),
            "scaler": scaler.state_dict(), "sampler": sampler_state(sampler) if sampler else {},
            "ema": {repr(r): v for r, v in (ema or {}).items()}, "rng": gather_rng(),
            "meter": gather_per_rank(meter.state() if meter else {}), "elapsed_s": float(elapsed_s)}
