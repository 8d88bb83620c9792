"""The workflow's Python (workflow/lib/), called directly: no Snakemake run, no torch.

Configs are the shipped ones, filled in by the schema (config_checks.validate_config), so the values
asserted here are those the rules get. The DAG-level tests (test_workflow*.py, test_upsample_dag.py)
check the same helpers through `snakemake -n`; these pin their values one by one.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # workflow.lib is imported from the checkout, as the rules do

from workflow.lib import arms, commands, config_checks, paths, published, slurm, targets, upsample  # noqa: E402
from workflow.lib.config_checks import ConfigError  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def load(*names: str) -> dict:
    """The shipped config file(s), layered, validated and filled in as the workflow does."""
    cfg: dict = {}
    for name in names:
        for key, value in yaml.safe_load((ROOT / name).read_text()).items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
    config_checks.validate_config(cfg)
    arms.fill_cfg_model_resources(cfg)
    return cfg


@pytest.fixture(scope="module")
def smoke_base() -> dict:
    return load(".test/config/config.yaml")


@pytest.fixture
def smoke(smoke_base) -> dict:
    return copy.deepcopy(smoke_base)


@pytest.fixture(scope="module")
def rehearsal() -> dict:
    return load("config/imagenet128.yaml", ".test/config/rehearsal.yaml", ".test/config/rehearsal_upsample.yaml")


# ---------------------------------------------------------------- names and paths


@pytest.mark.parametrize("scale, name", [(0, "0"), (0.0, "0"), (0.5, "0.5"), (1.0, "1"), (7.5, "7.5"), (10.0, "10")])
def test_scale_name(scale, name):
    assert paths.scale_name(scale) == name


def test_respacing_spec():
    assert paths.respacing_spec({"sampler": "ddpm", "steps": 250}) == "250"
    assert paths.respacing_spec({"sampler": "ddim", "steps": 25}) == "ddim25"


def test_run_paths(smoke):
    assert paths.out(smoke, "table1.md") == "results/smoke/table1.md"
    assert paths.logfile(smoke, "sample/x.log") == "results/smoke/logs/sample/x.log"
    assert paths.benchfile(smoke, "x.tsv") == "results/smoke/benchmarks/x.tsv"


def test_final_targets_of_the_smoke_config(smoke):
    t = targets.final_targets(smoke)
    assert t[:8] == [
        "results/smoke/table1.md",
        "results/smoke/config.yaml",
        "results/smoke/report.html",
        "results/report.html",
        "results/smoke/samples/scale0/shard0.npz",
        "results/smoke/samples/scale0/shard1.npz",
        "results/smoke/samples/scale1/shard0.npz",
        "results/smoke/samples/scale1/shard1.npz",
    ]
    assert "results/smoke/samples/scale10/shard1.npz" in t
    assert "results/smoke/comparison.md" in t and "results/smoke/upsample/upsample_table.md" in t
    assert len(t) == len(set(t))


def test_final_targets_name_every_intermediate_of_the_smoke_config(smoke):
    """A deleted intermediate whose consumers are up to date is remade only if `rule all` names
    it (tests/workflow/test_workflow.py::test_deleted_metrics_file_is_remade runs it)."""
    t = set(targets.final_targets(smoke))
    run = "results/smoke"
    for s in ("0", "1", "10"):
        assert {f"{run}/samples/scale{s}.npz", f"{run}/metrics/scale{s}.json", f"{run}/grids/scale{s}.png"} <= t
    assert {f"{run}/table1.csv", f"{run}/table1.tex", f"{run}/plots/fid_sfid.svg", f"{run}/comparison.csv"} <= t
    for arm, seed, scale in [("interval", 0, "1"), ("cfg", 1, "1"), ("auto", 0, "2"), ("classifier", 1, "1")]:
        assert {
            f"{run}/arms/{arm}/seed{seed}/samples/scale{scale}.npz",
            f"{run}/arms/{arm}/seed{seed}/metrics/scale{scale}.json",
        } <= t
    for kind in ("samples", "lowres", "bicubic"):
        assert f"{run}/upsample/{kind}/scale10.npz" in t
    assert {f"{run}/upsample/metrics/scale10.json", f"{run}/upsample/bicubic_metrics/scale10.json"} <= t
    assert not any("/arms/classifier/seed0/" in p for p in t)  # the first seed's files are Table 1's


def test_final_targets_without_arms_or_upsampling(smoke):
    smoke["guidance_arms"], smoke["upsample"]["enabled"] = [], False
    smoke["sampling"]["seeds"] = [smoke["sampling"]["seed"]]
    assert targets.final_targets(smoke) == [
        "results/smoke/table1.md",
        "results/smoke/config.yaml",
        "results/smoke/report.html",
        "results/report.html",
        *targets.sample_shards(smoke),
        *targets.table1_intermediates(smoke),
    ]
    assert len(targets.sample_shards(smoke)) == 3 * 2
    assert len(targets.table1_intermediates(smoke)) == 3 * 3 + 2 + 3 * 2


# ---------------------------------------------------------------- config checks


def test_duplicate_scale_is_refused_with_the_exact_message(smoke):
    smoke["sampling"]["scales"] = [1, 1.0]
    with pytest.raises(ConfigError) as err:
        config_checks.check_scales(smoke)
    assert str(err.value) == "sampling.scales has duplicates: [1, 1.0]"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["sampling"].update(num_shards=17), "sampling.num_shards (17) > sampling.num_samples (16)"),
        (
            lambda c: c["sampling"].update(seeds=[5, 1]),
            "sampling.seeds[0] (5) must equal sampling.seed (0): the first seed's sweep is Table 1",
        ),
        (
            lambda c: c["guidance_arms"].append({"name": "classifier", "method": "classifier", "scales": [1.0]}),
            "guidance_arms: the name 'classifier' is the Table 1 sweep's own; choose another",
        ),
        (lambda c: c["upsample"].update(scales=[2.0]), "upsample.scales ['2'] are not among sampling.scales"),
    ],
)
def test_cross_field_checks(smoke, edit, message):
    edit(smoke)
    with pytest.raises(ConfigError) as err:
        config_checks.check_config(smoke)
    if message.startswith("upsample.scales"):  # the raw values: scale_name strings, then the list
        assert str(err.value).startswith("upsample.scales [2.0] are not among sampling.scales")
    else:
        assert str(err.value) == message


SCALE_RULE = "a scale is 0 or in [0.0001, 1e6) with at most 6 significant digits"
SEED_RULE = "a seed is an integer in [0, 2**32-1 = 4294967295]"
FP16_RULE = "fp16 runs on CUDA only, but device is cpu (use fp32, bf16 or auto, or device: cuda)"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["sampling"].update(seed_scales=[1.0, 1]), "sampling.seed_scales has duplicates: [1.0, 1]"),
        (lambda c: c["sampling"].update(seeds=[0, 1, 1.0]), "sampling.seeds has duplicates: [0, 1, 1.0]"),
        (
            lambda c: c["sampling"].update(scales=[0.0, 1e-05]),
            f"sampling.scales: 1e-05 has no file name (it would be written scale1e-05); {SCALE_RULE}",
        ),
        (
            lambda c: c["sampling"].update(scales=[0.0, 1e6]),
            f"sampling.scales: 1000000.0 has no file name (it would be written scale1e+06); {SCALE_RULE}",
        ),
        (
            lambda c: c["sampling"].update(scales=[0.0, 0.1234567]),
            f"sampling.scales: 0.1234567 has no file name (it would be written scale0.123457); {SCALE_RULE}",
        ),
        (
            lambda c: c["guidance_arms"][0].update(scales=[0.1234567]),
            "guidance_arms.interval.scales: 0.1234567 has no file name (it would be written scale0.123457); "
            + SCALE_RULE,
        ),
        (lambda c: c["sampling"].update(seeds=[0, 1e20]), f"sampling.seeds: 1e+20 is not a seed; {SEED_RULE}"),
        (lambda c: c["sampling"].update(seeds=[0, 2**32]), f"sampling.seeds: 4294967296 is not a seed; {SEED_RULE}"),
        (lambda c: c["upsample"].update(seed=-1), f"upsample.seed: -1 is not a seed; {SEED_RULE}"),
        (lambda c: c["sampling"].update(precision="fp16"), f"sampling.precision: {FP16_RULE}"),
        (lambda c: c["upsample"].update(precision="fp16"), f"upsample.precision: {FP16_RULE}"),
        (lambda c: c["diffusion"].update(precision="fp16"), f"diffusion.precision: {FP16_RULE}"),
        (
            lambda c: c["data"].update(heldout_fraction=0.002),
            "data.heldout_fraction 0.002 holds out 0 of the 1797 digits (round(fraction x class size) per "
            "class); it must be more than 0.002732",
        ),
        (
            # the smoke run's 4 cosine steps (t = 0, 333, 666, 999) have sigma 0.006425, 0.5687, 1.751, 2.029e4
            lambda c: c["guidance_arms"][0].update(interval=[2.0, 5.0]),
            "guidance_arms.interval.interval [2.0, 5.0] contains no sampling step: the 4 steps of ddpm "
            "(respacing '4') have sigma from 0.006425 to 2.029e+04 (nearest: 1.751 below, 2.029e+04 above)",
        ),
    ],
)
def test_config_refused_before_any_job(smoke, edit, message):
    edit(smoke)
    with pytest.raises(ConfigError) as err:
        config_checks.check_config(smoke)
    assert str(err.value) == message


def test_limits_themselves_pass(smoke):
    """The edges of each refusal are accepted: the smoke config with every value at its limit."""
    smoke["device"] = "cuda"
    smoke["sampling"].update(precision="fp16", scales=[0.0, 0.0001, 999999.0, 0.123456], seed_scales=[0.0001])
    smoke["sampling"].update(seed=2**32 - 1, seeds=[2**32 - 1, 0])
    smoke["upsample"].update(precision="fp16", scales=[999999.0])
    smoke["data"]["heldout_fraction"] = 0.0028  # 0.0028 x n rounds to 1 for the classes of 179 or more
    smoke["guidance_arms"][0]["interval"] = [1.75, 2.0]  # just above the step at sigma 1.751
    config_checks.check_config(smoke)


def test_heldout_count_is_the_split_s_own():
    """DIGITS_CLASS_SIZES and the rounding give the count stratified_split keeps (numpy only)."""
    from adm.data.datasets import stratified_split

    labels = np.repeat(np.arange(10), config_checks.DIGITS_CLASS_SIZES)
    for fraction in (0.0027, 0.0028, 0.003, 0.2):
        _, held = stratified_split(labels, fraction, seed=0)
        expected = sum(int(round(fraction * n)) for n in config_checks.DIGITS_CLASS_SIZES)
        assert len(held) == expected
    # 0.0027 x 183 = 0.494 rounds to 0 everywhere; 0.0028 x n >= 0.5 for the 7 classes of 179 or more
    assert len(stratified_split(labels, 0.0027, 0)[1]) == 0 and len(stratified_split(labels, 0.0028, 0)[1]) == 7


def test_schema_error_is_one_line(smoke):
    smoke["sampling"]["scales"] = [-1]
    with pytest.raises(ConfigError) as err:
        config_checks.validate_config(smoke)
    assert str(err.value) == "sampling.scales.0: -1 is less than the minimum of 0"


def test_solver_sampler_flows_to_the_command(smoke):
    smoke["sampling"].update(sampler="dpmpp-2m", steps=20)
    config_checks.validate_config(smoke)
    config_checks.check_config(smoke)
    assert paths.respacing_spec(smoke["sampling"]) == "20"
    assert commands.sampler_flags(smoke)[-2:] == ["--sampler", "dpmpp-2m"]


def test_pattern_is_explained(smoke):
    smoke["run"] = "bad name"
    with pytest.raises(ConfigError) as err:
        config_checks.validate_config(smoke)
    assert str(err.value) == (
        "run: 'bad name' is not a run name (letters, digits, '_', '.', '-'; a letter or digit first)"
    )


def test_validate_or_exit_prints_one_line(smoke, capsys):
    smoke["sampling"]["scales"] = []
    with pytest.raises(SystemExit) as stop:
        config_checks.validate_or_exit(smoke)
    assert stop.value.code == 1
    assert capsys.readouterr().err == "invalid config: sampling.scales: [] should be non-empty\n"


def test_command_line_strings():
    cfg = {"pretrained": "False", "print_config": "1"}
    config_checks.coerce_pretrained(cfg)
    assert config_checks.pop_print_config(cfg) is True
    assert cfg == {"pretrained": False}
    assert config_checks.pop_print_config(cfg) is False


# ---------------------------------------------------------------- program arguments


def test_flag_values():
    assert commands.flag_values("--x", 3) == ["--x", "3"]
    assert commands.flag_values("--interval", [0.28, 5.42]) == ["--interval", "0.28", "5.42"]


def test_training_flags_follow_the_config_keys():
    flags = commands.training_flags({"preset": "p", "steps": 4, "lr": None, "random_flip": False})
    assert flags == ["--model-preset", "p", "--steps", "4", "--no-random-flip"]


def test_demo_evaluator_and_checkpoints(smoke):
    assert commands.evaluator_flags(smoke) == [
        "--bootstrap",
        str(smoke["evaluation"]["bootstrap"]),
        "--feature-cache",
        "results/smoke/feature_cache",
        "--graph",
        "results/smoke/featurenet/graph.pb",
        "--label-demo",
    ]
    assert commands.diffusion_checkpoint(smoke) == "results/smoke/diffusion/ema.pt"
    assert commands.classifier_checkpoint(smoke) == "results/smoke/classifier/model.pt"
    assert commands.sampler_flags(smoke) == []
    assert commands.data_source_args(smoke) == ["--dataset", "digits"]


def test_pretrained_imagenet_presets_and_inputs(rehearsal):
    assert commands.diffusion_checkpoint(rehearsal) == "results/rehearsal/pretrained/diffusion.pt"
    assert commands.preset_flags(rehearsal) == [
        "--model-preset",
        "imagenet128-cond",
        "--classifier-preset",
        "imagenet128-classifier",
    ]
    assert commands.evaluator_inputs(rehearsal) == {
        "graph": "results/rehearsal/inception/classify_image_graph_def.pb",
        "graph_lock": "results/rehearsal/provenance/feature_graph.lock",
    }
    assert commands.training_logs(rehearsal) == {}


def test_launcher_uses_torchrun_for_several_gpus():
    py = ["/env/bin/python"]
    assert commands.launcher(py, None, {"gpu": 1}) == py
    assert commands.launcher(py, None, {"gres": "gpu:a100:4"}) == [
        *py,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "4",
    ]


def test_conda_interpreter_puts_the_repo_on_pythonpath(monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)
    assert commands.interpreter(True, "/repo") == ["env", "PYTHONPATH=/repo", "python"]
    assert commands.interpreter(False, "/repo") == [commands.stable_interpreter_path()]


# ---------------------------------------------------------------- guidance arms


def test_arm_runs_and_targets_of_the_smoke_config(smoke):
    assert arms.arm_runs(smoke) == [
        ("classifier", 0, "0"),
        ("classifier", 0, "1"),
        ("classifier", 0, "10"),
        ("classifier", 1, "1"),
        ("interval", 0, "1"),
        ("interval", 1, "1"),
        ("cfg", 0, "1"),
        ("cfg", 1, "1"),
        ("auto", 0, "2"),
        ("auto", 1, "2"),
    ]
    t = arms.arm_targets(smoke)
    assert t[:6] == [
        "results/smoke/comparison.md",
        "results/smoke/comparison.csv",
        "results/smoke/plots/tradeoff_pr.png",
        "results/smoke/plots/tradeoff_pr.svg",
        "results/smoke/plots/tradeoff_fid_is.png",
        "results/smoke/plots/tradeoff_fid_is.svg",
    ]
    assert t[6:8] == [
        "results/smoke/arms/classifier/seed1/samples/scale1/shard0.npz",
        "results/smoke/arms/classifier/seed1/samples/scale1/shard1.npz",
    ]
    assert t[-2:] == [
        "results/smoke/arms/auto/seed1/samples/scale2.npz",
        "results/smoke/arms/auto/seed1/metrics/scale2.json",
    ]
    assert len(t) == 6 + 7 * 2 + 7 * 2  # 7 non-Table-1 runs: 2 shards, merged samples and metrics each
    # the first seed's classifier sweep is Table 1 itself
    assert arms.arm_file(smoke, "classifier", 0, "1", "metrics") == "results/smoke/metrics/scale1.json"
    assert arms.arm_file(smoke, "cfg", 1, "1", "samples") == "results/smoke/arms/cfg/seed1/samples/scale1.npz"


def test_arm_guidance_flags_and_inputs(smoke):
    interval = arms.guidance_flags(smoke, SimpleNamespace(arm="interval"), SimpleNamespace(classifier="c.pt"))
    assert interval == ["--classifier", "c.pt", "--guidance-interval", "0.5897073450938983", "2.0"]
    assert arms.guidance_flags(smoke, SimpleNamespace(arm="cfg"), None) == ["--guidance", "cfg"]
    assert arms.arm_sample_inputs(smoke, SimpleNamespace(arm="cfg")) == {"model": "results/smoke/cfg_model/ema.pt"}
    # the CFG model is the main model fine-tuned (cfg_model.init: main): it starts from its checkpoint
    assert arms.cfg_model_inputs(smoke)["init"] == "results/smoke/diffusion/ema.pt"
    assert arms.cfg_init_flags(smoke) == ["--init-from", "results/smoke/diffusion/ema.pt"]
    scratch = {**smoke, "cfg_model": {}}
    assert "init" not in arms.cfg_model_inputs(scratch) and arms.cfg_init_flags(scratch) == []


def test_cfg_model_resources_default_to_the_diffusion_model(smoke):
    assert smoke["resources"]["train_cfg_model"] == smoke["resources"]["train_diffusion"]
    no_cfg = {"guidance_arms": [], "resources": {"train_diffusion": {"gpu": 1}}}
    arms.fill_cfg_model_resources(no_cfg)
    assert "train_cfg_model" not in no_cfg["resources"]


def test_no_arms_one_seed_adds_nothing(smoke):
    smoke["guidance_arms"], smoke["sampling"]["seeds"] = [], [0]
    assert arms.arm_targets(smoke) == [] and arms.comparison_report_inputs(smoke) == {}


def test_arm_points_get_fd_dinov2_records_only_when_it_is_on(smoke):
    """FD_DINOv2 off (the smoke and demo configs): the comparison's entries and inputs are those of a
    run without it. On: every run's record, Table 1's own for the first seed's classifier sweep."""
    assert not smoke["evaluation"]["fd_dinov2"]
    assert arms.comparison_entries(smoke) == arms.arm_entries(smoke) and arms.arm_fd_dinov2(smoke) == []
    smoke["evaluation"]["fd_dinov2"] = True
    entries = arms.comparison_entries(smoke)
    assert [e["fd_dinov2"] for e in entries] == arms.arm_fd_dinov2(smoke)
    by_run = {(e["arm"], e["seed"], e["scale"]): e["fd_dinov2"] for e in entries}
    assert by_run[("classifier", 0, 1.0)] == "results/smoke/metrics/fd_dinov2_scale1.json"
    assert by_run[("cfg", 1, 1.0)] == "results/smoke/arms/cfg/seed1/metrics/fd_dinov2_scale1.json"
    assert [{k: v for k, v in e.items() if k != "fd_dinov2"} for e in entries] == arms.arm_entries(smoke)


