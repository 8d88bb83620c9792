"""`adm <command>` (alias `python -m adm <command>`): argument parsing only; every command calls
one library function.

User errors (bad paths, presets, sizes, shard sets) print one line `error: ...` and exit 2
without a traceback; a diverged training run exits 3 after keeping its last good checkpoint.
Every parser carries an examples epilog; docs/cli.md is generated from the --help texts
(`python docs/gen_cli.py`).
"""

from __future__ import annotations

import argparse
import os
import sys

from adm.cli_help import HELP_TEXTS


def _set_threads(n: int) -> None:
    import torch

    if n < 1:
        raise ValueError(f"--threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already fixed once in this process
        pass


def _batch_size(text: str) -> int | str:
    """--batch-size: a positive integer or "auto"."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer or auto, got {text!r}") from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm bar")


def _optim_flags(p: argparse.ArgumentParser) -> None:
    """Flags that override the training preset (None = keep the preset's value). Both training
    commands accept all of them (one TrainConfig); the classifier ignores the EMA rates and the
    timestep sampler (t is always uniform), the diffusion loop ignores --eval-interval."""
    p.add_argument("--train-preset", help="named TrainConfig (default: the model preset's name if one exists)")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int, help="global batch (all ranks)")
    p.add_argument("--microbatch", type=int, help="images per forward/backward; 0 = whole batch")
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--lr-anneal-steps", type=int, help="linear decay to 0 at this step; 0 = off")
    p.add_argument("--grad-clip", type=float, help="max gradient L2 norm; 0 = off")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--save-interval", type=int, help="steps between resumable checkpoints")
    p.add_argument("--log-interval", type=int, help="steps per log.csv row")
    p.add_argument("--random-flip", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--seed", type=int)
    p.add_argument("--eval-interval", type=int, help="classifier: steps between held-out evaluations")
    p.add_argument("--ema-rate", type=float, nargs="+", dest="ema_rates", help="diffusion: one or more EMA decays")
    p.add_argument("--schedule-sampler", choices=("uniform", "loss-second-moment"), help="diffusion: timestep sampler")
    p.add_argument(
        "--keep-ema-step",
        type=int,
        nargs="+",
        dest="keep_ema_steps",
        metavar="N",
        help="diffusion: also keep the first EMA at step N as ema_step<N>.pt (an autoguidance guide)",
    )
    p.add_argument(
        "--restart-on-change",
        action="store_true",
        help="discard a checkpoint in --out-dir trained with other settings (default: refuse it)",
    )


# Help texts (descriptions and examples) live in adm/cli_help.py; line breaks are kept.
_RAW = argparse.RawDescriptionHelpFormatter


def _sub(sub, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand parser with its description and examples (line breaks kept)."""
    description, epilog = HELP_TEXTS[name]
    return sub.add_parser(name, help=help, description=description, epilog=epilog, formatter_class=_RAW)


def build_parser() -> argparse.ArgumentParser:
    description, epilog = HELP_TEXTS["adm"]
    parser = argparse.ArgumentParser(prog="adm", description=description, epilog=epilog, formatter_class=_RAW)
    sub = parser.add_subparsers(dest="command", required=True)

    p = _sub(sub, "prepare-data", help="digits demo or an ImageNet-style folder → npz")
    p.add_argument("--dataset", choices=("digits", "imagenet"), required=True)
    p.add_argument("--data-dir", help="image folder (imagenet): one folder per class; label = sorted folder names")
    p.add_argument("--image-size", type=int, help="crop size (imagenet)")
    p.add_argument("--out-train", required=True)
    p.add_argument("--out-heldout", help="held-out npz (digits: default none; imagenet: optional split)")
    p.add_argument("--heldout-fraction", type=float, default=None, help="digits default 0.2")
    p.add_argument("--seed", type=int, default=0)
    _common(p)

    p = _sub(sub, "train-diffusion", help="train the diffusion UNet on L_hybrid")
    p.add_argument("--data", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--model-preset", required=True)
    p.add_argument("--diffusion-preset", help="default: the model preset's name")
    p.add_argument(
        "--label-dropout",
        type=float,
        metavar="P",
        help="train a null class for classifier-free guidance: each label is dropped with probability P "
        "(0 <= P < 1; 0.1 in Ho & Salimans; default: the training preset's, 0 = off)",
    )
    p.add_argument(
        "--init-from",
        metavar="CKPT",
        help="fine-tune: start from this UNet checkpoint's weights instead of a fresh network (same "
        "architecture; with --label-dropout the null-class row is added), e.g. the classifier-free "
        "guidance model from the main model",
    )
    _optim_flags(p)
    _common(p)

    p = _sub(sub, "train-upsampler", help="train a super-resolution UNet (low-res: area-downsampled training images)")
    p.add_argument("--data", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--model-preset", required=True, help="a super-resolution preset (e.g. demo-upsample)")
    p.add_argument("--diffusion-preset", help="default: the model preset's name")
    p.add_argument("--low-res-size", type=int, help="h = w of the condition (default: the preset's)")
    _optim_flags(p)
    _common(p)

    p = _sub(sub, "train-classifier", help="train the noisy-image classifier")
    p.add_argument("--data", required=True)
    p.add_argument("--heldout", help="held-out npz for accuracy (recommended)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--model-preset", required=True)
    p.add_argument("--diffusion-preset", help="default: the model preset's name")
    _optim_flags(p)
    _common(p)

    p = _sub(sub, "sample", help="guided DDPM/DDIM samples for one shard")
    p.add_argument("--model", required=True)
    p.add_argument("--classifier")
    p.add_argument(
        "--scale",
        type=float,
        default=0.0,
        help="classifier guidance scale s, or with --guidance cfg the CFG weight w (finite, >= 0), "
        "or with --guidance autoguidance its w (>= 1; 1 = the main model alone)",
    )
    p.add_argument(
        "--guidance",
        choices=("classifier", "cfg", "autoguidance"),
        default="classifier",
        help="classifier (default; needs --classifier when --scale > 0), cfg: classifier-free, "
        "eps~ = (1 + w) eps(x, y) - w eps(x, null), for a model trained with --label-dropout, or "
        "autoguidance: eps~ = eps_guide + w (eps_main - eps_guide), guided by --guide-model",
    )
    p.add_argument("--guide-model", help="autoguidance: a weaker model of the same task (earlier/smaller)")
    p.add_argument(
        "--guidance-interval",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        help="guide only where LO < sigma_t <= HI (sigma of the original timestep; HI may be inf); default: every step",
    )
    p.add_argument("--num-samples", type=int, required=True)
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--num-shards", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--respacing", default="250", help='"250", "25" (DDPM) or "ddim25" (DDIM); a solver\'s number of steps'
    )
    p.add_argument(
        "--sampler",
        choices=("ddpm", "ddim", "dpmpp-2m", "dpmpp-3m", "dpmpp-2m-sde"),
        help="default: ddim for --respacing ddimN, else ddpm; dpmpp-2m / dpmpp-3m: DPM-Solver++ "
        "(deterministic ODE solver, one network evaluation per step); dpmpp-2m-sde: its stochastic "
        "SDE variant (fresh noise each step, one evaluation per step); see adm/sampling/solvers.py",
    )
    p.add_argument(
        "--step-schedule",
        choices=("uniform", "logsnr", "karras"),
        default="uniform",
        help="solver nodes: uniform in t (default), uniform in logSNR, or Karras rho=7 in sigma",
    )
    p.add_argument(
        "--batch-size", type=_batch_size, default=64, help='images per forward pass, or "auto" (probe the device)'
    )
    p.add_argument("--labels", choices=("uniform", "balanced"), default="uniform")
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "fp16", "bf16"),
        default="fp32",
        help="fp32 exact (default); fp16 the paper's (CUDA); bf16 autocast; auto: fp16 on cuda, else fp32",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile both networks (costs minutes up front)")
    p.add_argument(
        "--fast",
        nargs="?",
        const="fast",
        default="exact",
        metavar="MODE",
        help="named fast path: exact (default; equal to the reference), fast (bare --fast: fused "
        "attention, rounding-level changes), compiled (fast + torch.compile); see docs/sampling.md",
    )
    p.add_argument("--channels-last", action="store_true", help="NHWC layout for both networks (rounding only)")
    p.add_argument("--fused-attention", action="store_true", help="SDPA's fused attention kernels (rounding only)")
    p.add_argument("--out", required=True)
    p.add_argument("--model-preset")
    p.add_argument("--classifier-preset")
    p.add_argument("--guide-model-preset")
    p.add_argument("--diffusion-preset")
    p.add_argument("--no-clip-denoised", dest="clip_denoised", action="store_false")
    _common(p)

    p = _sub(sub, "upsample", help="super-resolution samples of a low-res npz, for one shard")
    p.add_argument("--model", required=True, help="super-resolution checkpoint")
    p.add_argument("--low-res", required=True, help="npz: arr_0 uint8 [N,h,w,3], arr_1 labels (as merge writes)")
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--num-shards", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--respacing", default="250", help='"250", "25" (DDPM) or "ddim25" (DDIM)')
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--low-res-size",
        type=int,
        help="h = w of the input (default: the checkpoint JSON's, else the preset's, else the model's size / 4)",
    )
    p.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="fp32")
    p.add_argument("--out", required=True)
    p.add_argument("--model-preset")
    p.add_argument("--diffusion-preset")
    p.add_argument("--no-clip-denoised", dest="clip_denoised", action="store_false")
    _common(p)

    p = _sub(sub, "merge", help="concatenate sample shards by global index")
    p.add_argument("--out", required=True)
    p.add_argument("--num-samples", type=int, required=True)
    p.add_argument("--num-classes", type=int, help="labels must lie in 0..C-1 (default: from the shards' JSON)")
    p.add_argument("shards", nargs="+")
    _common(p)

    p = _sub(sub, "features-dinov2", help="DINOv2 ViT-L/14 features of an npz (for FD_DINOv2)")
    p.add_argument("--images", required=True, help="npz: arr_0 uint8 [N,H,W,3]")
    p.add_argument("--weights", required=True, help="dinov2_vitl14_pretrain.pth (official key layout)")
    p.add_argument("--out", required=True, help="npz to write: features [N,1024] + meta")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--cache-dir", help="cache the features by the images' and weights' sha256 (default: off)")
    p.add_argument("--weights-lock", help='JSON {"sha256": ...} the weights must match (written on download)')
    _common(p)
    return parser


