"""What runs is the config the user named: the README's commands, typed where users type them.

Every `snakemake` command in a bash block of README.md and config/README.md runs from the root of
a fresh copy of the repository (tracked and untracked-but-not-ignored files, as a clone has them),
as a dry run with `--config print_config=1`, and its resolved config must equal the config files it
names, layered in order, plus the command line's `--config` values and the schema's defaults — key
for key (the one value the rules derive, the CFG model's resources, derived here alike). With no `--configfile`, the demo config is that file. Every config and overlay shipped in
the repository is resolved the same way. The smoke config's real run from a clone's root is the
session's `smoke` fixture (tests/conftest.py).

Mutant tried: `configfile: "config/config.yaml"` back in workflow/Snakefile (the demo merged under
every `--configfile`): the paper command resolved `classifier.steps: 300`, `sampling.seeds`, the
demo's guidance arms (and refused to run), and every layered-config test here failed.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import fresh_clone

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEMO = "config/config.yaml"
PAPER = "config/imagenet128.yaml"
PAPER_COMMAND = "snakemake --workflow-profile profiles/slurm --configfile config/imagenet128.yaml"

# Every config and overlay shipped in the repository, as it is meant to be layered.
LAYERINGS = [
    [],
    [DEMO],
    [PAPER],
    [PAPER, ".test/config/rehearsal.yaml"],
    [PAPER, ".test/config/rehearsal.yaml", ".test/config/rehearsal_upsample.yaml"],
    [".test/config/config.yaml"],
]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    return fresh_clone(tmp_path_factory.mktemp("clone") / "adm-bench")


def readme_commands() -> list[str]:
    """The `snakemake ...` commands of the bash blocks of the READMEs users read (comments cut,
    `a && b` split, a venv path before `snakemake` dropped)."""
    commands = []
    for doc in ("README.md", "config/README.md"):
        for block in re.findall(r"```bash\n(.*?)```", (ROOT / doc).read_text(), re.S):
            for line in block.splitlines():
                for part in line.split("&&"):
                    part = re.sub(r"\s#.*$", "", part).strip()
                    part = re.sub(r"^\S*/snakemake\b", "snakemake", part)
                    if part.startswith("snakemake"):
                        commands.append(part)
    return list(dict.fromkeys(commands))  # each command once, in the order the READMEs give them


def user_snakemake(where: Path, argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`snakemake ARGS` as a user with the venv's bin on PATH runs it, in `where`: no --snakefile,
    no --directory."""
    assert argv[0] == "snakemake"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = [str(Path(sys.executable).parent / "snakemake"), *argv[1:]]
    return subprocess.run(cmd, cwd=where, env=env, capture_output=True, text=True, timeout=timeout)


def resolved(where: Path, argv: list[str]) -> dict:
    """The config a command would run, printed by the workflow itself (`print_config=1`)."""
    res = user_snakemake(where, [*with_config(argv, "print_config=1"), "-n"])
    assert res.returncode == 0, (argv, res.stderr[-3000:])
    return yaml.safe_load(res.stdout)


def with_config(argv: list[str], *pairs: str) -> list[str]:
    """argv with KEY=VALUE pairs added to its `--config` (Snakemake takes one such option)."""
    if "--config" not in argv:
        return [*argv, "--config", *pairs]
    i = argv.index("--config") + 1
    return [*argv[:i], *pairs, *argv[i:]]


def configfiles(argv: list[str]) -> list[str]:
    """The files after `--configfile`/`--configfiles`, up to the next option."""
    files, taking = [], False
    for arg in argv:
        if arg in ("--configfile", "--configfiles"):
            taking = True
        elif arg.startswith("-"):
            taking = False
        elif taking:
            files.append(arg)
    return files


def config_pairs(argv: list[str]) -> dict:
    """`--config k=v ...` as Snakemake reads it: YAML values."""
    out, taking = {}, False
    for arg in argv:
        if arg == "--config":
            taking = True
        elif arg.startswith("-"):
            taking = False
        elif taking:
            key, value = arg.split("=", 1)
            out[key] = yaml.safe_load(value)
    return out


def layered(base: Path, files: list[str], overrides: dict | None = None) -> dict:
    """Files merged in order (nested dicts key by key, everything else replaced, as Snakemake
    does), then the overrides, then the schema's defaults; the demo config when no file is given."""
    from snakemake.utils import validate

    cfg: dict = {}
    for name in files or [DEMO]:
        merge(cfg, yaml.safe_load((base / name).read_text()))
    merge(cfg, overrides or {})
    if isinstance(cfg.get("pretrained"), str):  # `--config pretrained=false` (config_checks.coerce_pretrained)
        cfg["pretrained"] = cfg["pretrained"].lower() == "true"
    validate(cfg, str(SCHEMA))  # fills in the schema's defaults
    if any(arm["method"] == "cfg" for arm in cfg["guidance_arms"]):  # arms.fill_cfg_model_resources
        cfg["resources"].setdefault("train_cfg_model", cfg["resources"]["train_diffusion"])
    return cfg