def test_fd_dinov2_flags_pass_the_pin_only_when_set(smoke):
    """fd_dinov2 (and its arm/published copies) passes evaluation.dinov2_sha256 to the FD record,
    which then says whether the weights have it; null: no flag (the reports label FD_DINOv2)."""
    assert smoke["evaluation"]["dinov2_sha256"] is None and commands.fd_dinov2_flags(smoke) == []
    smoke["evaluation"]["dinov2_sha256"] = "ab" * 32
    assert commands.fd_dinov2_flags(smoke) == ["--pinned-sha256", "ab" * 32]


def test_fd_dinov2_tradeoff_plot_only_when_it_is_on(smoke):
    """FD_DINOv2 off: the trade-off rule's outputs are the four files of a run without it (and the
    report shows two plots); on: plots/tradeoff_fd_dinov2.{png,svg} too, its PNG in the report."""
    plain = [f"results/smoke/plots/tradeoff_{n}.{e}" for n in ("pr", "fid_is") for e in ("png", "svg")]
    assert arms.tradeoff_plots(smoke) == plain
    assert arms.comparison_report_inputs(smoke)["tradeoff"] == plain[0::2]
    smoke["evaluation"]["fd_dinov2"] = True
    extra = ["results/smoke/plots/tradeoff_fd_dinov2.png", "results/smoke/plots/tradeoff_fd_dinov2.svg"]
    assert arms.tradeoff_plots(smoke) == plain + extra
    assert arms.comparison_report_inputs(smoke)["tradeoff"] == [*plain[0::2], extra[0]]
    assert arms.arm_targets(smoke)[2:8] == plain + extra


