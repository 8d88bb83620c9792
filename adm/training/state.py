"""Training state shared by the loops: lr schedule, EMA, the optimizer step, RNG capture and
restore, resumable checkpoint state, the per-interval meter and the training-data setup.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import torch

from adm.errors import TrainingDiverged
from adm.training import distributed as dist
from adm.training.presets import TrainConfig


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
            f"({ckpt}) is kept. Try a lower --lr, --grad-clip 1, or --precision fp32."
        )
    scaler.unscale_(opt)
    gnorm = grad_norm_and_clip(model.parameters(), grad_clip)
    scaler.step(opt)
    scaler.update()
    return gnorm if math.isfinite(gnorm) else float("nan")


# ----------------------------------------------------------------------------- checkpoints


def capture_rng() -> dict:
    """Every global RNG state as weights_only-loadable objects (tensors, ints, tuples)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
    }
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
    from adm.nets.checkpoints import atomic_torch_save

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
    from adm.data.datasets import DataError
    from adm.data.ondisk import open_dataset

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


def checkpoint_state(
    step: int, meta: dict, model, opt, scaler, sampler=None, ema=None, meter=None, elapsed_s: float = 0.0
) -> dict:
    """Everything needed to continue bit-exactly: weights, EMA, optimizer, loss scale, RNG, step,
    and the unfinished log interval of every rank (so the resumed log rows are exact)."""
    return {
        "step": step,
        "meta": meta,
        "model": model.state_dict(),
        "opt": opt.state_dict(),
        "scaler": scaler.state_dict(),
        "sampler": sampler_state(sampler) if sampler else {},
        "ema": {repr(r): v for r, v in (ema or {}).items()},
        "rng": gather_rng(),
        "meter": gather_per_rank(meter.state() if meter else {}),
        "elapsed_s": float(elapsed_s),
    }
