# Guidance arms and seed sets (issue 11), the helpers of arms.smk's rules: the classifier-guidance
# sweep re-run at the other seeds of sampling.seeds, and every configured arm (classifier guidance
# in a limited sigma interval, classifier-free guidance of a model trained with label dropout) at
# every seed, each as
#   results/<run>/arms/<arm>/seed<S>/{samples,metrics}/scale<s>...
# The first seed's classifier-guidance outputs ARE the Table 1 files (samples/, metrics/): they are
# never re-made here. With no arms and one seed, nothing in this file adds a job or an output.

SEEDS = SAMPLING.get("seeds") or [SAMPLING["seed"]]
SEED_SCALES = [scale_name(s) for s in SAMPLING.get("seed_scales", SAMPLING["scales"])]
ARMS = {arm["name"]: arm for arm in config["guidance_arms"]}
ARMS_ON = bool(ARMS) or len(SEEDS) > 1
CFG_ON = any(arm["method"] == "cfg" for arm in ARMS.values())
# the CFG model is trained like the main one, on the same GPUs, unless its resources are set
# (only when it is trained: the config of a run without it stays as it was)
if CFG_ON:
    config["resources"].setdefault(
        "train_cfg_model", config["resources"]["train_diffusion"]
    )
# the Table 1 sweep, as an arm of its own (reserved name, validate.smk)
MAIN_ARM = {"name": "classifier", "method": "classifier", "scales": SAMPLING["scales"]}


wildcard_constraints:
    arm=r"[A-Za-z][A-Za-z0-9_-]*",
    seed=r"\d+",


def arm_config(name):
    return MAIN_ARM if name == "classifier" else ARMS[name]


def arm_runs():
    """Every (arm, seed, scale) of the comparison, the Table 1 sweep's first seed included."""
    runs = [("classifier", SEEDS[0], s) for s in SCALES]
    runs += [("classifier", seed, s) for seed in SEEDS[1:] for s in SEED_SCALES]
    for name, arm in ARMS.items():
        runs += [(name, seed, scale_name(s)) for seed in SEEDS for s in arm["scales"]]
    return runs


def arm_file(arm, seed, scale, kind):
    """metrics JSON (kind "metrics") or merged npz (kind "samples") of one run; the Table 1 files
    for the first seed of the classifier sweep."""
    ext = "json" if kind == "metrics" else "npz"
    if arm == "classifier" and seed == SEEDS[0]:
        return out(f"{kind}/scale{scale}.{ext}")
    return out(f"arms/{arm}/seed{seed}/{kind}/scale{scale}.{ext}")


def arm_metrics():
    return [arm_file(*run, "metrics") for run in arm_runs()]


def arm_entries():
    """What the comparison reads: one {arm, method, interval, seed, scale, path} per run."""
    entries = []
    for arm, seed, scale in arm_runs():
        c = arm_config(arm)
        entries.append(
            {
                "arm": arm,
                "method": c["method"],
                "interval": c.get("interval"),
                "seed": seed,
                "scale": float(scale),
                "path": arm_file(arm, seed, scale, "metrics"),
            }
        )
    return entries


def arm_targets():
    """Every arms/ shard (a deleted one re-runs its descendants, as final_targets explains) and
    the comparison outputs; nothing when arms are off."""
    if not ARMS_ON:
        return []
    shards = [
        out(f"arms/{arm}/seed{seed}/samples/scale{scale}/shard{k}.npz")
        for arm, seed, scale in arm_runs()
        if not (arm == "classifier" and seed == SEEDS[0])
        for k in SHARDS
    ]
    return [out("comparison.md"), *TRADEOFF_PLOTS, *shards]


TRADEOFF_PLOTS = [
    out(f"plots/tradeoff_{name}.{ext}")
    for name in ("pr", "fid_is")
    for ext in ("png", "svg")
]


def cfg_checkpoint():
    return out("cfg_model/ema.pt")


def arm_sample_inputs(wildcards):
    if arm_config(wildcards.arm)["method"] == "cfg":
        return {"model": cfg_checkpoint()}
    return {"model": diffusion_checkpoint(), "classifier": classifier_checkpoint()}


def guidance_flags(wildcards, input):
    """`--classifier C` or `--guidance cfg` (no classifier), then `--guidance-interval LO HI`."""
    arm = arm_config(wildcards.arm)
    if arm["method"] == "cfg":
        flags = flag_values("--guidance", "cfg")
    else:
        flags = flag_values("--classifier", input.classifier)
    if arm.get("interval"):
        flags += flag_values("--guidance-interval", [float(v) for v in arm["interval"]])
    return flags


def cfg_model_settings():
    """The CFG model is trained like the main one: the diffusion section, then cfg_model's keys
    (label_dropout among them: TRAINING_FLAGS passes it as --label-dropout)."""
    return {**config["diffusion"], **config["cfg_model"]}


def comparison_report_inputs(wildcards):
    """report_html's extra inputs: the comparison table and the trade-off PNGs (none when off)."""
    if not ARMS_ON:
        return {}
    return {
        "comparison": out("comparison.csv"),
        "tradeoff": [p for p in TRADEOFF_PLOTS if p.endswith(".png")],
    }
