"""Super-resolution sampling (the `upsample` program): a SuperRes UNet conditioned on a low-res npz.

The paper's 512×512 result (ADM-G + ADM-U) runs guided 128×128 samples through the 128→512
upsampler. Conditioning follows OpenAI's SuperResModel: the low-res uint8 image is scaled to
[-1, 1] (x / 127.5 - 1, adm.data.datasets.to_float) and the network itself resizes it bilinearly to its
own size and concatenates it to x_t (adm.nets.unet.upsample_low_res); its label, when the upsampler is
class-conditional, is the low-res file's arr_1.

Seeds work as in `adm sample`: output image i draws x_T and every step's noise from (seed, i)
only, and reads low-res image i only, so shards (--shard/--num-shards over the low-res file's
N images) merge with `adm merge` into what one unsharded run writes. The generators use a
stream of their own (NOISE_STREAM below), so running the upsampler with the base run's seed
does not feed it the base sampler's x_T again.

The low-res size an upsampler takes is not in its network config (the network resizes its input
itself): --low-res-size if given, else the size in the checkpoint's JSON (adm train-upsampler
writes it), else the preset's (adm.nets.presets.UPSAMPLER_LOW_RES, by --model-preset or by an equal
config), else image_size // 4 (OpenAI's 64→256 and 128→512 ratio).
"""

from __future__ import annotations

import dataclasses
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from adm.data.datasets import save_npz, to_float
from adm.fileio import atomic_write, write_json
from adm.programs.sample import _batches
from adm.programs.shards import shard_range

UPSAMPLE_FACTOR = 4  # OpenAI's upsamplers: 64 -> 256 and 128 -> 512
NOISE_STREAM = 3  # adm.sampling.rng uses streams 0 (noise), 1 (labels), 2 (balanced labels)


class UpsampleError(ValueError):
    """A low-res file or upsampler that cannot be used: one line, nothing written."""


@dataclass(frozen=True)
class UpsampleConfig:
    model: str  # super-resolution checkpoint .pt (our JSON beside it, or --model-preset)
    low_res: str  # npz: arr_0 uint8 [N,h,w,3], arr_1 int labels [N] (what `adm merge` writes)
    out: str  # shard npz to write at the model's size (atomic); resolved config in .json beside
    shard: int = 0  # k: shard k of n covers low-res images [k·N//n, (k+1)·N//n)
    num_shards: int = 1  # n
    seed: int = 0  # base seed: output i uses (seed, i) only
    respacing: str = "250"  # sampling steps: "250", "25" (DDPM) or "ddim25" (DDIM)
    batch_size: int = 16  # images per forward pass (a 512 image costs ~4 GiB of activations in fp32)
    low_res_size: int | None = None  # h = w the upsampler takes; None = its JSON's, its preset's, else image_size // 4
    model_preset: str | None = None  # config for OpenAI files that carry no JSON
    diffusion_preset: str | None = None  # T/schedule when the model's JSON has none (default: model_preset)
    clip_denoised: bool = True  # clip x̂₀ to [-1, 1] at every step (as OpenAI's super_res_sample.py)
    precision: str = "fp32"  # fp32 (exact) | fp16 (CUDA; the paper's) | bf16 | auto (fp16 on CUDA, else fp32)

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"--batch-size must be an integer >= 1, got {self.batch_size!r}")
        if not 0 <= self.shard < self.num_shards:
            raise ValueError(f"--shard must be in 0..{self.num_shards - 1}, got {self.shard}")
        if self.low_res_size is not None and self.low_res_size < 1:
            raise ValueError(f"--low-res-size must be >= 1, got {self.low_res_size}")


