"""Config validation: the schema (types, ranges, enums, string patterns), then the cross-field
checks it cannot express. A bad config is a user's mistake, so it ends the run before any job with
ONE line on stderr and exit status 1: a raised WorkflowError would make Snakemake print a
`WorkflowError in file ...` header and a `File ...` trace line around the message."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

from adm.diffusion.schedule import make_schedule, respace, space_timesteps
from adm.nets.presets import DIFFUSION_PRESETS, UPSAMPLER_LOW_RES, get_preset
from workflow.lib.paths import respacing_spec, scale_name

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config value the workflow cannot run with; the message is the whole explanation."""


# What the schema's string patterns mean, for the error line (a regex is no explanation).
PATTERN_MEANINGS = {
    r"^(?!-)[^\x00-\x1f\x7f]+$": "is not a usable path (no control characters such as a newline, no leading '-')",
    r"^(https?|file)://[^\x00-\x20\x7f]+$": "is not an http(s):// or file:// URL without spaces",
    r"^[A-Za-z0-9][A-Za-z0-9_.-]*$": "is not a run name (letters, digits, '_', '.', '-'; a letter or digit first)",
    r"^[A-Za-z][A-Za-z0-9_-]*$": "is not an arm name (letters, digits, '_', '-'; a letter first)",
}


def explain_pattern(message):
    for pattern, meaning in PATTERN_MEANINGS.items():
        message = message.replace(f"does not match {pattern!r}", meaning)
    return message


def one_line_config_error(exc):
    """`sampling.scales.0: -1 is less than the minimum of 0` from snakemake's validate error."""
    text = " ".join(str(a) for a in exc.args)
    message = next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("ValidationError")),
        text.splitlines()[0] if text else "schema validation failed",
    )
    where = next((line for line in text.splitlines() if line.startswith("On instance")), "")
    keys = [k.strip("'\"") for k in re.findall(r"\[([^\]]+)\]", where)]
    message = explain_pattern(message)
    return f"{'.'.join(keys)}: {message}" if keys else message


# Seeds go into file names (seed<S>) and into torch/numpy generators: plain integers of 32 bits.
MAX_SEED = 2**32 - 1
# Sizes of the ten classes of the demo's digits (1797 images), which it splits per class:
# np.bincount(sklearn.datasets.load_digits().target), read once here to keep sklearn out of the check.
DIGITS_CLASS_SIZES = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)


def check_scale_names(where, scales):
    """Each scale's file-name form (scale<name>) must be digits[.digits] that read back as the
    scale: `%g` writes 1e-05 and 1e+06 with an exponent and 0.1234567 as 0.123457."""
    for s in scales:
        name = scale_name(s)
        if not re.fullmatch(r"\d+(\.\d+)?", name) or float(name) != float(s):
            raise ConfigError(
                f"{where}: {s!r} has no file name (it would be written scale{name}); a scale is 0 or "
                "in [0.0001, 1e6) with at most 6 significant digits"
            )


def check_scales(cfg):
    scales = cfg["sampling"]["scales"]
    if not scales:
        raise ConfigError("sampling.scales is empty")
    if any(not math.isfinite(s) or s < 0 for s in scales):
        raise ConfigError(f"sampling.scales must be finite and >= 0, got {scales}")
    check_scale_names("sampling.scales", scales)
    names = [scale_name(s) for s in scales]
    if len(set(names)) != len(names):
        raise ConfigError(f"sampling.scales has duplicates: {scales}")
    n, shards = cfg["sampling"]["num_samples"], cfg["sampling"]["num_shards"]
    if shards > n:
        raise ConfigError(f"sampling.num_shards ({shards}) > sampling.num_samples ({n})")


def check_models(cfg):
    """Presets that fit the images, and a sampling respacing the diffusion can take: these would
    otherwise fail only in the sampling jobs, after hours of training."""
    size = cfg["image_size"]
    for kind in ("diffusion", "classifier"):
        name = cfg[kind]["preset"]
        preset_size = get_preset(name).image_size
        if preset_size != size:
            raise ConfigError(
                f"{kind}.preset {name!r} is a {preset_size}x{preset_size} model, but image_size is {size}"
            )
    diffusion = cfg["diffusion"]["preset"]
    steps = DIFFUSION_PRESETS[diffusion].diffusion_steps
    spec = respacing_spec(cfg["sampling"])
    try:
        space_timesteps(steps, spec)
    except ValueError as err:
        raise ConfigError(
            f"sampling.steps: {cfg['sampling']['sampler']} cannot take "
            f"{cfg['sampling']['steps']} steps from the {steps}-step diffusion of {diffusion!r}: {err}"
        ) from None