def test_published_check_joins_the_run_only_when_in_report(rehearsal):
    """published.in_report on an ImageNet run: report.html reads published.csv and `rule all` names
    the check's files; otherwise (the default, or a dataset without published batches) nothing."""
    cfg = copy.deepcopy(rehearsal)
    assert published.report_inputs(cfg) == {} and published.targets(cfg) == []
    assert not set(targets.final_targets(cfg)) & {"results/rehearsal/published.csv"}
    cfg["published"] = {"batches": ["admnet_imagenet128"]}
    assert published.report_inputs(cfg) == {}  # configured for the named target only
    cfg["published"]["in_report"] = True
    assert published.report_inputs(cfg) == {"published_csv": "results/rehearsal/published.csv"}
    assert {"results/rehearsal/published.csv", "results/rehearsal/published/batches/admnet_imagenet128.npz"} <= set(
        targets.final_targets(cfg)
    )
    assert published.fd_dinov2_files(cfg) == ["results/rehearsal/published/fd_dinov2/admnet_imagenet128.json"]
    cfg["evaluation"]["fd_dinov2"] = False
    assert published.fd_dinov2_files(cfg) == []
    cfg["dataset"] = "digits"
    assert published.report_inputs(cfg) == {} and published.targets(cfg) == []


# ---------------------------------------------------------------- upsampling


