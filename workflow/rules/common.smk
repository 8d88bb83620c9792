# Helpers shared by the rules: paths, resources, the interpreter, and every program's arguments.
#
# Config values are data, never code: every helper below returns an argument LIST, and every field
# of a `shell:` command is written `{...:q}`, so Snakemake shell-quotes each element (shlex.quote)
# and bash passes it to the program as one argument, unexpanded. tests/test_workflow_security.py
# checks both (a lint of the rule files, and hostile strings in every config field).
import os
import sys

from snakemake_interface_executor_plugins.settings import DeploymentMethod

RUN = config["run"]
RUN_DIR = f"results/{RUN}"
SAMPLING = config["sampling"]
IMAGENET = config["dataset"] == "imagenet"
PRETRAINED = IMAGENET and config["pretrained"]
SCALES = [scale_name(s) for s in SAMPLING["scales"]]
SHARDS = list(range(SAMPLING["num_shards"]))


wildcard_constraints:
    scale=r"\d+(\.\d+)?",
    shard=r"\d+",
    kind=r"diffusion|classifier",


def out(path):
    """Path of a run output: results/<run>/<path>."""
    return f"{RUN_DIR}/{path}"


def logfile(path):
    return f"{RUN_DIR}/logs/{path}"


def benchfile(path):
    return f"{RUN_DIR}/benchmarks/{path}"


def res(rule_name, key):
    """Per-rule resource from config.resources (schema fills the defaults)."""
    return config["resources"][rule_name][key]


def gpus_per_rule():
    return {name: r["gpu"] for name, r in config["resources"].items()}


# ---------------------------------------------------------------- which Python runs the programs


def python():
    """The interpreter of the environment Snakemake was started from (so `.venv/bin/snakemake`
    works without an activated venv, and a SLURM job uses the submitter's interpreter), or, under
    `--sdm conda`, the `python` of the rule's activated conda env. The conda envs do not install
    this package, so the repository goes on PYTHONPATH there."""
    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
        path = os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p
        )
        return ["env", f"PYTHONPATH={path}", "python"]
    return [stable_interpreter_path()]


def stable_interpreter_path():
    """<env>/bin/python rather than sys.executable: `.venv/bin/snakemake` runs as
    .venv/bin/python3.11, `.venv/bin/python -m snakemake` as .venv/bin/python, and the path is a
    rule param, so a changed spelling would re-run every job."""
    candidate = os.path.join(sys.prefix, "bin", "python")
    same = os.path.exists(candidate) and os.path.samefile(candidate, sys.executable)
    return candidate if same else sys.executable


def launcher(wildcards, resources):
    """torchrun over the job's GPUs for multi-GPU training, plain Python otherwise. torchrun is
    called as a module of the same interpreter: a `torchrun` on PATH may belong to another one.
    """
    if gpus_granted(resources) > 1:
        return python() + [
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(gpus_granted(resources)),
        ]
    return python()


# ---------------------------------------------------------------- program arguments (lists)


def flag_values(flag, value):
    """`--flag v` (or `--flag v1 v2` for a list) as argument-list items."""
    values = value if isinstance(value, list) else [value]
    return [flag, *(str(v) for v in values)]


def data_source_args():
    if IMAGENET:
        return flag_values("--dataset", "imagenet") + [
            *flag_values("--data-dir", config["imagenet_dir"]),
            *flag_values("--image-size", config["image_size"]),
        ]
    return flag_values("--dataset", "digits")


# config key -> command-line flag of `adm train-diffusion` / `adm train-classifier`
TRAINING_FLAGS = {
    "train_preset": "--train-preset",
    "steps": "--steps",
    "batch_size": "--batch-size",
    "microbatch": "--microbatch",
    "lr": "--lr",
    "weight_decay": "--weight-decay",
    "ema_rate": "--ema-rate",
    "lr_anneal_steps": "--lr-anneal-steps",
    "schedule_sampler": "--schedule-sampler",
    "grad_clip": "--grad-clip",
    "precision": "--precision",
    "log_interval": "--log-interval",
    "save_interval": "--save-interval",
    "eval_interval": "--eval-interval",
    "seed": "--seed",
    "label_dropout": "--label-dropout",  # train-diffusion only (the cfg_model section)
}


