"""What each rule's job asks a SLURM cluster for, from the config (data, never code): the GPU
request in the form the site accepts, and the rule's partition, account and CPUs per GPU.

snakemake-executor-plugin-slurm turns job resources into sbatch flags: gpu=N -> --gpus=N,
gpu=N + gpu_model=M -> --gpus=M:N, gres="gpu[:M]:N" -> --gres=gpu[:M]:N, cpus_per_gpu=C ->
--cpus-per-gpu=C (instead of --cpus-per-task=threads), slurm_partition -> -p,
slurm_account -> -A. It treats gpu/gpu_model and gres as mutually exclusive, and with both set it
passes both flags (which sites reject), so a job carries exactly one form, or none for CPU jobs:
a gpu_model alone would make the plugin ask for one GPU of that model.
"""

from __future__ import annotations

# per-rule keys of config.resources passed to the plugin unchanged when set
SLURM_RULE_KEYS = ("cpus_per_gpu", "slurm_partition", "slurm_account")


def res(config: dict, rule_name: str, key: str):
    """Per-rule resource from config.resources (the schema fills the defaults)."""
    return config["resources"][rule_name][key]


def gpus_per_rule(config: dict) -> dict[str, int]:
    return {name: r["gpu"] for name, r in config["resources"].items()}


def gpu_request(count: int, form: str, model: str) -> dict:
    """Resources asking for `count` GPUs (of type `model`, "" = any) in `form` ("gpus" | "gres")."""
    if count == 0:
        return {}
    if form == "gres":
        return {"gres": ":".join(["gpu", *([model] if model else []), str(count)])}
    return {"gpu": count, **({"gpu_model": model} if model else {})}


def slurm_resources(config: dict, rule_name: str) -> dict:
    """The SLURM part of a rule's `resources:` (spread into it with `**`)."""
    r = config["resources"][rule_name]
    s = config["slurm"]
    extra = {key: r[key] for key in SLURM_RULE_KEYS if key in r}
    return gpu_request(r["gpu"], s["gpu_request"], s["gpu_model"]) | extra


def gpus_granted(resources) -> int:
    """GPUs of a job, whichever form asked for them (torchrun's --nproc_per_node follows it, also
    after a `--set-resources` override)."""
    if resources.get("gpu"):
        return int(resources.get("gpu"))
    for item in str(resources.get("gres") or "").split(","):
        name, *rest = item.strip().split(":")
        if name == "gpu":
            return int(rest[-1]) if rest and rest[-1].isdigit() else 1
    return 0