def test_demo_upsampling_arrangement(smoke):
    assert upsample.arrangement(smoke) == {"base_size": 8, "low_size": 4, "high_size": 8, "compare_paper": False}
    assert upsample.low_res_input(smoke, SimpleNamespace(scale="10")) == "results/smoke/upsample/lowres/scale10.npz"
    assert upsample.grids(smoke) == [
        "results/smoke/upsample/grids/scale10.png",
        "results/smoke/upsample/grids/lowres_scale10.png",
    ]
    assert upsample.reference(smoke) == "results/smoke/reference/ref.npz"


def test_paper_upsampling_arrangement(rehearsal):
    assert upsample.arrangement(rehearsal)["compare_paper"] is True
    assert upsample.low_res_input(rehearsal, SimpleNamespace(scale="1")) == "results/rehearsal/samples/scale1.npz"
    assert upsample.reference(rehearsal) == "results/rehearsal/upsample/reference/ref.npz"
    assert upsample.targets(rehearsal) == [
        "results/rehearsal/upsample/upsample_table.md",
        "results/rehearsal/upsample/upsample_table.csv",
        "results/rehearsal/upsample/grids/scale1.png",
        "results/rehearsal/upsample/samples/scale1/shard0.npz",
        "results/rehearsal/upsample/samples/scale1/shard1.npz",
        "results/rehearsal/upsample/samples/scale1.npz",
        "results/rehearsal/upsample/metrics/scale1.json",
        "results/rehearsal/upsample/bicubic/scale1.npz",
        "results/rehearsal/upsample/bicubic_metrics/scale1.json",
    ]  # no lowres/: ImageNet's base samples go into the upsampler as they are


