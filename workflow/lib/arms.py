"""Guidance arms and seed sets, the helpers of workflow/rules/arms.smk: the
classifier-guidance sweep re-run at the other seeds of sampling.seeds, and every configured arm
(classifier guidance in a limited sigma interval, classifier-free guidance of a model trained with
label dropout, autoguidance by an earlier EMA or a weaker model) at every seed, each as

    results/<run>/arms/<arm>/seed<S>/{samples,metrics}/scale<s>...

The first seed's classifier-guidance outputs ARE the Table 1 files (samples/, metrics/): they are
never re-made here. With no arms and one seed, nothing here adds a job or an output.
"""

from __future__ import annotations

from workflow.lib import interval_search
from workflow.lib.commands import classifier_checkpoint, diffusion_checkpoint, flag_values
from workflow.lib.paths import out, scale_name, scale_names, shard_ids

# The Table 1 sweep's own arm name (reserved: config_checks.check_arms refuses it for an arm).
MAIN_ARM_NAME = "classifier"


def seeds(config: dict) -> list[int]:
    sampling = config["sampling"]
    return sampling.get("seeds") or [sampling["seed"]]


def seed_scales(config: dict) -> list[str]:
    """Scales re-run at the extra seeds (all of sampling.scales unless seed_scales is set)."""
    sampling = config["sampling"]
    return scale_names(sampling.get("seed_scales", sampling["scales"]))


def arms(config: dict) -> dict[str, dict]:
    return {arm["name"]: arm for arm in config["guidance_arms"]}


def arms_on(config: dict) -> bool:
    return bool(config["guidance_arms"]) or len(seeds(config)) > 1


def cfg_on(config: dict) -> bool:
    """A classifier-free guidance arm: the CFG model is trained."""
    return any(arm["method"] == "cfg" for arm in config["guidance_arms"])


def fill_cfg_model_resources(config: dict) -> None:
    """The CFG model (and a trained autoguidance guide) is trained like the main one, on the same
    GPUs, unless its resources are set (only when it is trained: the config of a run without it
    stays as it was)."""
    if cfg_on(config):
        config["resources"].setdefault("train_cfg_model", config["resources"]["train_diffusion"])
    if trained_guides(config):
        config["resources"].setdefault("train_guide_model", config["resources"]["train_diffusion"])


# --- autoguidance (Karras et al. 2024): the guide is an earlier EMA of the main model or a model
# trained by its own job


def kept_ema_steps(config: dict) -> list[int]:
    """Steps at which the main model's training keeps its EMA for a {step: N} guide."""
    steps = {arm["guide"]["step"] for arm in config["guidance_arms"] if "step" in arm.get("guide", {})}
    return sorted(steps)


def kept_ema_files(config: dict) -> list[str]:
    return [out(config, f"diffusion/ema_step{n}.pt") for n in kept_ema_steps(config)]


def keep_ema_flags(config: dict) -> list[str]:
    """train-diffusion's `--keep-ema-step N ...` (nothing without a {step: N} guide: the main
    training's command, and so its outputs, stay as they were)."""
    steps = kept_ema_steps(config)
    return flag_values("--keep-ema-step", steps) if steps else []


def trained_guides(config: dict) -> list[str]:
    """Names of the autoguidance arms whose guide is trained by its own job."""
    return [a["name"] for a in config["guidance_arms"] if a.get("guide") and "step" not in a["guide"]]


def guide_checkpoint(config: dict, name: str) -> str:
    guide = arms(config)[name]["guide"]
    if "step" in guide:
        return out(config, f"diffusion/ema_step{guide['step']}.pt")
    return out(config, f"guides/{name}/ema.pt")


def guide_model_settings(config: dict, name: str) -> dict:
    """A trained guide: the diffusion section, then the arm's guide keys (preset, steps, ...)."""
    return {**config["diffusion"], **arms(config)[name]["guide"]}


def arm_config(config: dict, name: str) -> dict:
    if name == MAIN_ARM_NAME:
        return {"name": MAIN_ARM_NAME, "method": "classifier", "scales": config["sampling"]["scales"]}
    if interval_search.is_search_arm(name):
        return interval_search.search_arm(config, name, searched_arm(config))
    return arms(config)[name]