class LowResBound(nn.Module):
    """The super-res UNet seen as net(x_t, t, y), the contract of adm.sampling.precision.sampling_model_fn
    and the samplers: the low-res batch is bound (`.low_res = ...`) before each batch is sampled."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.low_res: torch.Tensor | None = None  # (N, 3, h, w) in [-1, 1]

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x, t, y, low_res=self.low_res)

    # what sampling_model_fn asks of a UNet, passed through
    @property
    def check_label_values(self) -> bool:
        return self.net.check_label_values

    @check_label_values.setter
    def check_label_values(self, value: bool) -> None:
        self.net.check_label_values = value

    def validate_labels(self, y: torch.Tensor | None) -> None:
        self.net.validate_labels(y)

    def convert_to_fp16(self) -> None:
        self.net.convert_to_fp16()


def expected_low_res_size(
    image_size: int, override: int | None, model_cfg=None, model_path=None, model_preset: str | None = None
) -> int:
    """h = w of the upsampler's input: the override, the checkpoint JSON's `low_res_size`, the
    preset's, else image_size / 4 (OpenAI's ratio)."""
    from adm.nets.checkpoints import read_sidecar
    from adm.nets.presets import preset_low_res_size

    if override is not None:
        return override
    meta = (read_sidecar(model_path) if model_path is not None else None) or {}
    if isinstance(meta.get("low_res_size"), int) and meta["low_res_size"] >= 1:
        return meta["low_res_size"]
    known = preset_low_res_size(model_preset, model_cfg)
    if known is not None:
        return known
    if image_size % UPSAMPLE_FACTOR:
        raise UpsampleError(
            f"a {image_size}px upsampler is not {UPSAMPLE_FACTOR}x of a whole size; give --low-res-size"
        )
    return image_size // UPSAMPLE_FACTOR


def _read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    if not path.is_file():
        raise UpsampleError(f"low-res file not found: {path}")
    try:
        with np.load(path) as f:
            if "arr_0" not in f:
                raise UpsampleError(f"{path}: no arr_0 (images); expected an npz as `adm merge` writes")
            return f["arr_0"], (f["arr_1"] if "arr_1" in f else None)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        if isinstance(e, UpsampleError):
            raise
        raise UpsampleError(f"{path}: truncated or unreadable npz ({type(e).__name__}: {e})") from None


def load_low_res(path, size: int, num_classes: int | None, model_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N,size,size,3], labels int64 [N]) of the whole file, or one UpsampleError.

    Every shard checks the whole file, so all shards of one run accept or refuse it alike."""
    path = Path(path)
    images, labels = _read_arrays(path)
    if images.dtype.kind == "f" and not np.isfinite(images).all():
        raise UpsampleError(f"{path}: arr_0 holds non-finite values (NaN/inf); expected uint8 images")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise UpsampleError(
            f"{path}: arr_0 must be uint8 [N,h,w,3] (as `adm sample` writes), got {images.dtype} {list(images.shape)}"
        )
    if len(images) == 0:
        raise UpsampleError(f"{path}: holds no images")
    if images.shape[1:3] != (size, size):
        raise UpsampleError(
            f"{path}: images are {images.shape[1]}x{images.shape[2]}, but the upsampler makes "
            f"{model_size}x{model_size} from {size}x{size} (wrong file, wrong upsampler, or --low-res-size)"
        )
    if labels is None:
        if num_classes:
            raise UpsampleError(
                f"{path}: no labels (arr_1), but the upsampler is class-conditional ({num_classes} classes)"
            )
        return images, np.zeros(len(images), np.int64)
    if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
        raise UpsampleError(
            f"{path}: arr_1 must be integer labels [{len(images)}], got {labels.dtype} {list(labels.shape)}"
        )
    if num_classes and (labels.min() < 0 or labels.max() >= num_classes):
        raise UpsampleError(
            f"{path}: labels span {labels.min()}..{labels.max()}, outside the upsampler's "
            f"{num_classes} classes 0..{num_classes - 1}"
        )
    return images, labels.astype(np.int64)


def load_upsampler(cfg: UpsampleConfig, device):
    """(model, model_cfg, diffusion_cfg) of a super-resolution checkpoint."""
    from adm.programs.sample import SampleConfig, load_networks

    base = SampleConfig(
        model=cfg.model,
        out=cfg.out,
        num_samples=1,
        model_preset=cfg.model_preset,
        diffusion_preset=cfg.diffusion_preset,
    )
    model, model_cfg, diffusion_cfg, _, _ = load_networks(base, device)
    if not model_cfg.super_res:
        raise UpsampleError(
            f"{cfg.model}: not a super-resolution model (its config has super_res false); `adm sample` runs base models"
        )
    return model, model_cfg, diffusion_cfg


def upsample_generators(seed: int, indices: range) -> list[torch.Generator]:
    """One CPU generator per output index i, seeded from (seed, i, NOISE_STREAM) only."""
    from adm.sampling.rng import per_sample_seed

    return [torch.Generator().manual_seed(per_sample_seed(int(seed), int(i), NOISE_STREAM)) for i in indices]


