"""Every program's arguments and the interpreter that runs it.

Config values are data, never code: every helper here returns an argument LIST, and every field of
a rule's `shell:` command is written `{...:q}`, so Snakemake shell-quotes each element
(shlex.quote) and bash passes it to the program as one argument, unexpanded.
tests/workflow/test_workflow_security.py checks both (a lint of the rule files, and hostile strings in
every config field).
"""

from __future__ import annotations

import os
import sys

from workflow.lib.paths import is_imagenet, is_pretrained, out
from workflow.lib.slurm import gpus_granted

# ---------------------------------------------------------------- which Python runs the programs


def interpreter(use_conda: bool, repo) -> list[str]:
    """The interpreter of the environment Snakemake was started from (so `.venv/bin/snakemake`
    works without an activated venv, and a SLURM job uses the submitter's interpreter), or, under
    `--sdm conda`, the `python` of the rule's activated conda env. The conda envs do not install
    this package, so the repository goes on PYTHONPATH there."""
    if use_conda:
        path = os.pathsep.join(p for p in (str(repo), os.environ.get("PYTHONPATH")) if p)
        return ["env", f"PYTHONPATH={path}", "python"]
    return [stable_interpreter_path()]


def stable_interpreter_path() -> str:
    """<env>/bin/python rather than sys.executable: `.venv/bin/snakemake` runs as
    .venv/bin/python3.11, `.venv/bin/python -m snakemake` as .venv/bin/python, and the path is a
    rule param, so a changed spelling would re-run every job."""
    candidate = os.path.join(sys.prefix, "bin", "python")
    same = os.path.exists(candidate) and os.path.samefile(candidate, sys.executable)
    return candidate if same else sys.executable


def launcher(python: list[str], wildcards, resources) -> list[str]:
    """torchrun over the job's GPUs for multi-GPU training, plain Python otherwise. torchrun is
    called as a module of the same interpreter: a `torchrun` on PATH may belong to another one."""
    gpus = gpus_granted(resources)
    if gpus > 1:
        return python + ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus)]
    return python


# ---------------------------------------------------------------- program arguments (lists)


def flag_values(flag: str, value) -> list[str]:
    """`--flag v` (or `--flag v1 v2` for a list) as argument-list items."""
    values = value if isinstance(value, list) else [value]
    return [flag, *(str(v) for v in values)]


def data_source_args(config: dict) -> list[str]:
    if is_imagenet(config):
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


def training_flags(settings: dict) -> list[str]:
    """`--model-preset P` plus a flag for every training key set in the settings dict."""
    flags = flag_values("--model-preset", settings["preset"])
    for key, flag in TRAINING_FLAGS.items():
        if settings.get(key) is not None:
            flags += flag_values(flag, settings[key])
    if "random_flip" in settings:
        flags.append("--random-flip" if settings["random_flip"] else "--no-random-flip")
    return flags


def local_checkpoint(config: dict, kind: str) -> str | None:
    """A configured checkpoint that is a local file path (contains '/'), else None (download it)."""
    value = config["checkpoints"][kind]
    return value if "/" in value else None


def diffusion_checkpoint(config: dict) -> str:
    if is_pretrained(config):
        return local_checkpoint(config, "diffusion") or out(config, "pretrained/diffusion.pt")
    return out(config, "diffusion/ema.pt")


def classifier_checkpoint(config: dict) -> str:
    if is_pretrained(config):
        return local_checkpoint(config, "classifier") or out(config, "pretrained/classifier.pt")
    return out(config, "classifier/model.pt")


def checkpoint_url(config: dict, wildcards) -> str:
    """URL of a released checkpoint: base_url / file name."""
    base = config["checkpoints"]["base_url"].rstrip("/")
    return f"{base}/{config['checkpoints'][wildcards.kind]}"


def preset_flags(config: dict) -> list[str]:
    """OpenAI's released files carry no JSON config: name their presets."""
    if not is_pretrained(config):
        return []
    return flag_values("--model-preset", config["diffusion"]["preset"]) + flag_values(
        "--classifier-preset", config["classifier"]["preset"]
    )