def check_sources(cfg):
    """Data, checkpoints and reference batch: the combinations that exist."""
    imagenet, pretrained = cfg["dataset"] == "imagenet", cfg["pretrained"]
    if not imagenet and pretrained:
        raise ConfigError("pretrained: true needs dataset: imagenet (no released demo model)")
    if imagenet and not pretrained:
        folder = cfg["imagenet_dir"]
        if not folder:
            raise ConfigError("dataset imagenet with pretrained: false needs imagenet_dir")
        if not Path(folder).is_dir():
            raise ConfigError(f"imagenet_dir {folder!r} is not a directory")
    if imagenet and pretrained:
        for kind in ("diffusion", "classifier"):
            value = cfg["checkpoints"][kind]
            if "/" in value and not Path(value).is_file():
                raise ConfigError(f"checkpoints.{kind}: no such file {value!r}")
    if not imagenet and cfg["reference"]["source"] != "build":
        raise ConfigError("the digits demo builds its reference batch (reference.source: build)")


def check_seed(where, seed):
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{where}: {seed!r} is not a seed; a seed is an integer in [0, 2**32-1 = {MAX_SEED}]")


def check_seeds(cfg):
    """sampling.seeds: distinct integers of 32 bits (they name seed<S> folders), the first the
    Table 1 seed; seed_scales distinct and a subset of the scales."""
    sampling = cfg["sampling"]
    seeds = sampling.get("seeds")
    if seeds and len({float(s) for s in seeds}) != len(seeds):
        raise ConfigError(f"sampling.seeds has duplicates: {seeds}")
    check_seed("sampling.seed", sampling["seed"])
    for seed in seeds or []:
        check_seed("sampling.seeds", seed)
    check_seed("upsample.seed", cfg["upsample"].get("seed", 0))
    if seeds and seeds[0] != sampling["seed"]:
        raise ConfigError(
            f"sampling.seeds[0] ({seeds[0]}) must equal sampling.seed ({sampling['seed']}): "
            "the first seed's sweep is Table 1"
        )
    seed_scales = sampling.get("seed_scales", [])
    check_scale_names("sampling.seed_scales", seed_scales)
    if len({scale_name(s) for s in seed_scales}) != len(seed_scales):
        raise ConfigError(f"sampling.seed_scales has duplicates: {seed_scales}")
    names = {scale_name(s) for s in sampling["scales"]}
    extra = [s for s in seed_scales if scale_name(s) not in names]
    if extra:
        raise ConfigError(f"sampling.seed_scales {extra} are not in sampling.scales")


def check_arm(arm, cfg):
    """One guidance arm: finite distinct scales, an interval lo < hi,
    and a CFG model that can exist (none is released: pretrained runs fine-tune the released model)
    """
    where = f"guidance_arms.{arm['name']}"
    scales = arm["scales"]
    if any(not math.isfinite(s) for s in scales):
        raise ConfigError(f"{where}.scales must be finite, got {scales}")
    check_scale_names(f"{where}.scales", scales)
    if len({scale_name(s) for s in scales}) != len(scales):
        raise ConfigError(f"{where}.scales has duplicates: {scales}")
    if "interval" in arm:
        lo, hi = arm["interval"]
        if not math.isfinite(lo) or not lo < hi:
            raise ConfigError(f"{where}.interval needs a finite LO < HI (sigma bounds), got {[lo, hi]}")
        check_interval_has_steps(arm, cfg)
    cfg_init = cfg.get("cfg_model", {}).get("init", "scratch")
    if arm["method"] == "cfg" and cfg["dataset"] == "imagenet" and cfg["pretrained"] and cfg_init != "main":
        raise ConfigError(
            f"{where}: method cfg needs a model trained with label dropout, and none is "
            "released; fine-tune the released one (cfg_model.init: main) or use pretrained: false"
        )
    if arm["method"] == "cfg" and cfg["dataset"] == "imagenet" and cfg["pretrained"] and not cfg["imagenet_dir"]:
        raise ConfigError(f"{where}: fine-tuning the released model for method cfg needs its data: set imagenet_dir")
    if arm["method"] == "autoguidance" or "guide" in arm:
        check_autoguidance_arm(arm, cfg)


