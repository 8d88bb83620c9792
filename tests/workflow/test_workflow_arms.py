"""Guidance arms and seed sets in the DAG (workflow/rules/arms.smk): the old outputs keep
their paths, commands and bytes when the new keys are off; each arm's jobs carry the right guidance
flags; the configs that cannot run end with one line.

The end-to-end run of every new rule is the smoke DAG of tests/workflow/test_workflow.py (its config has a
tiny version of each arm); its test_arms_are_compared_in_the_report calls
check_comparison below on that run (one smoke DAG for every file).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from test_workflow import IMAGENET, SMOKE, snakemake

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

NEW_KEYS = ("guidance_arms", "cfg_model")
NEW_SAMPLING_KEYS = ("seeds", "seed_scales")
ARM_RULES = {"arm_sample", "arm_merge", "arm_evaluate", "train_cfg_model", "comparison", "tradeoff_plots"}


def without_arms(cfg: dict) -> dict:
    """The config as it was before the guidance arms: none of the new keys."""
    cfg = {k: v for k, v in cfg.items() if k not in NEW_KEYS}
    cfg["sampling"] = {k: v for k, v in cfg["sampling"].items() if k not in NEW_SAMPLING_KEYS}
    return cfg


def write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def dry_jobs(workdir: Path, cfg: Path) -> dict[str, str]:
    """{output path(s): (rule, shell command)} of every job of a dry run with -p."""
    workdir.mkdir(exist_ok=True)
    res = snakemake(workdir, "-n", "-p", "--cores", "2", "--configfile", str(cfg))
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = {}
    for block in res.stdout.split("\nrule ")[1:]:
        outputs = re.search(r"output: ([^\n]*)", block)
        command = re.search(r"\n(?:Shell command: )?(?:exec )?(\S*python\S* -m [^\n]*)", block)
        if outputs:
            jobs[outputs.group(1)] = (block.split(":", 1)[0], command.group(1) if command else "")
    return jobs


def smoke_cfg() -> dict:
    return yaml.safe_load(SMOKE.read_text())


def test_smoke_config_switches_every_arm_on():
    cfg = smoke_cfg()
    methods = {(a["method"], bool(a.get("interval"))) for a in cfg["guidance_arms"]}
    assert methods == {("classifier", True), ("cfg", False), ("autoguidance", False)}
    assert len(cfg["sampling"]["seeds"]) > 1


def test_no_new_keys_no_new_jobs_and_old_commands_unchanged(tmp_path):
    """Off (keys absent), off (defaults written out) and on: the old jobs are the same outputs
    with the same commands in all three; only 'on' adds jobs, all under arms/, cfg_model/,
    comparison.* and plots/tradeoff_*."""
    base = without_arms(smoke_cfg())
    off = dry_jobs(tmp_path / "a", write(tmp_path / "off.yaml", base))
    explicit = {
        **base,
        "guidance_arms": [],
        "sampling": {**base["sampling"], "seeds": [base["sampling"].get("seed", 0)]},
    }
    assert dry_jobs(tmp_path / "b", write(tmp_path / "explicit.yaml", explicit)) == off
    assert not {rule for rule, _ in off.values()} & ARM_RULES
    on = dry_jobs(tmp_path / "c", SMOKE)
    for outputs, job in off.items():
        if job[0] in ("report_html", "publish_report", "default"):
            continue  # the report gains a section (and inputs) when arms are on
        if job[0] == "train_diffusion":  # the autoguidance arm's {step: 2} guide: the same job keeps it
            o, (rule, command) = next((o, j) for o, j in on.items() if j[0] == "train_diffusion")
            assert o == f"{outputs}, results/smoke/diffusion/ema_step2.pt", o
            assert command.replace(" --keep-ema-step 2", "") == job[1]
            continue
        assert on[outputs] == job, outputs
    added = [o for o in on if o not in off]
    assert added and all(re.search(r"/(arms|cfg_model)/|comparison\.|tradeoff_|ema_step2", o) for o in added), added


def test_arm_jobs_carry_their_guidance(tmp_path):
    jobs = dry_jobs(tmp_path, SMOKE)
    cfg = smoke_cfg()
    interval = next(a for a in cfg["guidance_arms"] if a.get("interval"))
    cfg_arm = next(a for a in cfg["guidance_arms"] if a["method"] == "cfg")
    lo, hi = (float(v) for v in interval["interval"])
    arm_cmds = {o: c for o, (rule, c) in jobs.items() if rule == "arm_sample"}
    for seed in cfg["sampling"]["seeds"]:
        cmds = [c for o, c in arm_cmds.items() if f"/arms/{interval['name']}/seed{seed}/" in o]
        assert cmds and all(
            f"--guidance-interval {lo} {hi}" in c and f"--seed {seed} " in c and "--classifier " in c for c in cmds
        )
        cmds = [c for o, c in arm_cmds.items() if f"/arms/{cfg_arm['name']}/seed{seed}/" in o]
        assert cmds and all("--guidance cfg" in c and "--classifier" not in c and "cfg_model/ema.pt" in c for c in cmds)
    # the other seeds of the Table 1 sweep: full interval, its seed, only seed_scales
    extra = [c for o, c in arm_cmds.items() if "/arms/classifier/" in o]
    wanted = {f"{float(s):g}" for s in cfg["sampling"]["seed_scales"]}
    assert extra and {re.search(r"--scale (\S+)", c).group(1) for c in extra} == wanted
    assert all("--guidance-interval" not in c and "--seed 0 " not in c for c in extra)
    assert not any("/arms/classifier/seed0/" in o for o in arm_cmds)  # seed 0 is Table 1 itself
    train = next(c for rule, c in jobs.values() if rule == "train_cfg_model")
    assert "--label-dropout 0.1" in train and "--restart-on-change" in train
    assert "--init-from results/smoke/diffusion/ema.pt" in train  # fine-tuned from the main model


def test_cfg_in_an_interval(tmp_path):
    """The interval applies to classifier-free guidance too (plain conditional outside it)."""
    cfg = smoke_cfg()
    cfg["guidance_arms"] = [{"name": "cfgi", "method": "cfg", "interval": [0.5, 3.0], "scales": [2.0]}]
    jobs = dry_jobs(tmp_path, write(tmp_path / "c.yaml", cfg))
    cmds = [c for o, (rule, c) in jobs.items() if rule == "arm_sample" and "/arms/cfgi/" in o]
    assert cmds and all("--guidance cfg --guidance-interval 0.5 3.0" in c and "--classifier" not in c for c in cmds)


def imagenet_with_arms() -> dict:
    """config/imagenet128.yaml with its commented-out issue-11 block switched on, as a user would."""
    text = re.sub(
        r"(?m)^(\s*)# ((?:guidance_arms|cfg_model|seeds|seed_scales):|  - \{name)", r"\1\2", IMAGENET.read_text()
    )
    return yaml.safe_load(text)


@pytest.mark.parametrize("pretrained", [True, False])
def test_imagenet_arms(tmp_path, pretrained):
    """The shipped block: interval arm with the released checkpoints; cfg only when training
    (torchrun over train_diffusion's 8 GPUs); every arm at every seed."""
    folder = tmp_path / "imagenet"
    folder.mkdir()
    cfg = imagenet_with_arms()
    methods = {a["method"] for a in cfg["guidance_arms"]}
    assert len(cfg["sampling"]["seeds"]) > 1 and methods == {"classifier", "cfg", "autoguidance"}
    cfg.update(pretrained=pretrained, imagenet_dir=str(folder))
    if pretrained:
        # no CFG model and no earlier EMA are released: those arms need pretrained: false
        cfg["guidance_arms"] = [a for a in cfg["guidance_arms"] if a["method"] not in ("cfg", "autoguidance")]
    jobs = dry_jobs(tmp_path, write(tmp_path / "c.yaml", cfg))
    cmds = [c for rule, c in jobs.values() if rule == "arm_sample"]
    shards, seeds = cfg["sampling"]["num_shards"], cfg["sampling"]["seeds"]
    interval = next(a for a in cfg["guidance_arms"] if a.get("interval"))
    lo, hi = (float(v) for v in interval["interval"])
    with_interval = [c for c in cmds if f"--guidance-interval {lo} {hi}" in c]
    assert len(with_interval) == len(interval["scales"]) * len(seeds) * shards
    # FD_DINOv2 (on in the paper config) of every arm point beside Table 1's, the comparison's input
    # (nothing else asks for it): features by the sweep's job, FD against the sweep's reference
    evaluated = {o for o, (rule, _) in jobs.items() if rule == "arm_evaluate"}
    fd = {o: c for o, (rule, c) in jobs.items() if rule == "arm_fd_dinov2"}
    assert evaluated and set(fd) == {o.replace("/scale", "/fd_dinov2_scale") for o in evaluated}
    for out, command in fd.items():
        ref, samples = command.split()[3:5]
        assert ref == "results/imagenet128/dinov2/reference.npz"
        assert samples == out.replace("/metrics/fd_dinov2_scale", "/dinov2/scale").replace(".json", ".npz")
    features = [c for rule, c in jobs.values() if rule == "arm_dinov2_features"]
    assert len(features) == len(fd) and all("--cache-dir results/imagenet128/feature_cache" in c for c in features)
    if pretrained:
        assert all(
            "--model-preset imagenet128-cond --classifier-preset imagenet128-classifier" in c
            and "pretrained/diffusion.pt" in c
            for c in with_interval
        )
        assert "train_cfg_model" not in {rule for rule, _ in jobs.values()}
    else:
        cfg_arm = next(a for a in cfg["guidance_arms"] if a["method"] == "cfg")
        assert len([c for c in cmds if "--guidance cfg" in c]) == len(cfg_arm["scales"]) * len(seeds) * shards
        train = next(c for rule, c in jobs.values() if rule == "train_cfg_model")
        assert "-m torch.distributed.run --standalone --nproc_per_node 8 -m adm train-diffusion" in train
        assert "--model-preset imagenet128-cond --train-preset imagenet128" in train


def one_line_error(tmp_path, cfg) -> str:
    res = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(write(tmp_path / "bad.yaml", cfg)))
    assert res.returncode == 1 and res.stdout == "", (res.stdout + res.stderr)[-2000:]
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr[-2000:]
    return lines[0]


