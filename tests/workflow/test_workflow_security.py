"""Config values are data, never code, and the rules run the interpreter Snakemake was
started from.

- every field of every `shell:` command is shell-quoted (`{...:q}`), checked on the rule files;
- hostile strings in every string field of the config: the schema refuses them with ONE line on
  stderr, or, where a value may be any path, the value reaches the program as one argument — the
  exact command Snakemake prints is run by bash with an argv recorder in place of Python, and a
  real `prepare_data` job reads an ImageNet folder whose name is a shell command;
- no marker file is ever created;
- preset names in the schema are the registry's; a bad `sampling.steps` fails before training;
- an interpreter whose path holds a space and `$(...)` runs a real job.

Mutants tried (each made a test here fail): `{input.model}` without `:q` in sample.smk
(test_every_shell_field_is_quoted; test_hostile_paths_stay_one_argument, whose printed command then
no longer parses into one argument per value); the path pattern without its `(?!-)` look-ahead
(…refused_by_the_schema[*-dash]); the enum dropped from diffusion.preset
(…[diffusion.preset-shell], test_schema_preset_enums_are_the_registries); commands.interpreter() returning
["python"], the first `python` on PATH (test_interpreter_path_with_space); config_checks.check_models() not
called (test_impossible_sampling_steps, test_preset_for_another_image_size).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from test_workflow import IMAGENET, ROOT, SMOKE, snakemake, write_config

SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
RULES = sorted((ROOT / "workflow" / "rules").glob("*.smk"))

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def hostile(marker: Path) -> dict[str, str]:
    """Strings that run `touch MARKER` (in the job's working directory, marker.parent) if a shell
    ever expands them, plus two that only a pattern stops: a newline (splits a command) and a
    leading dash (read as an option). No '/', so each can also name one file or folder."""
    m = marker.name
    return {
        "shell": f"x $(touch {m}) `touch {m}`; touch {m} # ' \"",
        "newline": f"x\ntouch {m}",
        "dash": f"--out={m}",
    }


# Fields whose value may be any path: the schema cannot refuse `$(...)` there, so quoting must hold.
FREE_PATHS = {
    "imagenet_dir",
    "checkpoints.diffusion",
    "checkpoints.classifier",
    "evaluation.cache_dir",
    "upsample.checkpoint",
}


def string_fields(schema: dict, prefix: str = "") -> list[str]:
    """Dotted names of every string-valued key of the config schema ($refs followed)."""
    names = []
    node = dict(schema)
    while "$ref" in node:
        target = SCHEMA  # a JSON pointer: "#/$defs/path", "#/$defs/optimisation/properties/steps"
        for part in node.pop("$ref").removeprefix("#/").split("/"):
            target = target[part]
        props = {
            k: {**target.get("properties", {}).get(k, {}), **v}
            for k, v in {**target.get("properties", {}), **node.get("properties", {})}.items()
        }
        node = {**target, **node, "properties": props}
    types = node.get("type", [])
    if prefix and ("string" in types if isinstance(types, list) else types == "string"):
        names.append(prefix)
    for key, sub in node.get("properties", {}).items():
        names += string_fields(sub, f"{prefix}.{key}" if prefix else key)
    return names


def set_field(cfg: dict, dotted: str, value) -> dict:
    node = cfg
    *parents, last = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return cfg


def shell_strings(path: Path) -> list[str]:
    """The text of every `shell:` directive of a rule file (adjacent string literals joined)."""
    lines, out = path.read_text().splitlines(), []
    for i, line in enumerate(lines):
        if line.strip() == "shell:":
            parts = []
            for nxt in lines[i + 1 :]:
                m = re.fullmatch(r'\s*"(.*)"\s*', nxt)
                if not m:
                    break
                parts.append(m.group(1))
            out.append("".join(parts))
    return out


# ---------------------------------------------------------------- static checks


def test_every_shell_field_is_quoted():
    commands = [c for p in RULES for c in shell_strings(p)]
    assert len(commands) >= 9  # prepare_data .. publish_report: the parser found them all
    for command in commands:
        fields = re.findall(r"\{([^{}]*)\}", command)
        assert fields, command
        unquoted = [f for f in fields if not f.endswith(":q")]
        assert not unquoted, f"unquoted {unquoted} in: {command}"
        assert command.startswith(("exec {params.python:q}", "exec {params.launcher:q}", "exec cp --")), command


def test_schema_preset_enums_are_the_registries():
    from adm.nets.presets import CLASSIFIER_PRESETS, UNET_PRESETS
    from adm.training.presets import TRAIN_PRESETS

    props = SCHEMA["properties"]
    assert set(props["diffusion"]["properties"]["preset"]["enum"]) == {
        n for n, c in UNET_PRESETS.items() if not c.super_res
    }
    assert set(props["classifier"]["properties"]["preset"]["enum"]) == set(CLASSIFIER_PRESETS)
    train = SCHEMA["$defs"]["optimisation"]["properties"]["train_preset"]["enum"]
    assert set(train) == set(TRAIN_PRESETS)


def test_string_fields_are_found():
    fields = set(string_fields(SCHEMA))
    assert FREE_PATHS <= fields
    assert {"run", "diffusion.preset", "classifier.train_preset", "reference.url", "sampling.labels"} <= fields


# ---------------------------------------------------------------- hostile strings, dry runs


def cases():
    for field in string_fields(SCHEMA):
        kinds = ["shell"]
        if field in FREE_PATHS or field in ("run", "reference.url", "checkpoints.base_url"):
            kinds += ["newline", "dash"]
        for kind in kinds:
            if field in FREE_PATHS and kind == "shell":
                continue  # accepted by design: test_hostile_paths_stay_one_argument
            yield pytest.param(field, kind, id=f"{field}-{kind}")


@pytest.mark.parametrize("field,kind", list(cases()))
def test_hostile_string_is_refused_by_the_schema(tmp_path, field, kind):
    """In process, with the very call the workflow makes (snakemake.utils.validate, same schema)."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    cfg = set_field(yaml.safe_load(SMOKE.read_text()), field, hostile(tmp_path / "MARKER")[kind])
    with pytest.raises(WorkflowError) as err:
        validate(cfg, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    where = "".join(f"[{k!r}]" for k in field.split("."))
    assert f"On instance{where}" in str(err.value)


# End to end through snakemake, one of each kind of refusal (each run costs a Snakemake start).
END_TO_END = [
    ("diffusion.preset", "shell", "is not one of"),
    ("evaluation.cache_dir", "dash", "is not a usable path"),
    ("imagenet_dir", "newline", "is not a usable path"),
    ("reference.url", "shell", "is not an http(s):// or file:// URL"),
]


@pytest.mark.slow
@pytest.mark.parametrize("field,kind,says", END_TO_END, ids=[f"{f}-{k}" for f, k, _ in END_TO_END])
def test_hostile_string_is_one_line_on_stderr(tmp_path, field, kind, says):
    marker = tmp_path / "MARKER"
    cfg = set_field(yaml.safe_load(SMOKE.read_text()), field, hostile(marker)[kind])
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = snakemake(tmp_path, "-n", "-p", "--cores", "1", "--configfile", str(path))
    assert not marker.exists()
    assert res.returncode == 1 and res.stdout == "", res.stdout[-2000:]
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"invalid config: {field}: "), res.stderr
    assert says in lines[0]


# ---------------------------------------------------------------- hostile paths: one argument each


def recorder(tmp_path: Path) -> Path:
    """A stand-in interpreter that appends its argv (NUL-separated) to $ARGV_OUT."""
    script = tmp_path / "recorder"
    script.write_text('#!/bin/sh\nprintf "%s\\0" "$@" >> "$ARGV_OUT"\nprintf "\\n" >> "$ARGV_OUT"\n')
    script.chmod(0o755)
    return script


def printed_commands(output: str) -> list[str]:
    return [line.split("Shell command: ", 1)[1] for line in output.splitlines() if "Shell command: " in line]


def run_recorded(command: str, workdir: Path, rec: Path) -> list[str]:
    """Run one printed command in bash with the interpreter swapped for the recorder."""
    # the rules' interpreter: the venv's python, in the workflow's own spelling (pytest may run as
    # .venv/bin/python3.11 or .venv/bin/python; see test_another_spelling_of_the_interpreter...)
    assert command.startswith("exec "), command  # the program replaces the job's shell
    interpreter = shlex.split(command)[1]
    assert Path(interpreter).parent == Path(sys.executable).parent, command
    head = "exec " + shlex.quote(interpreter)
    assert command.startswith(head + " "), command
    argv_out = workdir / "argv.bin"
    argv_out.unlink(missing_ok=True)
    tokens = shlex.split(command)
    log = tokens[tokens.index(">") + 1]
    (workdir / log).parent.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        ["bash", "-c", f"set -euo pipefail; exec {rec}{command[len(head) :]}"],
        cwd=workdir,
        env=dict(os.environ, ARGV_OUT=str(argv_out)),
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    return argv_out.read_text().rstrip("\n").split("\0")[:-1]


def tiny_imagenet(folder: Path) -> None:
    """Two classes of two 16x16 images in ImageNet's train layout (<synset>/<synset>_<i>.png)."""
    rng = np.random.default_rng(0)
    for label in ("n01", "n02"):
        (folder / label).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / label / f"{label}_{i}.png")