def main_training_steps(cfg):
    """The main diffusion model's training steps: the diffusion section's, else its training preset's."""
    from adm.training.presets import TRAIN_PRESETS, TrainConfig

    diffusion = cfg["diffusion"]
    if diffusion.get("steps") is not None:
        return diffusion["steps"]
    preset = diffusion.get("train_preset") or diffusion["preset"]
    return (TRAIN_PRESETS[preset] if preset in TRAIN_PRESETS else TrainConfig()).steps


def check_autoguidance_arm(arm, cfg):
    """Autoguidance: w >= 1 and a guide that can exist (an earlier EMA of a model trained here, or
    a separately trained model of the same image size)."""
    where = f"guidance_arms.{arm['name']}"
    if arm["method"] != "autoguidance":
        raise ConfigError(f"{where}.guide: only an autoguidance arm has a guide (method is {arm['method']})")
    if any(s < 1 for s in arm["scales"]):
        raise ConfigError(f"{where}.scales: autoguidance needs w >= 1 (1 = the main model alone), got {arm['scales']}")
    guide = arm.get("guide")
    if not guide:
        raise ConfigError(f"{where}: autoguidance needs a guide: {{step: N}} (an earlier EMA) or {{preset/steps}}")
    if "step" in guide:
        if len(guide) > 1:
            raise ConfigError(f"{where}.guide: step N (an earlier EMA of the main model) takes no other key")
        if cfg["pretrained"]:
            raise ConfigError(
                f"{where}.guide.step: a released checkpoint keeps no earlier EMA; use pretrained: false or a trained guide"
            )
        steps = main_training_steps(cfg)
        if not guide["step"] < steps:
            raise ConfigError(
                f"{where}.guide.step {guide['step']}: the main model trains {steps} steps; an earlier step is below it"
            )
    preset = guide.get("preset")
    if preset and get_preset(preset).image_size != cfg["image_size"]:
        raise ConfigError(
            f"{where}.guide.preset {preset!r} is a {get_preset(preset).image_size}x"
            f"{get_preset(preset).image_size} model, but image_size is {cfg['image_size']}"
        )


def check_interval_has_steps(arm, cfg):
    """An interval (lo, hi] between two sampling steps would guide nothing: the arm would be the
    plain conditional sampler under a guidance name. sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)
    at the original timesteps the respacing keeps, as adm.sampling.guidance.step_sigmas (torch-free
    here: respace keeps alpha_bar at the kept timesteps)."""
    preset = cfg["diffusion"]["preset"]
    if arm["method"] == "cfg":
        preset = cfg.get("cfg_model", {}).get("preset") or preset
    diffusion = DIFFUSION_PRESETS[preset]
    spec = respacing_spec(cfg["sampling"])
    schedule = respace(make_schedule(diffusion.noise_schedule, diffusion.diffusion_steps), spec)
    alpha_bar = schedule.alphas_cumprod
    sigmas = [math.sqrt(v) for v in ((1.0 - alpha_bar) / alpha_bar).tolist()]
    lo, hi = (float(v) for v in arm["interval"])
    if not any(lo < sigma <= hi for sigma in sigmas):
        below = max((sigma for sigma in sigmas if sigma <= lo), default=None)
        above = min((sigma for sigma in sigmas if sigma > hi), default=None)
        raise ConfigError(
            f"guidance_arms.{arm['name']}.interval {arm['interval']} contains no sampling step: the "
            f"{len(sigmas)} steps of {cfg['sampling']['sampler']} (respacing {spec!r}) have sigma from "
            f"{min(sigmas):.4g} to {max(sigmas):.4g} (nearest: {_g(below)} below, {_g(above)} above)"
        )


def _g(value):
    return "none" if value is None else f"{value:.4g}"