def cmd_prepare_data(a) -> None:
    from pathlib import Path

    from adm.data.datasets import prepare_digits
    from adm.data.ondisk import prepare_folder
    from adm.fileio import write_json

    if a.dataset == "digits":
        a.heldout_fraction = 0.2 if a.heldout_fraction is None else a.heldout_fraction
        info = prepare_digits(a.out_train, a.out_heldout, a.heldout_fraction, a.seed)
    else:
        if not a.data_dir or not a.image_size:
            raise ValueError("--dataset imagenet needs --data-dir and --image-size")
        info = prepare_folder(
            a.data_dir,
            a.image_size,
            a.out_train,
            a.out_heldout,
            a.heldout_fraction or 0.0,
            a.seed,
            workers=a.threads,
            progress=a.progress,
        )
    write_json(Path(a.out_train).with_suffix(".json"), {"command": "prepare-data", **vars(a), **info})
    print(
        f"wrote {a.out_train} ({info['n_train']} images)"
        + (f" and {a.out_heldout} ({info['n_heldout']})" if a.out_heldout else "")
    )


def _train_setup(a):
    from adm.nets.presets import get_preset
    from adm.training.presets import TRAIN_PRESETS, resolve_train_config

    model_cfg = get_preset(a.model_preset)
    diffusion_cfg = get_preset(a.diffusion_preset or a.model_preset, kind="diffusion")
    preset = a.train_preset or (a.model_preset if a.model_preset in TRAIN_PRESETS else None)
    keys = [
        "steps",
        "batch_size",
        "microbatch",
        "lr",
        "weight_decay",
        "lr_anneal_steps",
        "grad_clip",
        "precision",
        "save_interval",
        "log_interval",
        "random_flip",
        "seed",
        "eval_interval",
        "ema_rates",
        "schedule_sampler",
        "keep_ema_steps",
    ]
    keys.append("label_dropout")  # train-diffusion only: absent (None) for the classifier
    cfg = resolve_train_config(preset, **{k: getattr(a, k, None) for k in keys})
    info = {
        "threads": a.threads,
        "model_preset": a.model_preset,
        "train_preset": preset,
        "diffusion_preset": a.diffusion_preset or a.model_preset,
    }
    return model_cfg, diffusion_cfg, cfg, info


