"""The upsampling stage's settings, paths and argument helpers (its rules: workflow/rules/upsample.smk).

The demo arrangement (digits): the base samples are area-downsampled to the upsampler's low-res size
and upsampled back; ImageNet: the base samples go straight into the upsampler."""

from __future__ import annotations

import os

from adm.nets.presets import UPSAMPLER_LOW_RES, get_preset
from workflow.lib.commands import flag_values
from workflow.lib.paths import is_imagenet, out, scale_names, shard_ids

BASELINE = "bicubic"  # adm.programs.upsample.interpolate_npz: the table's interpolation row


def enabled(config: dict) -> bool:
    return config["upsample"]["enabled"]


def low_size(config: dict) -> int:
    return UPSAMPLER_LOW_RES[config["upsample"]["model"]["preset"]]


def high_size(config: dict) -> int:
    return get_preset(config["upsample"]["model"]["preset"]).image_size


def downsamples(config: dict) -> bool:
    """The demo arrangement: base samples downsampled to the upsampler's input size first."""
    return low_size(config) != config["image_size"]


def scales(config: dict) -> list[str]:
    return scale_names(config["upsample"]["scales"]) if enabled(config) else []


def shards(config: dict) -> list[int]:
    return shard_ids(config["upsample"]["num_shards"])


def local_upsampler(config: dict) -> str | None:
    """upsample.checkpoint when it is a local file path (contains a separator), else None."""
    value = config["upsample"]["checkpoint"]
    return value if os.sep in value else None


def upsampler_checkpoint(config: dict) -> str:
    """Trained here (upsample/model/ema.pt), downloaded (pretrained/upsampler.pt) or a local path."""
    if not config["upsample"]["pretrained"]:
        return out(config, "upsample/model/ema.pt")
    return local_upsampler(config) or out(config, "pretrained/upsampler.pt")


def upsampler_flags(config: dict) -> list[str]:
    """OpenAI's released file carries no JSON: name its preset (config and low-res size)."""
    up = config["upsample"]
    return flag_values("--model-preset", up["model"]["preset"]) if up["pretrained"] else []


def upsampler_url(config: dict) -> str:
    return config["checkpoints"]["base_url"].rstrip("/") + "/" + config["upsample"]["checkpoint"]


def low_res_input(config: dict, wildcards) -> str:
    """What the upsampler reads: the base samples, or (demo) their area-downsampled copies."""
    if downsamples(config):
        return out(config, f"upsample/lowres/scale{wildcards.scale}.npz")
    return out(config, f"samples/scale{wildcards.scale}.npz")


def reference(config: dict) -> str:
    """The reference batch at the high resolution (the demo's is its own 8x8 one)."""
    return out(config, "upsample/reference/ref.npz") if is_imagenet(config) else out(config, "reference/ref.npz")


def per_scale(config: dict, template: str) -> list[str]:
    """`template` (with a {scale} field) under the run folder, for every upsampled scale."""
    return [out(config, template.format(scale=s)) for s in scales(config)]


def grids(config: dict) -> list[str]:
    """Grids at both resolutions: the low-res input (demo) and the upsampled output per scale."""
    paths = per_scale(config, "upsample/grids/scale{scale}.png")
    if downsamples(config):
        paths += per_scale(config, "upsample/grids/lowres_scale{scale}.png")
    return paths


def targets(config: dict) -> list[str]:
    """final_targets' share: the table, the grids, every shard and every per-scale file (a deleted
    one re-runs, as workflow/lib/targets.py explains)."""
    if not enabled(config):
        return []
    shard_paths = [
        out(config, f"upsample/samples/scale{s}/shard{k}.npz") for s in scales(config) for k in shards(config)
    ]
    per_scale_files = [
        *per_scale(config, "upsample/samples/scale{scale}.npz"),
        *per_scale(config, "upsample/metrics/scale{scale}.json"),
        *per_scale(config, "upsample/bicubic/scale{scale}.npz"),
        *per_scale(config, "upsample/bicubic_metrics/scale{scale}.json"),
        *(per_scale(config, "upsample/lowres/scale{scale}.npz") if downsamples(config) else []),
    ]
    table = [out(config, "upsample/upsample_table.md"), out(config, "upsample/upsample_table.csv")]
    return [*table, *grids(config), *shard_paths, *per_scale_files]


def report_inputs(config: dict, wildcards=None) -> dict:
    """report_html's extra inputs (none when the stage is off)."""
    if not enabled(config):
        return {}
    return {
        "upsample_table": out(config, "upsample/upsample_table.csv"),
        "upsample_base": per_scale(config, "metrics/scale{scale}.json"),
        "upsample_metrics": per_scale(config, "upsample/metrics/scale{scale}.json"),
        "upsample_interpolated": per_scale(config, "upsample/bicubic_metrics/scale{scale}.json"),
        "upsample_base_grids": per_scale(config, "grids/scale{scale}.png"),
        "upsample_grids": grids(config),
    }


def arrangement(config: dict) -> dict:
    """The sizes the report and table label (adm.report.upsample_table.Arrangement fields)."""
    high = high_size(config)
    return {
        "base_size": config["image_size"],
        "low_size": low_size(config),
        "high_size": high,
        "compare_paper": is_imagenet(config) and config["image_size"] == 128 and high == 512,
    }
