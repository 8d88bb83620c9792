# Glue between the config and the rules: the workflow's Python lives in workflow/lib/ (importable,
# torch-free, unit-tested in tests/workflow/test_workflow_lib.py); here it is imported, the config is
# validated, and the names the rules use are bound to this run's config.
import sys
from functools import partial
from pathlib import Path

from snakemake_interface_executor_plugins.settings import DeploymentMethod

# The repository root (rules/ -> workflow/ -> root), so that workflow.lib and the torch-free adm
# registries it reads import even under a Snakemake that does not have the package installed.
REPO = Path(workflow.current_basedir.get_path_or_uri(secret_free=True)).parents[1]
sys.path.insert(0, str(REPO))

from workflow.lib import (
    arms,
    commands,
    config_checks,
    frontier,
    interval_search,
    paths,
    published,
    slurm,
    targets,
    upsample,
)

# A bad config ends the run here, before any job: one line `invalid config: ...`, exit status 1.
config_checks.coerce_pretrained(config)
PRINT_CONFIG = config_checks.pop_print_config(config)
config_checks.validate_or_exit(config, skip_schema=workflow.modifier.skip_validation)
arms.fill_cfg_model_resources(config)

RUN = config["run"]
SAMPLING = config["sampling"]
UPSAMPLE = config["upsample"]
IMAGENET = paths.is_imagenet(config)
SCALES = paths.scale_names(SAMPLING["scales"])
SHARDS = paths.shard_ids(SAMPLING["num_shards"])
UP_SCALES = upsample.scales(config)
UP_SHARDS = upsample.shards(config)
PYTHON = commands.interpreter(
    DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method, REPO
)

out = partial(paths.out, config)
logfile = partial(paths.logfile, config)
benchfile = partial(paths.benchfile, config)
res = partial(slurm.res, config)
slurm_resources = partial(slurm.slurm_resources, config)
launcher = partial(commands.launcher, PYTHON)


wildcard_constraints:
    scale=r"\d+(\.\d+)?",
    shard=r"\d+",
    kind=r"diffusion|classifier",
    arm=r"[A-Za-z][A-Za-z0-9_-]*",
    seed=r"\d+",
    batch=r"[A-Za-z0-9_]+",
    ref=r"[A-Za-z0-9_]+",
