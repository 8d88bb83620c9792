"""Train the noisy-image classifier p_phi(y | x_t, t) used for guidance (ADM Sec. 4).

x_t = q_sample(x_0, t) with t uniform over the T training steps, cross-entropy on the label;
acc@1 / acc@5 on the training batches, and every `eval_interval` steps on held-out images both
noised (fixed t and noise, so rows compare) and clean (t = 0). Same optimiser, precision, DDP and
exact-resume machinery as train_diffusion.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from adm.data.datasets import DataError, load_npz, to_float
from adm.diffusion.gaussian import q_sample
from adm.diffusion.schedule import make_schedule
from adm.diffusion.timestep_sampler import UniformSampler
from adm.fileio import clean_stale_temps, write_json
from adm.nets.build import build_model
from adm.nets.config import ClassifierConfig, DiffusionConfig, to_dict
from adm.sampling.precision import autocast
from adm.training import distributed as dist
from adm.training.draws import _seed, batch_indices, step_draws
from adm.training.log import CLASSIFIER_COLUMNS, CLASSIFIER_EVAL, LOG, RESUME_LOG, CSVLog
from adm.training.presets import TrainConfig
from adm.training.resume import array_digest, resume, run_settings
from adm.training.state import (
    Meter,
    checkpoint_state,
    load_training_data,
    lr_at,
    optimizer_step,
    save_checkpoint,
)

HELDOUT_MAX = 2048  # held-out images scored per evaluation (a fixed subset for large sets)


def topk_correct(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """1.0 where y is among the k largest logits, per example."""
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == y[:, None]).any(dim=1).float()


def train_classifier(
    data,  # training npz (arr_0 uint8 NHWC, arr_1 int64)
    heldout,  # held-out npz for accuracy on unseen images (None = skip)
    out_dir,  # run folder: checkpoint.pt (+ its log), log.csv, model.pt/.json, train_config.json
    model_cfg: ClassifierConfig,  # classifier network (a preset from adm.nets.presets)
    diffusion_cfg: DiffusionConfig,  # the forward process whose x_t the classifier must read
    cfg: TrainConfig,  # optimisation settings (ema_rates unused: no EMA, as in ADM)
    device: str = "cpu",  # "cpu" | "cuda"
    progress: bool = True,  # tqdm bar with ETA on stderr (rank 0)
    run_info: dict | None = None,  # extra fields recorded in train_config.json
    restart_on_change: bool = False,  # a checkpoint of other settings is discarded (else: refused)
) -> dict:
    """Train until `cfg.steps` (resuming from `out_dir/checkpoint.pt`); returns a summary with accuracies."""
    dev = dist.init(device)
    rank, world = dist.rank(), dist.world_size()
    out_dir = Path(out_dir)
    images, labels, local_bs, micro = load_training_data(data, model_cfg.image_size, model_cfg.num_classes, cfg)
    held = load_heldout(heldout, model_cfg, cfg.seed) if heldout is not None else None
    if dist.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(out_dir)  # left by a run killed while saving
    schedule = make_schedule(diffusion_cfg.noise_schedule, diffusion_cfg.diffusion_steps)
    K = len(schedule)
    uniform_t = UniformSampler(K)

    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg).to(dev)
    net = (
        torch.nn.parallel.DistributedDataParallel(model, [dev.index] if dev.type == "cuda" else None)
        if world > 1
        else model
    )
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(dev.type, enabled=cfg.precision == "fp16")
    ckpt = out_dir / "checkpoint.pt"
    data_id = {
        "train_sha256": array_digest(images, labels),
        "heldout_sha256": array_digest(*held) if held is not None else None,
    }  # held-out rows are in the log
    meta = run_settings(
        "train-classifier", model_cfg, diffusion_cfg, cfg, data_id, unused=("ema_rates", "schedule_sampler")
    )
    meter = Meter()
    start, elapsed0 = resume(
        ckpt, meta, cfg.steps, model, opt, scaler, meter=meter, restart_on_change=restart_on_change
    )
    log = CSVLog(out_dir / RESUME_LOG, CLASSIFIER_COLUMNS, resume_step=start if start else None, main=dist.is_main())
    if dist.is_main():  # only now: a refused resume must not leave a config claiming new settings
        write_json(
            out_dir / "train_config.json",
            {
                "command": "train-classifier",
                "data": str(data),
                "heldout": str(heldout) if heldout else None,
                "device": device,
                "world_size": world,
                "model": to_dict(model_cfg),
                "diffusion": to_dict(diffusion_cfg),
                "train": to_dict(cfg),
                "data_sha256": data_id,
                "resumed_from": start,
                **(run_info or {}),
            },
        )

    t0, tick, seen, last_eval = time.time() - elapsed0, time.time(), 0, {}  # elapsed_s spans resumed segments
    bar = tqdm(
        total=cfg.steps,
        initial=start,
        desc="train-classifier",
        unit="step",
        disable=not (progress and dist.is_main()),
        dynamic_ncols=True,
    )
    for step in range(start, cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        idx, flips = batch_indices(cfg.seed, step, cfg.batch_size, len(images), rank, world)
        x0 = to_float(images[idx], flips if cfg.random_flip else None, dev)
        y = torch.from_numpy(labels[idx]).to(dev)
        t_all, _, eps_all = step_draws(cfg.seed, step, cfg.batch_size, uniform_t, x0.shape[1:])  # t ~ U{0..T-1}
        model.train()
        opt.zero_grad(set_to_none=True)
        bad = torch.zeros((), device=dev)
        for i in range(0, local_bs, micro):
            xb, yb = x0[i : i + micro], y[i : i + micro]
            t = t_all[i : i + micro].to(dev)
            x_t = q_sample(schedule, xb, t, eps_all[i : i + micro].to(dev))
            sync = contextlib.nullcontext() if world == 1 or i + micro >= local_bs else net.no_sync()
            with sync:
                with autocast(cfg.precision, dev.type):
                    logits = net(x_t, t).float()
                ce = F.cross_entropy(logits, yb, reduction="none")
                loss = ce.mean() * (len(xb) / local_bs)
                bad += (~torch.isfinite(loss)).float()
                scaler.scale(loss).backward()
            acc1 = topk_correct(logits.detach(), yb, 1)
            meter.add_quartiles("loss", ce.detach(), t, K)
            meter.add_quartiles("acc@1", acc1, t, K)
            meter.add("acc@5", topk_correct(logits.detach(), yb, 5))
        gnorm = optimizer_step(model, opt, scaler, bad, step, ckpt, cfg.grad_clip, bar)
        meter.add("grad_norm", torch.tensor([gnorm]))
        seen += cfg.batch_size
        done = step + 1
        row = {}
        if held is not None and (done % cfg.eval_interval == 0 or done == cfg.steps):
            last_eval = evaluate(model, held, schedule, cfg, dev, local_bs)
            row.update(last_eval)
        if done % cfg.log_interval == 0 or done == cfg.steps:
            now = time.time()
            row.update(
                meter.means(),
                step=done,
                lr=lr_at(cfg, step),
                samples_per_s=seen / max(now - tick, 1e-9),
                elapsed_s=now - t0,
                loss_scale=scaler.get_scale() if scaler.is_enabled() else 1.0,
            )
            bar.set_postfix({"loss": f"{row.get('loss', float('nan')):.3f}", "acc": f"{row.get('acc@1', 0):.2f}"})
            tick, seen = now, 0
        if row:
            log.write({"step": done, **row})
        if done % cfg.save_interval == 0 or done == cfg.steps:
            state = checkpoint_state(done, meta, model, opt, scaler, meter=meter, elapsed_s=time.time() - t0)
            if dist.is_main():
                save_checkpoint(ckpt, state)
            dist.barrier()
        bar.update(1)
    bar.close()
    if held is not None and not last_eval:  # resumed after the end: report the final accuracy anyway
        last_eval = evaluate(model, held, schedule, cfg, dev, local_bs)
    if dist.is_main():
        from adm.nets.checkpoints import save_model

        save_model(model, model_cfg, out_dir / "model.pt", diffusion=diffusion_cfg)
        write_json(out_dir / "metrics.json", {"step": cfg.steps, **last_eval})
        log.publish(out_dir / LOG)
    dist.barrier()
    now = time.time()
    return {
        "steps": cfg.steps,
        "resumed_from": start,
        "train_time_s": now - t0,
        "steps_per_s": (cfg.steps - start) / max(now - t0 - elapsed0, 1e-9),
        **last_eval,
    }


def load_heldout(path, model_cfg: ClassifierConfig, seed: int):
    """A fixed (seeded) subset of at most HELDOUT_MAX held-out images."""
    images, labels = load_npz(path, model_cfg.image_size)
    if labels.max() >= model_cfg.num_classes or labels.min() < 0:
        raise DataError(
            f"{path}: labels span {labels.min()}..{labels.max()} but the classifier has {model_cfg.num_classes} classes"
        )
    if len(images) > HELDOUT_MAX:
        keep = np.sort(np.random.default_rng(_seed(seed, 4)).permutation(len(images))[:HELDOUT_MAX])
        images, labels = images[keep], labels[keep]
    return images, labels


@torch.no_grad()
def evaluate(model, held, schedule, cfg: TrainConfig, dev, batch: int) -> dict:
    """Held-out loss / acc@1 / acc@5 on x_t (fixed t, noise) and on clean x_0 at t = 0."""
    images, labels = held
    gen = torch.Generator().manual_seed(_seed(cfg.seed, 5))  # the same noisy set at every evaluation
    t_all = torch.randint(0, len(schedule), (len(images),), generator=gen)
    noise_all = torch.randn((len(images), 3, *images.shape[1:3]), generator=gen)
    model.eval()
    sums = {name: 0.0 for name in CLASSIFIER_EVAL}
    for i in range(0, len(images), batch):
        x0 = to_float(images[i : i + batch]).to(dev)
        y = torch.from_numpy(labels[i : i + batch]).to(dev)
        t = t_all[i : i + batch].to(dev)
        for prefix, x, tt in (
            ("heldout_", q_sample(schedule, x0, t, noise_all[i : i + batch].to(dev)), t),
            ("heldout_clean_", x0, torch.zeros_like(t)),
        ):
            with autocast(cfg.precision, dev.type):
                logits = model(x, tt).float()
            sums[prefix + "loss"] += float(F.cross_entropy(logits, y, reduction="sum"))
            sums[prefix + "acc@1"] += float(topk_correct(logits, y, 1).sum())
            sums[prefix + "acc@5"] += float(topk_correct(logits, y, 5).sum())
    model.train()
    return {k: v / len(images) for k, v in sums.items()}