def cmd_train_diffusion(a) -> None:
    from adm.nets.config import UNetConfig
    from adm.training import distributed as dist
    from adm.training.diffusion import train_diffusion

    model_cfg, diffusion_cfg, cfg, info = _train_setup(a)
    if not isinstance(model_cfg, UNetConfig):
        raise ValueError(f"--model-preset {a.model_preset} is a classifier; use train-classifier")
    out = train_diffusion(
        a.data,
        a.out_dir,
        model_cfg,
        diffusion_cfg,
        cfg,
        a.device,
        a.progress,
        info,
        restart_on_change=a.restart_on_change,
        init_from=a.init_from,
    )
    if dist.is_main():
        print(f"trained {out['steps']} steps; EMA weights: {out['ema']}")
    dist.cleanup()


def cmd_train_upsampler(a) -> None:
    from adm.nets.presets import preset_low_res_size
    from adm.training import distributed as dist
    from adm.training.upsampler import train_upsampler

    model_cfg, diffusion_cfg, cfg, info = _train_setup(a)
    low = a.low_res_size or preset_low_res_size(a.model_preset)
    if not getattr(model_cfg, "super_res", False) or low is None:
        raise ValueError(f"--model-preset {a.model_preset} is not a super-resolution preset; use train-diffusion")
    out = train_upsampler(
        a.data,
        a.out_dir,
        model_cfg,
        diffusion_cfg,
        cfg,
        low,
        a.device,
        a.progress,
        info,
        restart_on_change=a.restart_on_change,
    )
    if dist.is_main():
        print(
            f"trained {out['steps']} steps ({low}x{low} -> {model_cfg.image_size}x{model_cfg.image_size}); "
            f"EMA weights: {out['ema']}"
        )
    dist.cleanup()