def upsample_shard(
    cfg: UpsampleConfig, device: str = "cpu", progress: bool = True, run_info: dict | None = None
) -> dict:
    """Upsample shard `cfg.shard` of the low-res file; writes arr_0 uint8 NHWC at the model's size,
    arr_1 the low-res labels, `indices`; returns a summary."""
    from adm.diffusion.schedule import make_schedule, respace
    from adm.sampling.precision import FastPath, resolve_sampling_precision, sampling_model_fn
    from adm.sampling.rng import randn_per_sample
    from adm.sampling.samplers import ddim_sample, ddpm_sample, to_uint8

    dev = torch.device(device)
    model, model_cfg, diffusion_cfg = load_upsampler(cfg, dev)
    size = model_cfg.image_size
    low_size = expected_low_res_size(size, cfg.low_res_size, model_cfg, cfg.model, cfg.model_preset)
    num_classes = model_cfg.num_classes
    low_images, low_labels = load_low_res(cfg.low_res, low_size, num_classes, size)
    spec = cfg.respacing.strip()
    use_ddim = spec.startswith("ddim")
    schedule = respace(make_schedule(diffusion_cfg.noise_schedule, diffusion_cfg.diffusion_steps), spec)
    fast = FastPath(precision=resolve_sampling_precision(cfg.precision, dev.type))
    bound = LowResBound(model)
    net_fn = sampling_model_fn(bound, fast, dev.type)
    model_fn = net_fn if num_classes else (lambda x, t, y: net_fn(x, t, None))
    sampler = ddim_sample if use_ddim else ddpm_sample

    indices = shard_range(len(low_images), cfg.shard, cfg.num_shards)
    images = np.zeros((len(indices), size, size, 3), np.uint8)
    labels = low_labels[indices.start : indices.stop]
    t0 = time.time()
    bar = tqdm(
        total=len(indices),
        desc=f"upsample {low_size}->{size} shard {cfg.shard}/{cfg.num_shards}",
        unit="img",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        for batch in _batches(indices, cfg.batch_size):
            sl = slice(batch.start - indices.start, batch.stop - indices.start)
            bound.low_res = to_float(low_images[batch.start : batch.stop], device=dev)  # uint8 -> [-1, 1]
            gens = upsample_generators(cfg.seed, batch)  # CPU generators: identical noise on any device
            noise = randn_per_sample(gens, (3, size, size), dev)  # x_T of each output image
            y = torch.from_numpy(labels[sl]).to(dev) if num_classes else None
            x0 = sampler(
                model_fn,
                noise,
                schedule,
                labels=y,
                generators=gens,
                clip_denoised=cfg.clip_denoised,
                learn_sigma=model_cfg.learn_sigma,
            )
            if not bool(torch.isfinite(x0).all()):  # the uint8 cast would turn NaN into black pixels
                raise UpsampleError(
                    f"upsampled images {batch.start}..{batch.stop - 1} are not finite (NaN/inf): "
                    f"the network overflowed; nothing written to {cfg.out}"
                )
            images[sl] = to_uint8(x0)
            bar.update(len(batch))
    except torch.OutOfMemoryError:
        raise UpsampleError(
            f"{dev.type} out of memory at batch size {cfg.batch_size} ({size}x{size}); try a smaller --batch-size"
        ) from None
    finally:
        bar.close()
    elapsed = time.time() - t0
    save_npz(cfg.out, images, labels, indices=np.arange(indices.start, indices.stop, dtype=np.int64))
    summary = {
        "n": len(indices),
        "first_index": indices.start,
        "sampling_s": elapsed,
        "images_per_s": len(indices) / max(elapsed, 1e-9),
        "steps": len(schedule),
        "sampler": "ddim" if use_ddim else "ddpm",
        "num_classes": num_classes,
        "image_size": size,
        "low_res_size": low_size,
    }
    write_json(
        Path(cfg.out).with_suffix(".json"),
        {
            "command": "upsample",
            "config": dataclasses.asdict(cfg),
            "device": device,
            "precision": fast.precision,
            "diffusion": dataclasses.asdict(diffusion_cfg),
            "noise_stream": NOISE_STREAM,
            **summary,
            **(run_info or {}),
        },
    )
    return summary


# ---------------------------------------------------------------- the interpolation baseline

INTERPOLATION_MODES = ("bicubic", "bilinear")


def interpolate_npz(src, dst, size: int, mode: str = "bicubic", chunk: int = 16) -> dict:
    """The baseline a learned upsampler has to beat: every image of a samples npz resized to
    size x size by plain interpolation, clipped and rounded to uint8; labels and order unchanged.

    `bicubic` is torch's (Keys' kernel with a = -0.75, align_corners=False, as OpenCV's);
    `bilinear` is the resize the upsampler itself applies to its low-res input before the UNet.
    Computed in float64 (`chunk` images at a time: 6 MB an image at 512x512), so the rounding
    does not move with the CPU's vector width. One UpsampleError line for a file that is not a
    samples npz or a size below the images'; nothing written then."""
    import torch.nn.functional as F

    if mode not in INTERPOLATION_MODES:
        raise UpsampleError(f"interpolation mode {mode!r} is not one of {', '.join(INTERPOLATION_MODES)}")
    src = Path(src)
    images, labels = _read_arrays(src)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
        raise UpsampleError(f"{src}: arr_0 must be uint8 [N,h,h,3], got {images.dtype} {list(images.shape)}")
    if size < images.shape[1]:
        raise UpsampleError(
            f"{src}: images are {images.shape[1]}x{images.shape[1]}, larger than the {size}x{size} asked"
        )
    out = np.empty((len(images), size, size, 3), np.uint8)
    for start in range(0, len(images), chunk):
        x = torch.from_numpy(images[start : start + chunk]).permute(0, 3, 1, 2).double()  # (B, 3, h, h)
        y = F.interpolate(x, size=(size, size), mode=mode, align_corners=False)  # (B, 3, size, size)
        out[start : start + chunk] = y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if labels is None:  # an unconditional base model's file: no labels to pass on
        atomic_write(dst, lambda f: np.savez(f, arr_0=out))
    else:
        save_npz(dst, out, labels)
    info = {
        "command": "interpolate",
        "source": str(src),
        "n": len(images),
        "from_size": int(images.shape[1]),
        "image_size": int(size),
        "method": f"{mode} (torch, align_corners=False, float64), rounded to uint8",
    }
    write_json(Path(dst).with_suffix(".json"), info)
    return info