def searched_arm(config: dict) -> dict:
    """The arm interval_search searches (its method and guide; the Table 1 sweep by its name)."""
    return arm_config(config, interval_search.settings(config)["arm"])


def source_arm(config: dict, name: str) -> str:
    """The configured arm a run's model and guide come from (a search arm's: the searched arm)."""
    return interval_search.settings(config)["arm"] if interval_search.is_search_arm(name) else name


def arm_sampling(config: dict, name: str, key: str):
    """num_samples or num_shards of an arm's runs: the search's own for a search arm."""
    if interval_search.is_search_arm(name):
        return interval_search.settings(config)[key]
    return config["sampling"][key]


def arm_sampling_param(config: dict, key: str, wildcards):
    """arm_sampling for a rule's params (partial(arm_sampling_param, config, key))."""
    return arm_sampling(config, wildcards.arm, key)


def arm_merge_inputs(config: dict, wildcards) -> list[str]:
    shards = shard_ids(arm_sampling(config, wildcards.arm, "num_shards"))
    return [
        out(config, f"arms/{wildcards.arm}/seed{wildcards.seed}/samples/scale{wildcards.scale}/shard{k}.npz")
        for k in shards
    ]


def arm_runs(config: dict) -> list[tuple[str, int, str]]:
    """Every (arm, seed, scale) of the comparison, the Table 1 sweep's first seed included."""
    first, *others = seeds(config)
    runs = [(MAIN_ARM_NAME, first, s) for s in scale_names(config["sampling"]["scales"])]
    runs += [(MAIN_ARM_NAME, seed, s) for seed in others for s in seed_scales(config)]
    for name, arm in arms(config).items():
        runs += [(name, seed, scale_name(s)) for seed in seeds(config) for s in arm["scales"]]
    return runs


def is_table1(config: dict, arm: str, seed: int) -> bool:
    return arm == MAIN_ARM_NAME and seed == seeds(config)[0]


def arm_file(config: dict, arm: str, seed: int, scale: str, kind: str) -> str:
    """metrics JSON (kind "metrics") or merged npz (kind "samples") of one run; the Table 1 files
    for the first seed of the classifier sweep."""
    ext = "json" if kind == "metrics" else "npz"
    if is_table1(config, arm, seed):
        return out(config, f"{kind}/scale{scale}.{ext}")
    return out(config, f"arms/{arm}/seed{seed}/{kind}/scale{scale}.{ext}")


def arm_metrics(config: dict) -> list[str]:
    return [arm_file(config, *run, "metrics") for run in arm_runs(config)]


def arm_entries(config: dict) -> list[dict]:
    """What the comparison reads: one {arm, method, interval, seed, scale, path} per run."""
    entries = []
    for arm, seed, scale in arm_runs(config):
        c = arm_config(config, arm)
        entry = {
            "arm": arm,
            "method": c["method"],
            "interval": c.get("interval"),
            "seed": seed,
            "scale": float(scale),
            "path": arm_file(config, arm, seed, scale, "metrics"),
        }
        if c.get("note"):  # only where set: a run without notes keeps its params and bytes
            entry["note"] = c["note"]
        entries.append(entry)
    return entries


def arm_fd_dinov2_file(config: dict, arm: str, seed: int, scale: str) -> str:
    """FD_DINOv2 record of one run (workflow/rules/fd_dinov2.smk); Table 1's for its own runs."""
    if is_table1(config, arm, seed):
        return out(config, f"metrics/fd_dinov2_scale{scale}.json")
    return out(config, f"arms/{arm}/seed{seed}/metrics/fd_dinov2_scale{scale}.json")


def arm_fd_dinov2(config: dict) -> list[str]:
    """Every run's FD_DINOv2 record (none when evaluation.fd_dinov2 is off)."""
    if not config["evaluation"]["fd_dinov2"]:
        return []
    return [arm_fd_dinov2_file(config, *run) for run in arm_runs(config)]


def comparison_entries(config: dict) -> list[dict]:
    """arm_entries, each with its FD_DINOv2 record under "fd_dinov2" when the metric is on (off:
    arm_entries unchanged, so the comparison's params and bytes are those of a run without it)."""
    entries = arm_entries(config)
    if config["evaluation"]["fd_dinov2"]:
        for e, run in zip(entries, arm_runs(config)):
            e["fd_dinov2"] = arm_fd_dinov2_file(config, *run)
    return entries