@pytest.mark.slow
def test_hostile_paths_stay_one_argument(tmp_path):
    marker = tmp_path / "MARKER"
    value = hostile(marker)["shell"]
    folder, ckpt, cache = tmp_path / value, tmp_path / f"ckpt {value}.pt", tmp_path / f"cache {value}"
    tiny_imagenet(folder)
    ckpt.write_bytes(b"")
    rec = recorder(tmp_path)
    configs = {
        "train": dict(pretrained=False, imagenet_dir=str(folder), data__heldout_fraction=0.5),
        "pretrained": dict(
            pretrained=True,
            checkpoints__diffusion=str(ckpt),
            evaluation__cache_dir=str(cache),
            upsample__enabled=True,
            upsample__checkpoint=str(ckpt),
        ),  # its --model too
    }
    # flag -> the path it must carry intact; the first of each must appear (the cache dir may
    # reach a download script instead of a command line)
    expected = {"train": {"--data-dir": str(folder)}, "pretrained": {"--model": str(ckpt), "--cache-dir": str(cache)}}
    for name, changes in configs.items():
        cfg = write_config(tmp_path / f"{name}.yaml", IMAGENET, run=name, **changes)
        res = snakemake(tmp_path, "-n", "-p", "--cores", "1", "--configfile", str(cfg))
        assert res.returncode == 0, res.stderr[-2000:]
        seen = set()
        for command in printed_commands(res.stdout):
            if not set(expected[name].values()) & set(shlex.split(command)):
                continue
            argv = run_recorded(command, tmp_path, rec)
            for flag, path in expected[name].items():
                if flag in argv:
                    assert argv[argv.index(flag) + 1] == path, argv
                    seen.add(flag)
        assert next(iter(expected[name])) in seen, (name, seen)
        assert not marker.exists()
    # and one real job reads the folder whose name is a shell command
    cfg = tmp_path / "train.yaml"
    res = snakemake(tmp_path, "results/train/data/train.npz", "--cores", "1", "--configfile", str(cfg))
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    with np.load(tmp_path / "results/train/data/train.npz") as data:
        assert len(data["arr_0"]) + len(np.load(tmp_path / "results/train/data/heldout.npz")["arr_0"]) == 4
    assert not marker.exists()


