"""The upsampling stage in the DAG (workflow/rules/upsample.smk) and its table/report module.

What each test catches (mutants tried by hand, see the helper's report):
- the table losing the base row beside an upsampled scale, or the demo label  -> test_rows_*
- the bicubic baseline row missing, misplaced or unlabelled                   -> test_rows_with_the_bicubic_*
- a paper row anywhere but the ImageNet 128 -> 512 setting, or with numbers not checked -> test_paper_row_*
- the stage's rules defined or its outputs requested while it is off          -> test_stage_off_*
- the paper config not passing the released file's preset / 512 reference    -> test_imagenet_upsample_dry_run
- an upsample GPU rule asking SLURM for no GPU (or a CPU rule asking for one) -> test_slurm_requests
- a config whose stage cannot run reaching the jobs                           -> test_bad_upsample_config_is_one_line
- the schema's preset enum drifting from adm.nets.presets.UPSAMPLER_LOW_RES        -> test_schema_enum_is_the_registry
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from test_workflow import IMAGENET, SMOKE, job_counts, snakemake, write_config

from adm.nets.presets import UPSAMPLER_LOW_RES
from adm.report.upsample_table import (
    PAPER_LABEL,
    Arrangement,
    section_html,
    upsample_rows,
    write_upsample_table,
)

ROOT = Path(__file__).resolve().parents[2]
DEMO_ARR = Arrangement(base_size=8, low_size=4, high_size=8)
PAPER_ARR = Arrangement(base_size=128, low_size=128, high_size=512, compare_paper=True)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _doc(fid, net="demo"):
    return {
        "metrics": {"fid": fid, "sfid": 2.0, "inception_score": 3.0, "precision": 0.5, "recall": 0.4},
        "ci": {"fid": [fid - 1, fid + 1]},
        "n_samples": 16,
        "feature_network": net,
        "settings": {"bootstrap": 10},
    }


def test_rows_put_the_base_row_beside_each_upsampled_scale(tmp_path):
    base = {0.0: _doc(20.0), 1.0: _doc(19.0), 10.0: _doc(30.0)}
    up = {1.0: _doc(25.0), 10.0: _doc(33.0)}
    rows = upsample_rows(base, up, DEMO_ARR)
    assert [(r["scale"], r["stage"], r["fid"]) for r in rows] == [
        (1.0, "base", 19.0),
        (1.0, "upsampled 4→8", 25.0),
        (10.0, "base", 30.0),
        (10.0, "upsampled 4→8", 33.0),
    ]
    write_upsample_table(base, up, DEMO_ARR, tmp_path / "t.csv", tmp_path / "t.md")
    md = (tmp_path / "t.md").read_text()
    assert "demo arrangement: base samples downsampled 8→4 then upsampled 4→8; not the paper's 128→512" in md
    assert "demo feature network" in md and "| 1 | upsampled 4→8 | 8x8 | 25.00 [24.00, 26.00] |" in md
    assert len((tmp_path / "t.csv").read_text().splitlines()) == 1 + 4
    html = section_html(base, up, DEMO_ARR, [("upsampled 8x8, scale 1", tmp_path / "g.png")], lambda p: "data:x")
    assert "not the paper&#x27;s 128→512" in html and 'src="data:x"' in html and PAPER_LABEL not in html


def test_rows_with_the_bicubic_baseline_between_base_and_upsampled(tmp_path):
    base, up, bicubic = {1.0: _doc(19.0), 10.0: _doc(30.0)}, {10.0: _doc(33.0)}, {10.0: _doc(40.0)}
    rows = upsample_rows(base, up, PAPER_ARR, bicubic)
    assert [(r["scale"], r["stage"], r["fid"]) for r in rows] == [
        (10.0, "base", 30.0),
        (10.0, "bicubic 128→512 (baseline, no network)", 40.0),
        (10.0, "upsampled 128→512", 33.0),
        (None, PAPER_LABEL, 3.85),
    ]
    write_upsample_table(base, up, PAPER_ARR, tmp_path / "t.csv", tmp_path / "t.md", interpolated=bicubic)
    md = (tmp_path / "t.md").read_text()
    assert "| 10 | bicubic 128→512 (baseline, no network) | 512x512 | 40.00 [39.00, 41.00] |" in md
    assert "inputs resized by bicubic interpolation and evaluated the same way" in md
    html = section_html(base, up, PAPER_ARR, [], lambda p: "data:x", interpolated=bicubic)
    assert "bicubic 128→512 (baseline, no network)" in html and "40.00" in html
    write_upsample_table(base, up, PAPER_ARR, tmp_path / "t.csv", tmp_path / "t.md")  # none: no row, no note
    assert "bicubic" not in (tmp_path / "t.md").read_text()


def test_paper_row_only_for_128_to_512_and_fid_only(tmp_path):
    up = {1.0: _doc(5.0, net="inception-v3-2015")}
    rows = upsample_rows({1.0: _doc(3.0, net="inception-v3-2015")}, up, PAPER_ARR)
    paper = rows[-1]
    assert paper["stage"] == PAPER_LABEL and paper["fid"] == 3.85
    assert all(paper[m] is None for m in ("sfid", "inception_score", "precision", "recall"))
    assert PAPER_LABEL not in [r["stage"] for r in upsample_rows({}, up, Arrangement(64, 64, 256))]
    write_upsample_table({}, up, PAPER_ARR, tmp_path / "t.csv", tmp_path / "t.md")
    assert "| – | paper: ADM-G + ADM-U" in (tmp_path / "t.md").read_text()
    assert "3.85 | – | – | – | –" in (tmp_path / "t.md").read_text()


def test_schema_enum_is_the_registry():
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    enum = schema["properties"]["upsample"]["properties"]["model"]["properties"]["preset"]["enum"]
    assert set(enum) == set(UPSAMPLER_LOW_RES)


def _dry(tmp_path, cfg):
    res = snakemake(tmp_path, "-n", "-p", "--cores", "2", "--configfile", str(cfg))
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout, job_counts(res.stdout)


UPSAMPLE_RULES = {
    "train_upsampler",
    "download_upsampler",
    "downsample_samples",
    "upsample",
    "merge_upsampled",
    "download_upsample_reference",
    "evaluate_upsampled",
    "upsample_table",
    "upsample_grid",
    "lowres_grid",
    "interpolate_lowres",
    "evaluate_interpolated",
}


def test_stage_off_runs_and_requests_nothing_of_it(tmp_path):
    out, counts = _dry(tmp_path, write_config(tmp_path / "c.yaml", SMOKE, upsample__enabled=False))
    assert not UPSAMPLE_RULES & set(counts) and "/upsample/" not in out
    out, counts = _dry(tmp_path, SMOKE)  # on: every rule of the demo arrangement
    assert UPSAMPLE_RULES - {"download_upsampler", "download_upsample_reference"} <= set(counts)
    assert counts["upsample"] == 2 and counts["train_upsampler"] == 1
    assert counts["evaluate_interpolated"] == counts["evaluate_upsampled"]  # one baseline per scale
    assert "-m adm train-upsampler" in out and "--model-preset demo-upsample" in out


def test_imagenet_upsample_dry_run(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", IMAGENET, upsample__enabled=True)
    out, counts = _dry(tmp_path, cfg)
    assert counts["download_upsampler"] == counts["download_upsample_reference"] == 1
    assert "train_upsampler" not in counts and "downsample_samples" not in counts
    shards = yaml.safe_load(IMAGENET.read_text())["upsample"]["num_shards"]
    assert counts["upsample"] == shards * len(yaml.safe_load(IMAGENET.read_text())["upsample"]["scales"])
    assert counts["interpolate_lowres"] == counts["evaluate_interpolated"] == counts["evaluate_upsampled"]
    cmd = re.search(r"-m adm upsample .*", out).group(0)
    assert "--model-preset upsample128-512" in cmd and "/samples/scale1.npz" in cmd and "--respacing 250" in cmd
    assert "results/imagenet128/pretrained/upsampler.pt" in cmd


def test_slurm_requests(tmp_path, monkeypatch):
    """GPU jobs of the stage carry the configured GPU request, its CPU jobs none (plugin's builder)."""
    from test_slurm import GPU_SMOKE, dry_run_jobs, gpu_flags, sbatch_call

    cfg = {
        **GPU_SMOKE,
        "upsample": {"enabled": True, "scales": [1.0]},
        "resources": {**GPU_SMOKE["resources"], "train_upsampler": {"gpu": 1}, "upsample": {"gpu": 1}},
    }
    jobs = dry_run_jobs(tmp_path, cfg)
    gpu = {"train_upsampler", "upsample", "evaluate_upsampled", "evaluate_interpolated"}
    seen = set()
    for rule, resources, threads in jobs:
        if rule in UPSAMPLE_RULES:
            seen.add(rule)
            assert gpu_flags(sbatch_call(resources, threads, monkeypatch)) == (["--gpus=1"] if rule in gpu else []), (
                rule
            )
    assert gpu | {"merge_upsampled", "downsample_samples", "interpolate_lowres"} <= seen


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"upsample__scales": [0.5]}, "upsample.scales [0.5] are not among sampling.scales"),
        (
            {"upsample__model": {"preset": "tiny-test-upsample"}},
            "upsample.model.preset 'tiny-test-upsample' makes 16x16 from 4x4, but the digits demo",
        ),
        ({"upsample__pretrained": True}, "upsample.pretrained: true needs dataset: imagenet"),
        ({"upsample__steps": 2000}, "upsample.steps: ddpm cannot take 2000 steps"),
        ({"upsample__model": {"preset": "nosuch"}}, "upsample.model.preset: 'nosuch' is not one of"),
    ],
)
def test_bad_upsample_config_is_one_line(tmp_path, changes, message):
    cfg = write_config(tmp_path / "bad.yaml", SMOKE, **changes)
    res = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(cfg))
    lines = res.stderr.splitlines()
    assert res.returncode == 1 and res.stdout == ""
    assert len(lines) == 1 and lines[0].startswith(f"invalid config: {message}"), res.stderr[-2000:]


@pytest.mark.parametrize(
    "changes,message",
    [
        (
            {"upsample__enabled": True, "upsample__model": {"preset": "upsample64-256"}},
            "upsample.model.preset 'upsample64-256' takes 64x64 images, but the base samples are 128x128",
        ),
        ({"upsample__enabled": True, "upsample__pretrained": False}, "upsample.pretrained: false would train"),
        (
            {"upsample__enabled": True, "upsample__checkpoint": "/nonexistent/128_512_upsampler.pt"},
            "upsample.checkpoint: no such file '/nonexistent/128_512_upsampler.pt'",
        ),
    ],
)
def test_bad_imagenet_upsample_config_is_one_line(tmp_path, changes, message):
    cfg = write_config(tmp_path / "bad.yaml", IMAGENET, **changes)
    res = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(cfg))
    lines = res.stderr.splitlines()
    assert res.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"invalid config: {message}"), res.stderr[
        -2000:
    ]
