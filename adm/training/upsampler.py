"""Train a super-resolution model (ADM-U) with the diffusion training loop plus a conditioning hook.

The target is the training image x_0 at the model's size; the condition is the same image made
small the way OpenAI's super_res_train.py makes it: area interpolation of the (flipped, [-1, 1])
training batch to the low-res size, i.e. the mean over each f x f block for a whole factor f.
The network resizes it back bilinearly and concatenates it to x_t (adm.nets.unet.upsample_low_res).
Everything else (loss, optimiser, EMA, seeds, resume, DDP) is adm.training.diffusion's, so a killed
run resumes exactly as a base-model run does.

`downsample_npz` applies the same area rule to uint8 sample files: the demo DAG feeds the base
model's 8x8 samples, made 4x4 this way, to the 4x4 -> 8x8 demo upsampler.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adm.data.datasets import DataError, save_npz
from adm.fileio import atomic_write, write_json


class LowResCondition:
    """The conditioning hook of adm.training.diffusion: x_0 (B, C, H, W) -> {"low_res": (B, C, h, h)}."""

    command = "train-upsampler"  # the run's identity (resume refuses a base-model checkpoint)

    def __init__(self, low_res_size: int):
        self.low_res_size = int(low_res_size)
        self.settings = {"low_res_size": self.low_res_size}

    def __call__(self, x0):
        return {"low_res": area_downsample(x0, self.low_res_size)}


def _factor(size: int, low_res_size: int) -> int:
    if low_res_size < 1 or size % low_res_size:
        raise DataError(
            f"cannot area-downsample {size}x{size} to {low_res_size}x{low_res_size}: "
            f"the low-res size must divide the image size"
        )
    return size // low_res_size


def area_downsample(x0, low_res_size: int):
    """Mean over each f x f block of a (B, C, H, W) float tensor: torch's `area` interpolation
    (what OpenAI's super-res training uses) for a whole factor f = H / low_res_size."""
    b, c, h, w = x0.shape
    f = _factor(h, low_res_size)
    return x0.reshape(b, c, h // f, f, w // f, f).mean(dim=(3, 5))


def area_downsample_uint8(images: np.ndarray, low_res_size: int) -> np.ndarray:
    """The same block mean on uint8 NHWC images, rounded to the nearest uint8 (a saved low-res
    image is uint8, as a base sample is)."""
    n, h, w, c = images.shape
    f = _factor(h, low_res_size)
    mean = images.astype(np.float64).reshape(n, h // f, f, w // f, f, c).mean(axis=(2, 4))
    return np.clip(np.rint(mean), 0, 255).astype(np.uint8)


def downsample_npz(src, dst, low_res_size: int) -> dict:
    """Area-downsample a samples npz (arr_0 uint8 [N,H,W,3], arr_1 labels) to low_res_size; the
    labels pass through unchanged. One DataError line for a file that is not such an npz."""
    src = Path(src)
    try:
        with np.load(src) as f:
            images, labels = f["arr_0"], (f["arr_1"] if "arr_1" in f else None)
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise DataError(f"{src}: not a readable samples npz ({type(e).__name__}: {e})") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != images.shape[2]:
        raise DataError(f"{src}: arr_0 must be uint8 [N,H,H,3], got {images.dtype} {list(images.shape)}")
    small = area_downsample_uint8(images, low_res_size)
    if labels is None:  # an unconditional base model's file: no labels to pass on
        atomic_write(dst, lambda f: np.savez(f, arr_0=small))
    else:
        save_npz(dst, small, labels)
    info = {
        "command": "downsample",
        "source": str(src),
        "n": len(images),
        "from_size": int(images.shape[1]),
        "low_res_size": int(low_res_size),
        "method": "area (block mean), rounded to uint8",
    }
    write_json(Path(dst).with_suffix(".json"), info)
    return info


def train_upsampler(
    data,
    out_dir,
    model_cfg,
    diffusion_cfg,
    cfg,
    low_res_size: int,
    device: str = "cpu",
    progress: bool = True,
    run_info: dict | None = None,
    restart_on_change: bool = False,
) -> dict:
    """Train until cfg.steps (resuming out_dir/checkpoint.pt); writes ema.pt (+ ema_<rate>.pt),
    model.pt (the raw weights), log.csv; each weights JSON also names the low-res size."""
    from adm.training import distributed as dist
    from adm.training.diffusion import train_diffusion

    if not model_cfg.super_res:
        raise ValueError("train-upsampler needs a super-resolution preset (super_res true); use train-diffusion")
    _factor(model_cfg.image_size, low_res_size)
    info = {**(run_info or {}), "low_res_size": int(low_res_size)}
    out = train_diffusion(
        data,
        out_dir,
        model_cfg,
        diffusion_cfg,
        cfg,
        device,
        progress,
        info,
        restart_on_change=restart_on_change,
        condition=LowResCondition(low_res_size),
    )
    if dist.is_main():
        export_raw_and_sizes(Path(out_dir), model_cfg, diffusion_cfg, int(low_res_size))
    dist.barrier()
    return {**out, "model": str(Path(out_dir) / "model.pt"), "low_res_size": int(low_res_size)}


def export_raw_and_sizes(out_dir: Path, model_cfg, diffusion_cfg, low_res_size: int) -> None:
    """model.pt from the final resume checkpoint; low_res_size added to every weights JSON (the
    upsample program reads it, so a trained upsampler needs no --low-res-size)."""
    import json

    import torch

    from adm.nets.build import build_model
    from adm.nets.checkpoints import save_model, sidecar_path
    from adm.training.resume import load_checkpoint

    state = load_checkpoint(out_dir / "checkpoint.pt")
    with torch.device("meta"):
        net = build_model(model_cfg)
    net.load_state_dict(state["model"], assign=True)
    save_model(net, model_cfg, out_dir / "model.pt", diffusion=diffusion_cfg)
    for pt in sorted(out_dir.glob("ema*.pt")) + [out_dir / "model.pt"]:
        side = sidecar_path(pt)
        meta = json.loads(side.read_text())
        write_json(side, {**meta, "low_res_size": low_res_size})