def tradeoff_plots(config: dict) -> list[str]:
    """plots/tradeoff_{pr,fid_is}.{png,svg} and, with evaluation.fd_dinov2, tradeoff_fd_dinov2 (FID and
    FD_DINOv2 against the guidance scale; off: the list of a run without the metric)."""
    names = ("pr", "fid_is", "fd_dinov2") if config["evaluation"]["fd_dinov2"] else ("pr", "fid_is")
    return [out(config, f"plots/tradeoff_{name}.{ext}") for name in names for ext in ("png", "svg")]


def arm_targets(config: dict) -> list[str]:
    """Every arms/ shard, merged sample file and metrics JSON (a deleted one re-runs its
    descendants, as workflow/lib/targets.py explains) and the comparison outputs; nothing when arms
    are off."""
    if not arms_on(config):
        return []
    runs = [run for run in arm_runs(config) if not is_table1(config, run[0], run[1])]
    shards = [
        out(config, f"arms/{arm}/seed{seed}/samples/scale{scale}/shard{k}.npz")
        for arm, seed, scale in runs
        for k in shard_ids(config["sampling"]["num_shards"])
    ]
    merged = [arm_file(config, *run, kind) for run in runs for kind in ("samples", "metrics")]
    comparison = [out(config, "comparison.md"), out(config, "comparison.csv"), *tradeoff_plots(config)]
    return [*comparison, *shards, *merged]


def cfg_checkpoint(config: dict) -> str:
    return out(config, "cfg_model/ema.pt")


def arm_sample_inputs(config: dict, wildcards) -> dict[str, str]:
    method = arm_config(config, wildcards.arm)["method"]
    if method == "cfg":
        return {"model": cfg_checkpoint(config)}
    if method == "autoguidance":
        return {
            "model": diffusion_checkpoint(config),
            "guide": guide_checkpoint(config, source_arm(config, wildcards.arm)),
        }
    return {"model": diffusion_checkpoint(config), "classifier": classifier_checkpoint(config)}


def guidance_flags(config: dict, wildcards, input) -> list[str]:
    """`--classifier C`, `--guidance cfg` (no classifier) or `--guidance autoguidance
    --guide-model G`, then `--guidance-interval LO HI`."""
    arm = arm_config(config, wildcards.arm)
    if arm["method"] == "cfg":
        flags = flag_values("--guidance", "cfg")
    elif arm["method"] == "autoguidance":
        flags = flag_values("--guidance", "autoguidance") + flag_values("--guide-model", input.guide)
    else:
        flags = flag_values("--classifier", input.classifier)
    if arm.get("interval"):
        flags += flag_values("--guidance-interval", [float(v) for v in arm["interval"]])
    return flags


def cfg_from_main(config: dict) -> bool:
    """The CFG model is the main model fine-tuned with label dropout (cfg_model.init: main)."""
    return config["cfg_model"].get("init", "scratch") == "main"


def cfg_model_inputs(config: dict) -> dict:
    """train_cfg_model's inputs: the training data, and the main model it starts from (init: main)."""
    inputs = {"train": out(config, "data/train.npz")}
    if cfg_from_main(config):
        inputs["init"] = diffusion_checkpoint(config)
    return inputs


def cfg_init_flags(config: dict) -> list[str]:
    """train-diffusion's `--init-from MAIN` for a fine-tuned CFG model (nothing from scratch)."""
    return flag_values("--init-from", diffusion_checkpoint(config)) if cfg_from_main(config) else []


def cfg_model_settings(config: dict) -> dict:
    """The CFG model is trained like the main one: the diffusion section, then cfg_model's keys
    (label_dropout among them: commands.TRAINING_FLAGS passes it as --label-dropout)."""
    return {**config["diffusion"], **config["cfg_model"]}


def comparison_report_inputs(config: dict, wildcards=None) -> dict:
    """report_html's extra inputs: the comparison table and the trade-off PNGs (none when off)."""
    if not arms_on(config):
        return {}
    return {
        "comparison": out(config, "comparison.csv"),
        "tradeoff": [p for p in tradeoff_plots(config) if p.endswith(".png")],
    }
