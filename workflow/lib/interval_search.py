"""The guidance-interval search as a DAG target, the helpers of
workflow/rules/interval_search.smk.

`interval_search: {arm, scales, num_samples, ...}` searches one arm's interval (Kynkäänniemi et al.
2024): stage 1 samples sigma_hi = each candidate step sigma with sigma_lo = 0, stage 2 sigma_lo =
each candidate step sigma below the sigma_hi stage 1 chose. Each point is a generated arm

    isearch_hi<k>          interval (0, sigma_k]
    isearch_lo<j>_hi<k>    interval (sigma_j, sigma_k]

(k, j: indices of the sampling steps, sigma increasing with the index), sampled, merged and
evaluated by the arm rules of arms.smk at sampling.seed under results/<run>/arms/<name>/seed<S>/,
with the search's own num_samples and num_shards. The names carry step indices, not floats, so
the wildcard stays a path part and the bounds are the exact sigmas of the steps.
"""

from __future__ import annotations

import json
import re

import numpy as np

from adm.diffusion.schedule import make_schedule, respace, step_sigmas
from adm.nets.presets import DIFFUSION_PRESETS
from workflow.lib.paths import out, respacing_spec, scale_name

PREFIX = "isearch_"
NAME = re.compile(rf"^{PREFIX}(?:lo(\d+)_)?hi(\d+)$")


def settings(config: dict) -> dict | None:
    return config.get("interval_search") or None


def is_search_arm(name: str) -> bool:
    return NAME.match(name) is not None


def parse(name: str) -> tuple[int | None, int]:
    """(j or None, k) of a search arm's name."""
    m = NAME.match(name)
    if m is None:
        raise ValueError(f"{name!r} is not an interval-search arm")
    return (None if m.group(1) is None else int(m.group(1))), int(m.group(2))


def arm_name(k: int, j: int | None = None) -> str:
    return f"{PREFIX}hi{k}" if j is None else f"{PREFIX}lo{j}_hi{k}"


def candidate_indices(num_steps: int, max_candidates: int) -> list[int]:
    """At most max_candidates step indices of 0..num_steps-1, evenly spread, the top step always
    among them (sigma_hi = the largest step sigma is the full interval: the search's baseline)."""
    if num_steps < 1 or max_candidates < 1:
        raise ValueError(f"need num_steps >= 1 and max_candidates >= 1, got {num_steps}, {max_candidates}")
    if max_candidates >= num_steps:
        return list(range(num_steps))
    spread = np.round(np.linspace(num_steps - 1, 0, max_candidates)).astype(int)
    return sorted(set(spread.tolist()))


def sampling_sigmas(noise_schedule: str, diffusion_steps: int, spec: str) -> list[float]:
    """sigma of each sampling step (increasing in the step index), as the sampler's guidance
    interval sees it (adm.diffusion.schedule.step_sigmas of the respaced schedule)."""
    return step_sigmas(respace(make_schedule(noise_schedule, diffusion_steps), spec)).tolist()


def base_preset(config: dict, base: dict) -> str:
    """The preset of the model the searched arm samples (cfg: the CFG model)."""
    if base["method"] == "cfg":
        return config.get("cfg_model", {}).get("preset") or config["diffusion"]["preset"]
    return config["diffusion"]["preset"]


def config_sigmas(config: dict, base: dict) -> list[float]:
    preset = DIFFUSION_PRESETS[base_preset(config, base)]
    return sampling_sigmas(preset.noise_schedule, preset.diffusion_steps, respacing_spec(config["sampling"]))


def hi_candidates(config: dict, base: dict) -> list[int]:
    sigmas = config_sigmas(config, base)
    return candidate_indices(len(sigmas), settings(config)["max_candidates"])


def lo_candidates(config: dict, base: dict, k: int) -> list[int]:
    """Step indices j < k for sigma_lo (sigma_lo = 0 is stage 1's own point)."""
    return candidate_indices(k, settings(config)["max_candidates"]) if k > 0 else []


def search_arm(config: dict, name: str, base: dict) -> dict:
    """The generated arm: the searched arm (method, guide) in (sigma_j or 0, sigma_k], the search's scales."""
    j, k = parse(name)
    sigmas = config_sigmas(config, base)
    lo = 0.0 if j is None else sigmas[j]
    keep = {key: v for key, v in base.items() if key not in ("name", "interval", "scales")}
    return {**keep, "name": name, "interval": [lo, sigmas[k]], "scales": settings(config)["scales"]}


def metrics_file(config: dict, name: str, scale) -> str:
    seed = config["sampling"]["seed"]
    return out(config, f"arms/{name}/seed{seed}/metrics/scale{scale_name(scale)}.json")


def entries(config: dict, base: dict, names: list[str], stage: str) -> list[dict]:
    """What the search's scripts read: one {stage, lo, hi, scale, path} per (arm, scale)."""
    rows = []
    for name in names:
        lo, hi = search_arm(config, name, base)["interval"]
        for s in settings(config)["scales"]:
            rows.append({"stage": stage, "lo": lo, "hi": hi, "scale": float(s), "path": metrics_file(config, name, s)})
    return rows


def stage_hi_entries(config: dict, base: dict) -> list[dict]:
    return entries(config, base, [arm_name(k) for k in hi_candidates(config, base)], "hi")


def stage_lo_entries(config: dict, base: dict, k: int) -> list[dict]:
    return entries(config, base, [arm_name(k, j) for j in lo_candidates(config, base, k)], "lo")


def chosen_index(config: dict, base: dict, hi: float) -> int:
    """The step index k whose sigma is stage 1's chosen sigma_hi (exact: the bounds are step sigmas)."""
    return config_sigmas(config, base).index(float(hi))


def stage_lo_after(config: dict, base: dict, stage_hi_json: str) -> list[dict]:
    """Stage 2's entries, once stage 1's checkpoint has written its choice to stage_hi_json."""
    with open(stage_hi_json) as f:
        hi = json.load(f)["chosen"]["hi"]
    return stage_lo_entries(config, base, chosen_index(config, base, hi))


def report_inputs(config: dict, wildcards=None) -> dict[str, str]:
    """report_html's extra inputs: the search's table, choice and heatmap (none unless in_report)."""
    search = settings(config)
    if not (search and search.get("in_report")):
        return {}
    files = outputs(config)
    return {
        "interval_search_csv": files["csv"],
        "interval_search_chosen": files["chosen"],
        "interval_search_heatmap": files["heatmap"],
    }


def outputs(config: dict) -> dict[str, str]:
    return {
        "csv": out(config, "interval_search/interval_search.csv"),
        "md": out(config, "interval_search/interval_search.md"),
        "heatmap": out(config, "interval_search/heatmap.png"),
        "chosen": out(config, "interval_search/chosen.yaml"),
    }