def arm(**kw):
    return {"name": "a", "method": "classifier", "scales": [1.0], **kw}


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"sampling": {"seeds": [3, 0]}}, "sampling.seeds[0] (3) must equal sampling.seed (0)"),
        ({"sampling": {"seeds": [0, 0]}}, "sampling.seeds: [0, 0] has non-unique elements"),
        ({"sampling": {"seed_scales": [2.0]}}, "sampling.seed_scales [2.0] are not in sampling.scales"),
        ({"guidance_arms": [arm(name="../x")]}, "guidance_arms.0.name: '../x' is not an arm name"),
        ({"guidance_arms": [arm(name="classifier")]}, "guidance_arms: the name 'classifier' is the Table 1"),
        ({"guidance_arms": [arm(), arm()]}, "guidance_arms: names must be unique"),
        ({"guidance_arms": [arm(interval=[2.0, 1.0])]}, "guidance_arms.a.interval needs a finite LO < HI"),
        (
            {"guidance_arms": [arm(method="cfg", interval=[1.0, 1.0])]},
            "guidance_arms.a.interval needs a finite LO < HI",
        ),
        ({"guidance_arms": [arm(scales=[1.0, 1])]}, "guidance_arms.a.scales has duplicates"),
        ({"guidance_arms": [arm(scales=[-1.0])]}, "guidance_arms.0.scales.0: -1.0 is less than the minimum of 0"),
        ({"guidance_arms": [arm(method="pag")]}, "guidance_arms.0.method: 'pag' is not one of"),
        (
            {"cfg_model": {"label_dropout": 1.0}},
            "cfg_model.label_dropout: 1.0 is greater than or equal to the maximum of 1",
        ),
        ({"cfg_model": {"preset": "imagenet128-cond"}}, "cfg_model.preset 'imagenet128-cond' is a 128x128 model"),
    ],
)
def test_bad_arm_config_is_one_clear_line(tmp_path, changes, message):
    cfg = without_arms(smoke_cfg())
    for key, value in changes.items():
        cfg[key] = {**cfg[key], **value} if key == "sampling" else value
    assert one_line_error(tmp_path, cfg).startswith(f"invalid config: {message}")


