# Helpers shared by the rules: config validation and checks, paths, resources.
import math
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


def one_line_config_error(exc):
    """`config: sampling.scales[0]: -1 is less than the minimum of 0` from snakemake's validate error."""
    text = " ".join(str(a) for a in exc.args)
    message = next(
        (
            l.split(":", 1)[1].strip()
            for l in text.splitlines()
            if l.startswith("ValidationError")
        ),
        text,
    )
    where = next((l for l in text.splitlines() if l.startswith("On instance")), "")
    keys = [k.strip("'\"") for k in re.findall(r"\[([^\]]+)\]", where)]
    where = f"{'.'.join(keys)}: " if keys else ""
    return f"invalid config: {where}{message}"


# `--config pretrained=false` arrives as the string "false": read it as the boolean it means.
if str(config.get("pretrained")).lower() in ("true", "false"):
    config["pretrained"] = str(config["pretrained"]).lower() == "true"

try:
    validate(config, "../schemas/config.schema.yaml")
except WorkflowError as exc:
    raise WorkflowError(one_line_config_error(exc)) from None


RUN = config["run"]
RUN_DIR = f"results/{RUN}"
SAMPLING = config["sampling"]
IMAGENET = config["dataset"] == "imagenet"
PRETRAINED = IMAGENET and config["pretrained"]


def scale_name(scale):
    """File-name form of a guidance scale: 0, 0.5, 1, 7.5, 10."""
    return f"{float(scale):g}"


def check_config(cfg):
    """Cross-field checks the schema cannot express; each failure is one clear line."""
    scales = cfg["sampling"]["scales"]
    if not scales:
        raise WorkflowError("invalid config: sampling.scales is empty")
    if any(not math.isfinite(s) or s < 0 for s in scales):
        raise WorkflowError(
            f"invalid config: sampling.scales must be finite and >= 0, got {scales}"
        )
    names = [scale_name(s) for s in scales]
    if len(set(names)) != len(names):
        raise WorkflowError(f"invalid config: sampling.scales has duplicates: {scales}")
    n, shards = cfg["sampling"]["num_samples"], cfg["sampling"]["num_shards"]
    if shards > n:
        raise WorkflowError(
            f"invalid config: sampling.num_shards ({shards}) > sampling.num_samples ({n})"
        )
    if cfg["dataset"] == "digits" and cfg["pretrained"]:
        raise WorkflowError(
            "invalid config: pretrained: true needs dataset: imagenet (no released demo model)"
        )
    if cfg["dataset"] == "imagenet" and not cfg["pretrained"]:
        folder = cfg["imagenet_dir"]
        if not folder:
            raise WorkflowError(
                "invalid config: dataset imagenet with pretrained: false needs imagenet_dir"
            )
        if not Path(folder).is_dir():
            raise WorkflowError(
                f"invalid config: imagenet_dir {folder!r} is not a directory"
            )
    if cfg["dataset"] == "imagenet" and cfg["pretrained"]:
        for kind in ("diffusion", "classifier"):
            value = cfg["checkpoints"][kind]
            if "/" in value and not Path(value).is_file():
                raise WorkflowError(
                    f"invalid config: checkpoints.{kind}: no such file {value!r}"
                )
    if cfg["dataset"] == "digits" and cfg["reference"]["source"] != "build":
        raise WorkflowError(
            "invalid config: the digits demo builds its reference batch (reference.source: build)"
        )


check_config(config)

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


def launcher(wildcards, resources):
    """torchrun over the job's GPUs for multi-GPU training; plain python otherwise."""
    if resources.gpu > 1:
        return f"torchrun --standalone --nproc_per_node {resources.gpu}"
    return "python"


def local_checkpoint(kind):
    """A configured checkpoint that is a local file path (contains '/'), else None (download it)."""
    value = config["checkpoints"][kind]
    return value if "/" in value else None


def checkpoint_url(wildcards):
    """URL of a released checkpoint: base_url / file name."""
    base = config["checkpoints"]["base_url"].rstrip("/")
    return f"{base}/{config['checkpoints'][wildcards.kind]}"


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
}


def optimisation_flags(section):
    """`--model-preset P` plus a flag for every training key set in config[section]."""
    c = config[section]
    flags = [f"--model-preset {c['preset']}"]
    for key, flag in TRAINING_FLAGS.items():
        value = c.get(key)
        if isinstance(value, list):
            flags.append(f"{flag} {' '.join(str(v) for v in value)}")
        elif value is not None:
            flags.append(f"{flag} {value}")
    if "random_flip" in c:
        flags.append("--random-flip" if c["random_flip"] else "--no-random-flip")
    return " ".join(flags)


def diffusion_checkpoint():
    if PRETRAINED:
        return local_checkpoint("diffusion") or out("pretrained/diffusion.pt")
    return out("diffusion/ema.pt")


def classifier_checkpoint():
    if PRETRAINED:
        return local_checkpoint("classifier") or out("pretrained/classifier.pt")
    return out("classifier/model.pt")


def respacing():
    """Respacing spec for `adm sample`: "25" (DDPM, 25 steps) or "ddim25"."""
    steps = SAMPLING["steps"]
    return f"ddim{steps}" if SAMPLING["sampler"] == "ddim" else str(steps)


def preset_flags():
    """OpenAI's released files carry no JSON config: name their presets."""
    if not PRETRAINED:
        return ""
    return f"--model-preset {config['diffusion']['preset']} --classifier-preset {config['classifier']['preset']}"


def featurenet_flags():
    """`--seed S` plus `--epochs` / `--min-accuracy` when the config sets them."""
    c = config["featurenet"]
    flags = [f"--seed {c['seed']}"]
    if "epochs" in c:
        flags.append(f"--epochs {c['epochs']}")
    if "min_accuracy" in c:
        flags.append(f"--min-accuracy {c['min_accuracy']}")
    return " ".join(flags)


def evaluator_flags():
    """Demo: our trained feature net, labelled demo; ImageNet: Inception-V3 from the cache dir."""
    c = config["evaluation"]
    flags = [f"--bootstrap {c['bootstrap']}"]
    if c["feature_cache"]:
        flags.append(f"--feature-cache {out('feature_cache')}")
    if IMAGENET:
        flags.append(f"--cache-dir {c['cache_dir']}")
    else:
        flags.append(f"--graph {out('featurenet/graph.pb')} --label-demo")
    return " ".join(flags)


def evaluator_inputs(wildcards):
    return {} if IMAGENET else {"graph": out("featurenet/graph.pb")}


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
    return [out("table1.md"), out("report.html"), "results/report.html", *shards]