# ---------------------------------------------------------------- validation before training


@pytest.mark.parametrize(
    "sampling,message",
    [
        ({"steps": 1001}, "invalid config: sampling.steps: ddpm cannot take 1001 steps from the 1000-step diffusion"),
        ({"steps": 999, "sampler": "ddim"}, "invalid config: sampling.steps: ddim cannot take 999 steps"),
        ({"steps": 0}, "invalid config: sampling.steps: 0 is less than the minimum of 1"),
        (
            {"steps": 1},
            "invalid config: sampling.steps: ddpm cannot take 1 steps from the 1000-step diffusion "
            "of 'demo-digits': respacing '1' keeps only t = 0",
        ),
    ],
)
def test_impossible_sampling_steps(tmp_path, sampling, message):
    cfg = write_config(tmp_path / "c.yaml", SMOKE, **{f"sampling__{k}": v for k, v in sampling.items()})
    res = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(cfg))
    assert res.returncode == 1 and res.stdout == ""
    assert len(res.stderr.splitlines()) == 1 and res.stderr.startswith(message), res.stderr


def test_preset_for_another_image_size(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", SMOKE, classifier__preset="imagenet128-classifier")
    res = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(cfg))
    assert res.returncode == 1 and res.stderr == (
        "invalid config: classifier.preset 'imagenet128-classifier' is a 128x128 model, but image_size is 8\n"
    )


# ---------------------------------------------------------------- the interpreter