def test_cfg_with_released_checkpoints_is_refused(tmp_path):
    cfg = yaml.safe_load(IMAGENET.read_text())
    cfg["guidance_arms"] = [arm(name="cfg", method="cfg")]
    line = one_line_error(tmp_path, cfg)
    assert line.startswith("invalid config: guidance_arms.cfg: method cfg needs a model trained with label dropout")
    assert "pretrained: false" in line and "cfg_model.init: main" in line


def test_cfg_fine_tuned_from_the_released_model(tmp_path):
    """cfg_model.init: main with the released checkpoints: the CFG model is the downloaded one
    fine-tuned with label dropout on imagenet_dir (refused in one line without it)."""
    cfg = yaml.safe_load(IMAGENET.read_text())
    cfg["guidance_arms"] = [arm(name="cfg", method="cfg")]
    cfg["cfg_model"] = {"init": "main", "steps": 1000}
    line = one_line_error(tmp_path, cfg)
    assert "guidance_arms.cfg: fine-tuning the released model for method cfg needs its data: set imagenet_dir" in line
    (tmp_path / "imagenet").mkdir()
    cfg["imagenet_dir"] = str(tmp_path / "imagenet")
    jobs = dry_jobs(tmp_path, write(tmp_path / "c.yaml", cfg))
    train = next(c for rule, c in jobs.values() if rule == "train_cfg_model")
    assert "--init-from results/imagenet128/pretrained/diffusion.pt" in train and "--steps 1000" in train
    assert "--label-dropout 0.1" in train and "--model-preset imagenet128-cond" in train