def sampler_flags(config: dict) -> list[str]:
    """The preset names (preset_flags) plus `--fast MODE` when sampling.fast is not the exact
    default, and `--sampler NAME` for a DPM-Solver++ sampler. At the default no flag is added, so the sampling command and its parameters stay
    those of runs made before the option existed: Snakemake's code and params rerun triggers
    re-sample nothing in an existing results folder, and a changed mode does re-sample."""
    mode = config["sampling"]["fast"]
    sampler = config["sampling"]["sampler"]
    # a solver is named (ddpm/ddim follow from the respacing spec, so their commands are unchanged)
    solver = flag_values("--sampler", sampler) if sampler.startswith("dpmpp") else []
    return preset_flags(config) + ([] if mode == "exact" else flag_values("--fast", mode)) + solver


def featurenet_flags(config: dict) -> list[str]:
    """`--seed S` plus `--epochs` / `--min-accuracy` when the config sets them."""
    c = config["featurenet"]
    flags = flag_values("--seed", c["seed"])
    for key in ("epochs", "min_accuracy"):
        if key in c:
            flags += flag_values(f"--{key.replace('_', '-')}", c[key])
    return flags


def evaluator_flags(config: dict) -> list[str]:
    """Demo: our trained feature net, labelled demo; ImageNet: Inception-V3 from the cache dir."""
    c = config["evaluation"]
    flags = flag_values("--bootstrap", c["bootstrap"])
    if c["feature_cache"]:
        flags += flag_values("--feature-cache", out(config, "feature_cache"))
    # ImageNet: fetched once on the submit host (download_graph), pinned by its lock file
    if is_imagenet(config):
        flags += flag_values("--graph", out(config, "inception/classify_image_graph_def.pb"))
        flags += flag_values("--graph-lock", out(config, "provenance/feature_graph.lock"))
    else:
        flags += flag_values("--graph", out(config, "featurenet/graph.pb")) + ["--label-demo"]
    return flags


def evaluator_inputs(config: dict, wildcards=None) -> dict[str, str]:
    if is_imagenet(config):
        return {
            "graph": out(config, "inception/classify_image_graph_def.pb"),
            "graph_lock": out(config, "provenance/feature_graph.lock"),
        }
    return {"graph": out(config, "featurenet/graph.pb")}


def dinov2_images(config: dict, wildcards) -> str:
    """The npz whose DINOv2 features `dinov2/<name>.npz` holds: the reference or a merged scale."""
    if wildcards.name == "reference":
        return out(config, "reference/ref.npz")
    return out(config, f"samples/{wildcards.name}.npz")


def dinov2_flags(config: dict) -> list[str]:
    """`adm features-dinov2` flags: the run's torch device, batch size, the run's feature cache."""
    c = config["evaluation"]
    flags = flag_values("--device", config["device"]) + flag_values("--batch-size", c["dinov2_batch_size"])
    if c["feature_cache"]:
        flags += flag_values("--cache-dir", out(config, "feature_cache"))
    return flags + ["--no-progress"]


def fd_dinov2_flags(config: dict) -> list[str]:
    """`evaluations.fd_features` flags: the config's sha256 pin of the DINOv2 weights, when set (the
    record then says whether the weights have it; unpinned FD_DINOv2 is labelled in the reports)."""
    pin = config["evaluation"]["dinov2_sha256"]
    return flag_values("--pinned-sha256", pin) if pin else []


def fd_dinov2_metrics(config: dict, scales: list[str]) -> list[str]:
    """The FD_DINOv2 records Table 1 reads beside the metrics (none when the metric is off)."""
    if not config["evaluation"]["fd_dinov2"]:
        return []
    return [out(config, f"metrics/fd_dinov2_scale{s}.json") for s in scales]


def training_logs(config: dict, wildcards=None) -> dict[str, str]:
    """Training curves shown in the report (none for released checkpoints)."""
    if is_pretrained(config):
        return {}
    return {
        "diffusion_log": out(config, "diffusion/log.csv"),
        "classifier_log": out(config, "classifier/log.csv"),
    }