def cmd_train_classifier(a) -> None:
    from adm.nets.config import ClassifierConfig
    from adm.training import distributed as dist
    from adm.training.classifier import train_classifier

    model_cfg, diffusion_cfg, cfg, info = _train_setup(a)
    if not isinstance(model_cfg, ClassifierConfig):
        raise ValueError(f"--model-preset {a.model_preset} is not a classifier preset")
    if cfg.label_dropout > 0:  # a -cfg training preset: dropping labels is for the diffusion model
        raise ValueError(
            f"training preset {info['train_preset']} drops labels (label_dropout "
            f"{cfg.label_dropout}); the classifier trains on every label"
        )
    out = train_classifier(
        a.data,
        a.heldout,
        a.out_dir,
        model_cfg,
        diffusion_cfg,
        cfg,
        a.device,
        a.progress,
        info,
        restart_on_change=a.restart_on_change,
    )
    acc = out.get("heldout_clean_acc@1")
    if dist.is_main():
        print(f"trained {out['steps']} steps" + (f"; held-out clean acc@1 {acc:.3f}" if acc is not None else ""))
    dist.cleanup()


def cmd_sample(a) -> None:
    from adm.programs.sample import SampleConfig, sample_shard

    cfg = SampleConfig(
        model=a.model,
        out=a.out,
        num_samples=a.num_samples,
        classifier=a.classifier,
        scale=a.scale,
        shard=a.shard,
        num_shards=a.num_shards,
        seed=a.seed,
        respacing=a.respacing,
        batch_size=a.batch_size,
        labels=a.labels,
        model_preset=a.model_preset,
        classifier_preset=a.classifier_preset,
        diffusion_preset=a.diffusion_preset,
        clip_denoised=a.clip_denoised,
        precision=a.precision,
        compile=a.compile,
        fast=a.fast,
        channels_last=a.channels_last,
        fused_attention=a.fused_attention,
        guidance_interval=a.guidance_interval,
        guidance=a.guidance,
        guide_model=a.guide_model,
        guide_model_preset=a.guide_model_preset,
        sampler=a.sampler,
        step_schedule=a.step_schedule,
    )
    out = sample_shard(cfg, a.device, a.progress, {"threads": a.threads})
    print(f"wrote {a.out}: {out['n']} samples at {out['images_per_s']:.1f} img/s")