def check_arms(cfg):
    arms = cfg["guidance_arms"]
    names = [a["name"] for a in arms]
    if "classifier" in names:
        raise ConfigError("guidance_arms: the name 'classifier' is the Table 1 sweep's own; choose another")
    if len(set(names)) != len(names):
        raise ConfigError(f"guidance_arms: names must be unique, got {names}")
    for arm in arms:
        check_arm(arm, cfg)
    preset = cfg["cfg_model"].get("preset")
    if preset and get_preset(preset).image_size != cfg["image_size"]:
        raise ConfigError(
            f"cfg_model.preset {preset!r} is a {get_preset(preset).image_size}x"
            f"{get_preset(preset).image_size} model, but image_size is {cfg['image_size']}"
        )


def check_interval_search(cfg):
    """The searched arm exists; no configured arm takes a name the search generates."""
    taken = [a["name"] for a in cfg["guidance_arms"] if a["name"].startswith("isearch_")]
    if taken:
        raise ConfigError(f"guidance_arms: names starting with 'isearch_' belong to interval_search, got {taken}")
    search = cfg.get("interval_search")
    if not search:
        return
    names = ["classifier"] + [a["name"] for a in cfg["guidance_arms"]]
    if search["arm"] not in names:
        raise ConfigError(f"interval_search.arm {search['arm']!r} is not an arm: one of {names}")


def check_upsample(cfg):
    """The super-resolution stage: scales that are sampled, sizes that chain, sources that exist."""
    up = cfg["upsample"]
    if not up["enabled"]:
        return
    sampled = [scale_name(s) for s in cfg["sampling"]["scales"]]
    check_scale_names("upsample.scales", up["scales"])
    missing = [s for s in up["scales"] if scale_name(s) not in sampled]
    if missing:
        raise ConfigError(f"upsample.scales {missing} are not among sampling.scales {cfg['sampling']['scales']}")
    if len({scale_name(s) for s in up["scales"]}) != len(up["scales"]):
        raise ConfigError(f"upsample.scales has duplicates: {up['scales']}")
    preset, size, imagenet = (
        up["model"]["preset"],
        cfg["image_size"],
        cfg["dataset"] == "imagenet",
    )
    hi, lo = get_preset(preset).image_size, UPSAMPLER_LOW_RES[preset]
    if imagenet and lo != size:
        raise ConfigError(
            f"upsample.model.preset {preset!r} takes {lo}x{lo} images, "
            f"but the base samples are {size}x{size} (image_size)"
        )
    if not imagenet and (hi != size or size % lo):  # demo: base samples downsampled to lo, upsampled back
        raise ConfigError(
            f"upsample.model.preset {preset!r} makes {hi}x{hi} from {lo}x{lo}, but the digits demo "
            f"downsamples its {size}x{size} samples and needs them upsampled back to {size}x{size}"
        )
    if up["pretrained"] and not imagenet:
        raise ConfigError("upsample.pretrained: true needs dataset: imagenet (no released demo upsampler)")
    if imagenet and not up["pretrained"]:
        raise ConfigError(
            f"upsample.pretrained: false would train the upsampler on {hi}x{hi} ImageNet images, which this "
            f"DAG does not prepare (it prepares image_size {size}); set upsample.pretrained: true with a "
            f"released file or your own `adm train-upsampler` checkpoint as upsample.checkpoint"
        )
    value = up["checkpoint"]
    if up["pretrained"] and "/" in value and not Path(value).is_file():
        raise ConfigError(f"upsample.checkpoint: no such file {value!r}")
    if up["num_shards"] > cfg["sampling"]["num_samples"]:
        raise ConfigError(
            f"upsample.num_shards ({up['num_shards']}) > sampling.num_samples ({cfg['sampling']['num_samples']})"
        )
    steps = DIFFUSION_PRESETS[preset].diffusion_steps
    try:
        space_timesteps(steps, respacing_spec(up))
    except ValueError as err:
        raise ConfigError(
            f"upsample.steps: {up['sampler']} cannot take {up['steps']} steps from the {steps}-step "
            f"diffusion of {preset!r}: {err}"
        ) from None


