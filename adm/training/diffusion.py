"""Train the class-conditional diffusion model (ADM, Dhariwal & Nichol 2021) on L_hybrid.

One readable loop: AdamW + EMA, optional linear lr anneal, uniform or loss-aware timestep
sampling (IDDPM Sec. 3.3), microbatching, gradient clipping, bf16/fp16 autocast, DDP via torchrun.
Every random choice is a function of (seed, step, rank), and a checkpoint carries all RNG
states, so a run killed at any moment resumes to the same weights as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import copy
import time
from pathlib import Path

import torch
from tqdm import tqdm

from adm.data.datasets import to_float
from adm.diffusion.gaussian import hybrid_loss
from adm.diffusion.schedule import make_schedule
from adm.diffusion.timestep_sampler import make_timestep_sampler
from adm.fileio import clean_stale_temps, write_json
from adm.nets.build import build_model
from adm.nets.config import DiffusionConfig, UNetConfig, to_dict
from adm.sampling.precision import autocast
from adm.training import distributed as dist
from adm.training.draws import batch_indices, label_dropout_mask, step_draws, with_null_class
from adm.training.init import load_init_weights
from adm.training.log import DIFFUSION_COLUMNS, LOG, RESUME_LOG, CSVLog
from adm.training.presets import TrainConfig
from adm.training.resume import array_digest, resume, run_settings
from adm.training.state import (
    Meter,
    checkpoint_state,
    ema_state_dict,
    ema_update,
    load_training_data,
    lr_at,
    optimizer_step,
    save_checkpoint,
)


def train_diffusion(
    data,  # training npz: arr_0 uint8 [N,H,W,3], arr_1 int64 labels
    out_dir,  # run folder: checkpoint.pt (+ its log), log.csv, ema*.pt, train_config.json
    model_cfg: UNetConfig,  # network (a preset from adm.nets.presets)
    diffusion_cfg: DiffusionConfig,  # T and noise schedule of the forward process
    cfg: TrainConfig,  # optimisation settings (steps, batch, lr, EMA, precision, ...)
    device: str = "cpu",  # "cpu" | "cuda" (one GPU per torchrun process)
    progress: bool = True,  # tqdm bar with ETA on stderr (rank 0)
    run_info: dict | None = None,  # extra fields recorded in train_config.json (threads, preset names)
    restart_on_change: bool = False,  # a checkpoint of other settings is discarded (else: refused)
    condition=None,  # super-resolution: x_0 batch -> extra network kwargs (low_res);
    # None = the base model (adm.training.upsampler.LowResCondition)
    init_from=None,  # a UNet checkpoint to start from (fine-tuning; adm.training.init); None = fresh
) -> dict:
    """Train until `cfg.steps`, resuming from `out_dir/checkpoint.pt` if present; returns a summary."""
    dev = dist.init(device)
    rank, world = dist.rank(), dist.world_size()
    out_dir = Path(out_dir)
    images, labels, local_bs, micro = load_training_data(data, model_cfg.image_size, model_cfg.num_classes, cfg)
    model_cfg = with_null_class(model_cfg, cfg.label_dropout)
    if dist.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(out_dir)  # left by a run killed while saving
    schedule = make_schedule(diffusion_cfg.noise_schedule, diffusion_cfg.diffusion_steps)
    K = len(schedule)

    torch.manual_seed(cfg.seed)  # the initial weights
    model = build_model(model_cfg).to(dev)
    init_sha256 = load_init_weights(model, model_cfg, init_from) if init_from is not None else None
    net = (
        torch.nn.parallel.DistributedDataParallel(model, [dev.index] if dev.type == "cuda" else None)
        if world > 1
        else model
    )
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(dev.type, enabled=cfg.precision == "fp16")
    sampler = make_timestep_sampler(cfg.schedule_sampler, K)
    ema = {r: {n: p.detach().clone() for n, p in model.named_parameters()} for r in cfg.ema_rates}
    ckpt = out_dir / "checkpoint.pt"
    data_id = {"train_sha256": array_digest(images, labels)}
    command = condition.command if condition is not None else "train-diffusion"
    if condition is not None:  # e.g. the low-res size: another size is another run
        data_id.update(condition.settings)
    if init_sha256 is not None:  # another start file is another run
        data_id["init_sha256"] = init_sha256
    meta = run_settings(command, model_cfg, diffusion_cfg, cfg, data_id, unused=("eval_interval",))
    meter = Meter()
    start, elapsed0 = resume(ckpt, meta, cfg.steps, model, opt, scaler, sampler, ema, meter, restart_on_change)
    log = CSVLog(out_dir / RESUME_LOG, DIFFUSION_COLUMNS, resume_step=start if start else None, main=dist.is_main())
    if dist.is_main():  # only now: a refused resume must not leave a config claiming new settings
        write_json(
            out_dir / "train_config.json",
            {
                "command": command,
                "data": str(data),
                "device": device,
                "world_size": world,
                "model": to_dict(model_cfg),
                "diffusion": to_dict(diffusion_cfg),
                "train": to_dict(cfg),
                "data_sha256": meta["data"]["train_sha256"],
                "resumed_from": start,
                **(run_info or {}),
            },
        )

    cond = {}  # the current microbatch's extra network inputs (low_res of the same images)

    def model_fn(x_t, t, y):  # the network under autocast; the loss math stays float32
        with autocast(cfg.precision, dev.type):
            return net(x_t, t, y, **cond).float()

    t0, tick, seen = time.time() - elapsed0, time.time(), 0  # elapsed_s counts every resumed segment
    bar = tqdm(
        total=cfg.steps,
        initial=start,
        desc="train-diffusion",
        unit="step",
        disable=not (progress and dist.is_main()),
        dynamic_ncols=True,
    )
    for step in range(start, cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        idx, flips = batch_indices(cfg.seed, step, cfg.batch_size, len(images), rank, world)
        x0 = to_float(images[idx], flips if cfg.random_flip else None, dev)  # (B, 3, H, W) in [-1, 1]
        y = torch.from_numpy(labels[idx]).to(dev) if model_cfg.num_classes else None
        if cfg.label_dropout > 0:  # classifier-free guidance: these images train eps(x_t, null)
            drop = label_dropout_mask(cfg.seed, step, cfg.batch_size, cfg.label_dropout, rank, world)
            y = torch.where(torch.from_numpy(drop).to(dev), model_cfg.num_classes, y)
        # step indices k, importance weights 1/(K p_k), eps ~ N(0, I): drawn on CPU for exactness
        k_all, w_all, eps_all = step_draws(cfg.seed, step, cfg.batch_size, sampler, x0.shape[1:])
        opt.zero_grad(set_to_none=True)
        bad, step_losses = torch.zeros((), device=dev), []
        for i in range(0, local_bs, micro):
            xb, yb = x0[i : i + micro], (y[i : i + micro] if y is not None else None)
            k, w, noise = (a[i : i + micro].to(dev) for a in (k_all, w_all, eps_all))
            cond = condition(xb) if condition is not None else {}
            sync = contextlib.nullcontext() if world == 1 or i + micro >= local_bs else net.no_sync()
            with sync:
                losses = hybrid_loss(model_fn, schedule, xb, k, yb, noise, learn_sigma=diffusion_cfg.learn_sigma)
                loss = (losses["loss"] * w).mean() * (len(xb) / local_bs)
                bad += (~torch.isfinite(loss)).float()
                scaler.scale(loss).backward()
            step_losses.append(losses["loss"].detach())
            for name in ("loss", "mse", "vb"):
                meter.add_quartiles(name, losses[name], k, K)
        if cfg.schedule_sampler != "uniform":  # once per step, in batch order: the same on every rank
            sampler.update(dist.all_gather_cat(k_all.to(dev)), dist.all_gather_cat(torch.cat(step_losses)))
        gnorm = optimizer_step(model, opt, scaler, bad, step, ckpt, cfg.grad_clip, bar)
        for r in cfg.ema_rates:
            ema_update(ema[r], model, r)
        meter.add("grad_norm", torch.tensor([gnorm]))
        seen += cfg.batch_size
        done = step + 1
        if done % cfg.log_interval == 0 or done == cfg.steps:
            row = meter.means()
            now = time.time()
            log.write(
                {
                    "step": done,
                    "lr": lr_at(cfg, step),
                    **row,
                    "loss_scale": scaler.get_scale() if scaler.is_enabled() else 1.0,
                    "samples_per_s": seen / max(now - tick, 1e-9),
                    "elapsed_s": now - t0,
                }
            )
            bar.set_postfix(loss=f"{row.get('loss', float('nan')):.4f}")
            tick, seen = now, 0
        if done in cfg.keep_ema_steps and dist.is_main():  # before the checkpoint of this step: a resume
            # past it finds the file already written
            export_ema(model, model_cfg, diffusion_cfg, ema, cfg.ema_rates[:1], out_dir, names=[f"ema_step{done}.pt"])
        if done % cfg.save_interval == 0 or done == cfg.steps:
            state = checkpoint_state(done, meta, model, opt, scaler, sampler, ema, meter, time.time() - t0)
            if dist.is_main():
                save_checkpoint(ckpt, state)
            dist.barrier()
        bar.update(1)
    bar.close()
    if dist.is_main():
        export_ema(model, model_cfg, diffusion_cfg, ema, cfg.ema_rates, out_dir)
        log.publish(out_dir / LOG)
    dist.barrier()
    now = time.time()
    return {
        "steps": cfg.steps,
        "resumed_from": start,
        "train_time_s": now - t0,
        "steps_per_s": (cfg.steps - start) / max(now - t0 - elapsed0, 1e-9),
        "ema": str(out_dir / "ema.pt"),
    }


def export_ema(model, model_cfg, diffusion_cfg, ema, rates, out_dir: Path, names=None) -> None:
    """EMA weights in OpenAI's state-dict format: ema_<rate>.pt per rate, ema.pt = the first rate
    (or, with ``names``, those files of the first rate)."""
    from adm.nets.checkpoints import save_model

    shadow = copy.deepcopy(model).cpu()
    for i, r in enumerate(rates):
        shadow.load_state_dict(ema_state_dict(model, ema[r]))
        files = names if names is not None else [f"ema_{r}.pt"] + (["ema.pt"] if i == 0 else [])
        for name in files:
            save_model(shadow, model_cfg, out_dir / name, diffusion=diffusion_cfg)