# ---------------------------------------------------------------- on the real smoke DAG (test_workflow.py)


def check_comparison(workdir: Path) -> None:
    """The smoke DAG in `workdir` (every arm on) compared every arm, with the seed spread, in the
    table, the trade-off plots and the report. (Its Table 1 bytes equal those of the same config
    without the new keys: tests/workflow/test_workflow_rerun.py's test_table1_bytes_do_not_depend_on_the_arms.)"""
    run = workdir / "results/smoke"
    md = (run / "comparison.md").read_text()
    cfg = smoke_cfg()
    from adm.report.compare import arm_label

    for a in cfg["guidance_arms"]:  # one short label per method, the arm named in the caption
        assert f"| {arm_label(a['method'], a.get('interval'))} | " in md and f"arm `{a['name']}`" in md
    assert " ± " in md and "sample standard deviation" in md and "| FID min | FID median |" in md
    for name in ("tradeoff_pr", "tradeoff_fid_is"):
        assert (run / f"plots/{name}.png").is_file() and (run / f"plots/{name}.svg").is_file()
    html = (run / "report.html").read_text()
    assert "Guidance methods compared" in html and "classifier-free guidance" in html


def test_fast_mode_reaches_every_sampling_job_and_the_default_adds_no_flag(tmp_path):
    """sampling.fast threads `--fast MODE` to the Table 1 and the arm sampling jobs; at the exact
    default no flag appears, so commands (and Snakemake's rerun triggers) are those of runs made
    before the option existed."""
    default = dry_jobs(tmp_path / "a", SMOKE)
    cfg = smoke_cfg()
    cfg["sampling"]["fast"] = "fast"
    fast = dry_jobs(tmp_path / "b", write(tmp_path / "fast.yaml", cfg))
    sampling = {o for o, (rule, _) in default.items() if rule in ("sample", "arm_sample")}
    assert {rule for o, (rule, _) in default.items() if o in sampling} == {"sample", "arm_sample"}
    for outputs in sampling:
        assert "--fast" not in default[outputs][1], outputs
        words = default[outputs][1].split()  # (an empty flag list leaves a double space)
        at = words.index("--scale")
        assert fast[outputs][1].split() == words[:at] + ["--fast", "fast"] + words[at:], outputs
    others = [o for o in default if o not in sampling and default[o][0] != "upsample_sample"]
    assert all(fast[o] == default[o] for o in others if o in fast)