def check_frontier(cfg):
    """Frontier scales with file names, and every point's steps a respacing of the diffusion."""
    f = cfg.get("frontier") or {}
    if not f.get("enabled"):
        return
    check_scale_names("frontier.scales", f.get("scales", []))
    names = [scale_name(s) for s in f.get("scales", [])]
    if len(set(names)) != len(names):
        raise ConfigError(f"frontier.scales has duplicates: {f['scales']}")
    diffusion = cfg["diffusion"]["preset"]
    total = DIFFUSION_PRESETS[diffusion].diffusion_steps
    gold = f.get("gold") or {}
    gold = (gold.get("sampler", cfg["sampling"]["sampler"]), gold.get("steps", cfg["sampling"]["steps"]))
    for sampler, steps in [gold] + [(v, k) for v in f.get("solvers", []) for k in f.get("steps", [])]:
        if sampler.startswith("dpmpp") and steps < 2:
            raise ConfigError(f"frontier: {sampler} takes at least 2 steps, got {steps}")
        try:
            space_timesteps(total, respacing_spec({"sampler": sampler, "steps": steps}))
        except ValueError as err:
            raise ConfigError(
                f"frontier: {sampler} cannot take {steps} steps from the {total}-step diffusion of {diffusion!r}: {err}"
            ) from None


def check_precision(cfg):
    """fp16 (OpenAI's fp16 torso, or fp16 autocast in training) runs on CUDA only."""
    if cfg["device"] == "cuda":
        return
    sections = {
        "sampling": cfg["sampling"],
        "upsample": cfg.get("upsample", {}),
        "diffusion": cfg["diffusion"],
        "classifier": cfg["classifier"],
        "cfg_model": cfg.get("cfg_model", {}),
        "upsample.model": cfg.get("upsample", {}).get("model", {}),
    }
    for where, section in sections.items():
        if section.get("precision") == "fp16":
            raise ConfigError(
                f"{where}.precision: fp16 runs on CUDA only, but device is {cfg['device']} "
                "(use fp32, bf16 or auto, or device: cuda)"
            )


def check_heldout(cfg):
    """The digits demo holds out round(fraction * n_c) of each class c (adm.data.datasets.stratified_split);
    its reference batch and the classifier's held-out accuracy need at least one image."""
    if cfg["dataset"] != "digits":
        return
    fraction = cfg["data"]["heldout_fraction"]
    held = sum(int(round(fraction * n)) for n in DIGITS_CLASS_SIZES)
    if held == 0:
        least = 0.5 / max(DIGITS_CLASS_SIZES)
        raise ConfigError(
            f"data.heldout_fraction {fraction} holds out 0 of the {sum(DIGITS_CLASS_SIZES)} digits "
            f"(round(fraction x class size) per class); it must be more than {least:.4g}"
        )


def check_config(cfg):
    """Cross-field checks the schema cannot express; raises ConfigError with one line."""
    check_scales(cfg)
    check_sources(cfg)
    check_precision(cfg)
    check_heldout(cfg)
    check_models(cfg)
    check_seeds(cfg)
    check_arms(cfg)
    check_interval_search(cfg)
    check_upsample(cfg)
    check_frontier(cfg)


def coerce_pretrained(config: dict) -> None:
    """`--config pretrained=false` arrives as the string "false": read it as the boolean it means."""
    if str(config.get("pretrained")).lower() in ("true", "false"):
        config["pretrained"] = str(config["pretrained"]).lower() == "true"


def pop_print_config(config: dict) -> bool:
    """`--config print_config=1`: print the resolved config (the file(s) given, the command line's
    overrides and the schema's defaults) and stop before any job, so a user can see what would run.
    Removed from the config, which it is not part of."""
    return str(config.pop("print_config", "")).lower() in ("1", "true", "yes")


def validate_config(config: dict, schema=SCHEMA, skip_schema: bool = False) -> None:
    """The schema (which also fills its defaults into `config`), then check_config; raises
    ConfigError with one line. skip_schema: a workflow importing this one as a module with
    `skip_validation: True` (Snakemake's modifier) skips the schema, as snakemake.utils.validate does."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    if not skip_schema:
        try:
            validate(config, str(schema))
        except WorkflowError as exc:
            raise ConfigError(one_line_config_error(exc)) from None
    check_config(config)


def validate_or_exit(config: dict, schema=SCHEMA, skip_schema: bool = False) -> None:
    """validate_config, or `invalid config: ...` on stderr and exit status 1."""
    try:
        validate_config(config, schema, skip_schema)
    except ConfigError as exc:
        print(f"invalid config: {exc}", file=sys.stderr)
        sys.exit(1)