def optimisation_flags(section):
    """`--model-preset P` plus a flag for every training key set in config[section]."""
    return training_flags(config[section])


def training_flags(c):
    """`--model-preset P` plus a flag for every training key set in the settings dict `c`."""
    flags = flag_values("--model-preset", c["preset"])
    for key, flag in TRAINING_FLAGS.items():
        if c.get(key) is not None:
            flags += flag_values(flag, c[key])
    if "random_flip" in c:
        flags.append("--random-flip" if c["random_flip"] else "--no-random-flip")
    return flags


def diffusion_checkpoint():
    if PRETRAINED:
        return local_checkpoint("diffusion") or out("pretrained/diffusion.pt")
    return out("diffusion/ema.pt")


def classifier_checkpoint():
    if PRETRAINED:
        return local_checkpoint("classifier") or out("pretrained/classifier.pt")
    return out("classifier/model.pt")


def local_checkpoint(kind):
    """A configured checkpoint that is a local file path (contains '/'), else None (download it)."""
    value = config["checkpoints"][kind]
    return value if "/" in value else None


def checkpoint_url(wildcards):
    """URL of a released checkpoint: base_url / file name."""
    base = config["checkpoints"]["base_url"].rstrip("/")
    return f"{base}/{config['checkpoints'][wildcards.kind]}"


def respacing():
    return respacing_spec(SAMPLING)


def preset_flags():
    """OpenAI's released files carry no JSON config: name their presets."""
    if not PRETRAINED:
        return []
    return flag_values("--model-preset", config["diffusion"]["preset"]) + flag_values(
        "--classifier-preset", config["classifier"]["preset"]
    )


def sampler_flags():
    """The preset names (preset_flags) plus `--fast MODE` when sampling.fast is not the exact
    default. At the default no flag is added, so the sampling command and its parameters stay
    those of runs made before the option existed: Snakemake's code and params rerun triggers
    re-sample nothing in an existing results folder, and a changed mode does re-sample.
    """
    mode = SAMPLING["fast"]
    return preset_flags() + ([] if mode == "exact" else flag_values("--fast", mode))


def featurenet_flags():
    """`--seed S` plus `--epochs` / `--min-accuracy` when the config sets them."""
    c = config["featurenet"]
    flags = flag_values("--seed", c["seed"])
    for key in ("epochs", "min_accuracy"):
        if key in c:
            flags += flag_values(f"--{key.replace('_', '-')}", c[key])
    return flags


def evaluator_flags():
    """Demo: our trained feature net, labelled demo; ImageNet: Inception-V3 from the cache dir."""
    c = config["evaluation"]
    flags = flag_values("--bootstrap", c["bootstrap"])
    if c["feature_cache"]:
        flags += flag_values("--feature-cache", out("feature_cache"))
    # ImageNet: fetched once on the submit host (download_graph), pinned by its lock file
    if IMAGENET:
        flags += flag_values("--graph", out("inception/classify_image_graph_def.pb"))
        flags += flag_values("--graph-lock", out("provenance/feature_graph.lock"))
    else:
        flags += flag_values("--graph", out("featurenet/graph.pb")) + ["--label-demo"]
    return flags


def evaluator_inputs(wildcards):
    if IMAGENET:
        return {
            "graph": out("inception/classify_image_graph_def.pb"),
            "graph_lock": out("provenance/feature_graph.lock"),
        }
    return {"graph": out("featurenet/graph.pb")}


def training_logs(wildcards):
    """Training curves shown in the report (none for released checkpoints)."""
    if PRETRAINED:
        return {}
    return {
        "diffusion_log": out("diffusion/log.csv"),
        "classifier_log": out("classifier/log.csv"),
    }


def final_targets():
    """The report, plus every shard: Snakemake does not remake a missing intermediate file whose
    consumers are up to date, so naming the shards makes a deleted shard re-run (and, through
    its merge, that scale's evaluation and the report)."""
    shards = expand(
        out("samples/scale{scale}/shard{shard}.npz"), scale=SCALES, shard=SHARDS
    )
    return [
        out("table1.md"),
        out("config.yaml"),  # the resolved config, beside the results
        out("report.html"),
        "results/report.html",
        *shards,
        *arm_targets(),  # guidance arms and seed sets (arms.smk); none when they are off
        *upsample_targets(),  # the upsampling stage (upsample.smk); none when it is off
    ]