def merge(into: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def diff(got: dict, want: dict, where: str = "") -> list[str]:
    """The keys whose values differ, dotted, for a readable failure."""
    out = []
    for key in sorted(set(got) | set(want), key=str):
        a, b = got.get(key, "<absent>"), want.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += diff(a, b, f"{where}{key}.")
        elif a != b:
            out.append(f"{where}{key}: runs {a!r}, expected {b!r}")
    return out


# ------------------------------------------------------------------ every shipped config and overlay


def test_every_shipped_config_is_covered():
    shipped = {str(p.relative_to(ROOT)) for p in [*ROOT.glob("config/*.yaml"), *ROOT.glob(".test/config/*.yaml")]}
    covered = {name for files in LAYERINGS for name in files}
    assert shipped == covered, shipped ^ covered


@pytest.mark.parametrize("files", LAYERINGS, ids=lambda f: "+".join(Path(n).stem for n in f) or "none")
def test_resolved_config_is_the_named_files_plus_schema_defaults(clone, files):
    argv = ["snakemake", "--cores", "1"] + (["--configfile", *files] if files else [])
    got = resolved(clone, argv)
    assert not diff(got, layered(clone, files)), "\n".join(diff(got, layered(clone, files)))


def test_config_overrides_apply_over_the_demo_without_a_configfile(clone):
    """`--config` alone still changes the demo (the demo config is loaded when no file is named)."""
    got = resolved(clone, ["snakemake", "--cores", "1", "--config", "run=mine"])
    want = layered(clone, [], {"run": "mine"})
    assert got == want and got["run"] == "mine" and got["classifier"]["steps"] == 300


# ------------------------------------------------------------------ the paper command


def test_readme_paper_command_is_the_paper_config(clone):
    assert PAPER_COMMAND in readme_commands()
    argv = shlex.split(PAPER_COMMAND)
    got = resolved(clone, argv)
    assert not diff(got, layered(clone, [PAPER])), "\n".join(diff(got, layered(clone, [PAPER])))
    # What leaked from the demo before: none of it may be there.
    assert "steps" not in got["classifier"] and "lr_anneal_steps" not in got["classifier"]
    assert "steps" not in got["diffusion"]
    assert "seeds" not in got["sampling"] and "seed_scales" not in got["sampling"]
    assert got["guidance_arms"] == [] and got["run"] == "imagenet128"

    res = user_snakemake(clone, [*argv, "-n"])
    assert res.returncode == 0, res.stderr[-3000:]
    from test_workflow import job_counts

    counts = job_counts(res.stdout)
    assert counts["sample"] == 80, counts  # 8 scales x 10 shards
    assert counts["evaluate"] == 8 and counts["merge_shards"] == 8, counts
    assert not {"arm_sample", "arm_evaluate", "comparison", "featurenet", "train_classifier", "train_diffusion"} & set(
        counts
    ), counts
    assert "is extended by additional config" not in res.stdout + res.stderr


def test_resolved_config_written_beside_the_results(clone):
    """The dry run plans `results/<run>/config.yaml` (the rule writes it: the smoke run checks its
    content in tests/workflow/test_workflow.py)."""
    res = user_snakemake(clone, [*shlex.split(PAPER_COMMAND), "-n"])
    assert "results/imagenet128/config.yaml" in res.stdout


# ------------------------------------------------------------------ every README command


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_resolves_to_what_it_names(clone, command, tmp_path):
    """Each command's config, dry-run from the clone's root. A command that names a folder this
    machine has not got (an ImageNet train folder) must be refused in one line; the same command
    with that folder present resolves like the others."""
    argv = shlex.split(command)
    pairs = config_pairs(argv)
    if "imagenet_dir" in pairs and not Path(pairs["imagenet_dir"]).is_dir():
        res = user_snakemake(clone, [*argv, "-n"])
        assert res.returncode == 1 and res.stderr.strip().splitlines()[-1] == (
            f"invalid config: imagenet_dir {pairs['imagenet_dir']!r} is not a directory"
        ), res.stderr
        argv = [a.replace(pairs["imagenet_dir"], str(tmp_path)) for a in argv]
        pairs["imagenet_dir"] = str(tmp_path)
    got = resolved(clone, argv)
    want = layered(clone, configfiles(argv), pairs)
    assert not diff(got, want), "\n".join(diff(got, want))
    if got["dataset"] == "imagenet" and not got["pretrained"]:
        # Training from scratch takes the training presets' schedule, never the demo's 300 steps.
        assert "steps" not in got["classifier"] and "steps" not in got["diffusion"]
