"""Names and paths of a run: results/<run>/<path>, its logs and benchmarks, scale names."""

from __future__ import annotations


def scale_name(scale) -> str:
    """File-name form of a guidance scale: 0, 0.5, 1, 7.5, 10."""
    return f"{float(scale):g}"


def scale_names(scales) -> list[str]:
    return [scale_name(s) for s in scales]


def respacing_spec(settings: dict) -> str:
    """Respacing spec for `adm sample` / `adm upsample`: "25" (DDPM, or a solver's 25 steps) or "ddim25"."""
    steps = settings["steps"]
    return f"ddim{steps}" if settings["sampler"] == "ddim" else str(steps)


def is_imagenet(config: dict) -> bool:
    return config["dataset"] == "imagenet"


def is_pretrained(config: dict) -> bool:
    """OpenAI's released checkpoints (only for ImageNet: there is no released demo model)."""
    return is_imagenet(config) and config["pretrained"]


def run_dir(config: dict) -> str:
    return f"results/{config['run']}"


def out(config: dict, path: str) -> str:
    """Path of a run output: results/<run>/<path>."""
    return f"{run_dir(config)}/{path}"


def logfile(config: dict, path: str) -> str:
    return out(config, f"logs/{path}")


def benchfile(config: dict, path: str) -> str:
    return out(config, f"benchmarks/{path}")


def shard_ids(count: int) -> list[int]:
    return list(range(count))