def cmd_upsample(a) -> None:
    from adm.programs.upsample import UpsampleConfig, upsample_shard

    cfg = UpsampleConfig(
        model=a.model,
        low_res=a.low_res,
        out=a.out,
        shard=a.shard,
        num_shards=a.num_shards,
        seed=a.seed,
        respacing=a.respacing,
        batch_size=a.batch_size,
        low_res_size=a.low_res_size,
        model_preset=a.model_preset,
        diffusion_preset=a.diffusion_preset,
        clip_denoised=a.clip_denoised,
        precision=a.precision,
    )
    out = upsample_shard(cfg, a.device, a.progress, {"threads": a.threads})
    print(f"wrote {a.out}: {out['n']} images at {out['image_size']}px, {out['images_per_s']:.2f} img/s")


def cmd_merge(a) -> None:
    from adm.programs.shards import merge_shards

    out = merge_shards(a.shards, a.out, a.num_samples, a.progress, num_classes=a.num_classes)
    print(f"wrote {a.out}: {out['n']} samples from {len(a.shards)} shards")


def cmd_features_dinov2(a) -> None:
    from adm.programs.dinov2_features import dinov2_features

    if a.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {a.batch_size}")
    out = dinov2_features(
        a.images, a.weights, a.out, a.batch_size, a.device, a.progress, a.cache_dir, weights_lock=a.weights_lock
    )
    how = "from the cache" if out["cache_hit"] else f"in {out['seconds']:.1f} s"
    print(f"wrote {a.out}: {out['num_images']} DINOv2 features {how}")


COMMANDS = {
    "prepare-data": cmd_prepare_data,
    "train-diffusion": cmd_train_diffusion,
    "train-classifier": cmd_train_classifier,
    "sample": cmd_sample,
    "merge": cmd_merge,
    "upsample": cmd_upsample,
    "train-upsampler": cmd_train_upsampler,
    "features-dinov2": cmd_features_dinov2,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from adm.errors import TrainingDiverged

    # merge and prepare-data are numpy-only: they skip torch's ~3 s import
    uses_torch = args.command in (
        "train-diffusion",
        "train-classifier",
        "sample",
        "upsample",
        "train-upsampler",
        "features-dinov2",
    )
    if os.environ.get("ADM_DEBUG"):  # developers: full tracebacks instead of one-line errors
        if uses_torch:
            _set_threads(args.threads)
        COMMANDS[args.command](args)
        return 0
    try:
        if uses_torch:
            _set_threads(args.threads)
        COMMANDS[args.command](args)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except KeyError as e:  # unknown preset names: the message is the first argument
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:  # DataError, CheckpointError, ShardError, missing files, ...
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0