# ---------------------------------------------------------------- SLURM resources


@pytest.mark.parametrize(
    "count, form, model, expected",
    [
        (0, "gpus", "a100", {}),
        (2, "gpus", "", {"gpu": 2}),
        (2, "gpus", "a100", {"gpu": 2, "gpu_model": "a100"}),
        (1, "gres", "", {"gres": "gpu:1"}),
        (4, "gres", "a100", {"gres": "gpu:a100:4"}),
    ],
)
def test_gpu_request(count, form, model, expected):
    assert slurm.gpu_request(count, form, model) == expected


def test_slurm_resources_of_a_rule():
    cfg = {
        "slurm": {"gpu_request": "gres", "gpu_model": "h100"},
        "resources": {"sample": {"gpu": 1, "slurm_partition": "gpu", "threads": 4}, "table1": {"gpu": 0}},
    }
    assert slurm.slurm_resources(cfg, "sample") == {"gres": "gpu:h100:1", "slurm_partition": "gpu"}
    assert slurm.slurm_resources(cfg, "table1") == {}
    assert slurm.res(cfg, "sample", "threads") == 4
    assert slurm.gpus_per_rule(cfg) == {"sample": 1, "table1": 0}


@pytest.mark.parametrize(
    "resources, gpus",
    [({"gpu": 3}, 3), ({"gres": "gpu:a100:2"}, 2), ({"gres": "gpu"}, 1), ({"gres": "tmp:10,gpu:4"}, 4), ({}, 0)],
)
def test_gpus_granted(resources, gpus):
    assert slurm.gpus_granted(resources) == gpus


def test_an_arms_note_reaches_its_comparison_entries_only_when_set(smoke):
    demo = load("config/config.yaml")
    notes = {e["arm"]: e.get("note") for e in arms.arm_entries(demo)}
    assert notes["interval"].startswith("chosen by snakemake interval_search on this model")
    assert notes["cfg"] is None and notes["classifier"] is None
    assert not any("note" in e for e in arms.arm_entries(smoke))  # no note: the entries as before