def plant_arm_records(workdir: Path, cfg: dict) -> None:
    """A metrics JSON (demo network) for every arm point of `cfg` and, when FD_DINOv2 is on, an FD
    record beside it: the inputs of the trade-off rule, as the evaluation jobs would leave them."""
    import json
    import sys

    from test_workflow_lib import ROOT

    sys.path.insert(0, str(ROOT))
    from workflow.lib import arms

    for i, path in enumerate(arms.arm_metrics(cfg)):
        doc = {"fid": 10.0 + i, "sfid": 11.0, "inception_score": 5.0 + i, "precision": 0.5, "recall": 0.4}
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
        (workdir / path).write_text(json.dumps({"metrics": doc, "feature_network": "demo"}))
    for i, path in enumerate(arms.arm_fd_dinov2(cfg)):
        (workdir / path).write_text(json.dumps({"metrics": {"fd_dinov2": 100.0 + i}, "ci": {"fd_dinov2": None}}))


@pytest.mark.parametrize("fd_dinov2", [False, True])
def test_tradeoff_rule_adds_the_fd_dinov2_plot_only_when_on(tmp_path, fd_dinov2):
    """The trade-off job alone, on planted records of every arm point: with FD_DINOv2 on it reads
    each point's FD record and writes plots/tradeoff_fd_dinov2.{png,svg} too; off, the four files
    of a run without the metric (their bytes are those of the on run: the metric adds a plot, it
    changes none)."""
    cfg = smoke_cfg()
    cfg.setdefault("evaluation", {})["fd_dinov2"] = fd_dinov2
    plots = tmp_path / "results/smoke/plots"
    plant_arm_records(tmp_path, cfg)
    args = ("--cores", "1", "--allowed-rules", "tradeoff_plots", "--configfile", str(write(tmp_path / "c.yaml", cfg)))
    res = snakemake(tmp_path, "results/smoke/plots/tradeoff_pr.png", *args)
    assert res.returncode == 0, res.stderr[-3000:]
    four = ["tradeoff_fid_is.png", "tradeoff_fid_is.svg", "tradeoff_pr.png", "tradeoff_pr.svg"]
    extra = ["tradeoff_fd_dinov2.png", "tradeoff_fd_dinov2.svg"] if fd_dinov2 else []
    assert sorted(p.name for p in plots.iterdir()) == sorted(four + extra)
    job = (res.stdout + res.stderr).split("rule tradeoff_plots:", 1)[1].split("\n\n", 1)[0]
    assert ("arms/auto/seed1/metrics/fd_dinov2_scale2.json" in job) == fd_dinov2  # a new FD record re-draws
    if fd_dinov2:
        svg = (plots / "tradeoff_fd_dinov2.svg").read_text()
        assert "FD_DINOv2" in svg and "guidance scale" in svg and "autoguidance" in svg
        cfg["evaluation"]["fd_dinov2"] = False  # the same points without the metric: same four files
        plain = tmp_path / "plain"
        plain.mkdir()
        plant_arm_records(plain, cfg)
        res = snakemake(plain, "results/smoke/plots/tradeoff_pr.png", *args[:-1], str(write(plain / "c.yaml", cfg)))
        assert res.returncode == 0, res.stderr[-3000:]
        for name in four:
            assert (plain / "results/smoke/plots" / name).read_bytes() == (plots / name).read_bytes(), name