def fake_venv(where: Path) -> Path:
    """A venv at a path with a space and `$(...)`: the repo's venv seen through symlinks."""
    venv = Path(sys.prefix)
    root = where / "v e n v $(touch MARKER)"
    (root / "bin").mkdir(parents=True)
    (root / "pyvenv.cfg").write_text((venv / "pyvenv.cfg").read_text())
    (root / "bin" / "python").symlink_to(Path(sys.executable).resolve())
    (root / "lib").symlink_to(venv / "lib")
    return root / "bin" / "python"


def fake_python_dir(where: Path) -> Path:
    """A PATH entry whose `python` / `python3` exist but fail, as a system Python without PIL would."""
    bin_dir = where / "fakebin"
    bin_dir.mkdir()
    for name in ("python", "python3"):
        (bin_dir / name).write_text("#!/bin/sh\necho 'not the venv python' >&2\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    return bin_dir


@pytest.mark.slow
def test_interpreter_path_with_space(tmp_path):
    python = fake_venv(tmp_path)
    path = os.pathsep.join([str(fake_python_dir(tmp_path)), "/usr/bin", "/bin"])
    cmd = [
        str(python),
        "-m",
        "snakemake",
        "results/smoke/data/train.npz",
        "-p",
        "--cores",
        "1",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(SMOKE),
    ]
    res = subprocess.run(
        cmd, cwd=tmp_path, env=dict(os.environ, PATH=path), capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    command = printed_commands(res.stdout + res.stderr)[0]
    assert shlex.split(command)[:4] == ["exec", str(python), "-m", "adm"]
    assert (tmp_path / "results/smoke/data/train.npz").is_file()
    assert not list(tmp_path.rglob("MARKER"))


@pytest.mark.slow
def test_another_spelling_of_the_interpreter_reruns_nothing(tmp_path):
    """`.venv/bin/snakemake` runs as python3.11, `python -m snakemake` as python: the rules'
    interpreter param must not differ (params are rerun triggers). Mutant tried: python()
    returning sys.executable made the second call re-run prepare_data ("Params have changed")."""
    venv_bin = Path(sys.executable).parent
    target = [
        "results/smoke/data/train.npz",
        "--cores",
        "1",
        "--configfile",
        str(SMOKE),
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(tmp_path),
    ]
    first = subprocess.run([str(venv_bin / "snakemake"), *target], cwd=tmp_path, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    again = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", *target], cwd=tmp_path, capture_output=True, text=True
    )
    assert "Nothing to be done" in again.stdout + again.stderr, (again.stdout + again.stderr)[-2000:]


# ---------------------------------------------------------------- jobs cannot outlive their rule


def test_killed_job_shell_leaves_no_orphan(tmp_path):
    """`kill -9` of a job's shell (what a killed Snakemake or a cluster's cancel does) ends the program
    too: the rule's command `exec`s it, so the shell's pid *is* the program and no orphan writes the
    output after the job was declared failed. The evaluate rule's printed command, run as Snakemake runs
    it (`bash -c 'set -euo pipefail; CMD'`), with the interpreter swapped for a stand-in that writes to
    the rule's log (the `> log 2>&1` redirection still applies after exec), waits, then writes --out.
    Mutant tried: the command without `exec` left the stand-in running, and it wrote the output."""
    res = snakemake(
        tmp_path, "results/smoke/metrics/scale1.json", "-n", "-p", "--cores", "1", "--configfile", str(SMOKE)
    )
    assert res.returncode == 0, res.stderr[-2000:]
    command = next(c for c in printed_commands(res.stdout) if "-m evaluations.evaluator" in c)
    tokens = shlex.split(command)
    out, log = tmp_path / tokens[tokens.index("--out") + 1], tmp_path / tokens[tokens.index(">") + 1]
    out.parent.mkdir(parents=True)
    log.parent.mkdir(parents=True)
    stand_in = tmp_path / "stand_in"
    stand_in.write_text(
        '#!/bin/sh\necho started\nsleep 1\nfor a; do [ "$prev" = --out ] && echo late > "$a"; prev=$a; done\n'
    )
    stand_in.chmod(0o755)
    job = subprocess.Popen(
        "set -euo pipefail;  " + command.replace(shlex.quote(tokens[1]), str(stand_in), 1),
        shell=True,
        executable="bash",
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 5
    while not (log.exists() and "started" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "started" in log.read_text()
    assert str(stand_in) in Path(f"/proc/{job.pid}/cmdline").read_text()  # the program is the job
    job.kill()  # SIGKILL to the job's process, as to a shell wrapper
    job.wait()
    time.sleep(1.5)
    assert not out.exists(), "a program outlived its killed job and wrote its output"
