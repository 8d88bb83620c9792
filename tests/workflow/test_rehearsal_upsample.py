"""Opt-in dress rehearsal of the upsampling stage on the paper config (ADM-G + ADM-U).

config/imagenet128.yaml + .test/config/rehearsal.yaml + .test/config/rehearsal_upsample.yaml: the default
rehearsal (tests/workflow/test_rehearsal.py) with the paper's upsample stage switched on for its one scale,
fed by a random-weight `upsample128-512` network in OpenAI's format (`128_512_upsampler.pt`) and a
VIRTUAL-style 512x512 reference batch, both served from 127.0.0.1 and fetched by the download
rules with pinned sha256s. 4 images x 2 steps of the 512x512 network cost 620 CPU-seconds
(measured 2026-12-03, README.md; 22 min wall for the whole module on the shared 2-core machine),
so the end-to-end run is skipped unless
ADM_BENCH_REHEARSAL_UPSAMPLE=1; the config guard and the dry run below always run (seconds).
"""

from __future__ import annotations

import html
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import rehearsal_fixtures as rf
import test_rehearsal as tr
import yaml
from PIL import Image

OVERLAY = tr.ROOT / ".test" / "config" / "rehearsal_upsample.yaml"
CONFIGS = (tr.PAPER, tr.REHEARSAL, OVERLAY)
ENV_FLAG = "ADM_BENCH_REHEARSAL_UPSAMPLE"
STAGE_RULES = {
    "download_upsampler",
    "download_upsample_reference",
    "upsample",
    "merge_upsampled",
    "evaluate_upsampled",
    "interpolate_lowres",
    "evaluate_interpolated",
    "upsample_table",
    "upsample_grid",
}

# What the overlay may change: switch the paper's stage on, where its 512 reference comes from,
# and sizes. Presets, checkpoint, pretrained, sampler, batch size, precision, scales: the paper's.
ALLOWED_CHANGES = re.compile(
    r"^(upsample\.(enabled|steps|num_shards|reference\.url)|resources\.upsample\.(threads|mem_mb))$"
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
opt_in = pytest.mark.skipif(
    os.environ.get(ENV_FLAG) != "1",
    reason=f"opt-in: {ENV_FLAG}=1 pytest tests/workflow/test_rehearsal_upsample.py (4 images x 2 steps of the "
    f"128->512 upsampler, ~620 CPU-s; ~22 min wall with the rest of the rehearsal on 2 cores)",
)


def test_overlay_switches_the_stage_on_and_changes_only_sources_and_sizes():
    paper, overlay = yaml.safe_load(tr.PAPER.read_text()), yaml.safe_load(OVERLAY.read_text())
    changed = tr.leaves(overlay)
    bad = sorted(k for k in changed if not ALLOWED_CHANGES.match(k))
    assert not bad, f"rehearsal_upsample.yaml changes more than sources and sizes: {bad}"
    paper_keys = tr.leaves(paper)
    missing = sorted(k for k in changed if k not in paper_keys)
    assert not missing, f"not keys of config/imagenet128.yaml: {missing}"
    assert overlay["upsample"]["enabled"] is True and paper["upsample"]["enabled"] is False
    assert len(paper["upsample"]["scales"]) == 1  # one upsampled scale, the paper config's
    rehearsal = yaml.safe_load(tr.REHEARSAL.read_text())
    assert set(paper["upsample"]["scales"]) <= set(rehearsal["sampling"]["scales"])
    assert rehearsal["sampling"]["num_samples"] % overlay["upsample"]["num_shards"] == 0
    assert not set(tr.leaves(rehearsal)) & set(changed)  # layered after it: nothing overridden


def test_overlay_runs_the_rules_of_the_paper_with_the_stage_on(tmp_path):
    """The same rules as the paper config with only upsample.enabled flipped: the rehearsal's
    DAG gains the stage's rules and nothing else."""
    on = tmp_path / "on.yaml"
    on.write_text(yaml.safe_dump({"upsample": {"enabled": True}}))
    paper = tr.snakemake(tmp_path, "-n", "--cores", "2", configfiles=(tr.PAPER, on))
    assert paper.returncode == 0, paper.stderr[-3000:]
    ours = tr.snakemake(tmp_path, "-n", "--cores", "2", configfiles=CONFIGS)
    assert ours.returncode == 0, ours.stderr[-3000:]
    assert tr.rules_in(ours.stdout) == tr.rules_in(paper.stdout)
    assert STAGE_RULES <= tr.rules_in(ours.stdout)


# ---------------------------------------------------------------- the opt-in run, end to end


def served_config(path: Path, url: str, files: dict) -> Path:
    """test_rehearsal's served URLs and pins, plus the upsampler's and the 512 reference's."""
    tr.served_config(path, url, files)
    cfg = yaml.safe_load(path.read_text())
    cfg["upsample"] = {
        "checkpoint_sha256": files["upsampler"]["sha256"],
        "reference": {
            "url": f"{url}/{files['upsample_reference']['path']}",
            "sha256": files["upsample_reference"]["sha256"],
        },
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory, dinov2_standin):
    """Build and serve the files (with the upsampler's), run the DAG; (workdir, files, res)."""
    served, workdir = tmp_path_factory.mktemp("served"), tmp_path_factory.mktemp("rehearsal_up")
    t0 = time.monotonic()
    files = rf.build_served_tree(served, upsample=True, dinov2=dinov2_standin)
    t1 = time.monotonic()
    with rf.FileServer(served) as server:
        extra = served_config(workdir / "served.yaml", server.url, files)
        res = tr.snakemake(workdir, "--cores", "2", configfiles=(*CONFIGS, extra), timeout=3600)
    t2 = time.monotonic()
    assert res.returncode == 0, res.stderr[-5000:]
    print(f"rehearsal with upsampling: fixtures {t1 - t0:.0f} s, DAG {t2 - t1:.0f} s")
    return workdir, files, res


@opt_in
@pytest.mark.slow
def test_upsampler_and_512_reference_arrive_by_the_download_rules(rehearsal):
    workdir, files, res = rehearsal
    run = workdir / "results" / tr.RUN
    for name, path in {
        "upsampler": run / "pretrained/upsampler.pt",
        "upsample_reference": run / "upsample/reference/ref.npz",
    }.items():
        assert rf.sha256_file(path) == files[name]["sha256"], name
    assert not (run / "pretrained/upsampler.json").exists()  # named by its preset, as OpenAI's
    assert STAGE_RULES | {"report_html"} <= tr.rules_in(res.stdout + res.stderr)
    assert not tr.no_partial_files(run)


@opt_in
@pytest.mark.slow
def test_upsampled_samples_are_512_with_the_base_labels(rehearsal):
    workdir, *_ = rehearsal
    run = workdir / "results" / tr.RUN
    with np.load(run / "samples/scale1.npz") as base, np.load(run / "upsample/samples/scale1.npz") as up:
        assert up["arr_0"].shape == (4, 512, 512, 3) and up["arr_0"].dtype == np.uint8
        assert np.array_equal(up["arr_1"], base["arr_1"])  # image i keeps low-res image i's label
        assert up["arr_0"].std() > 0
    shard = json.loads((run / "upsample/samples/scale1/shard1.json").read_text())
    assert shard["steps"] == 2 and shard["low_res_size"] == 128 and shard["first_index"] == 2
    assert shard["config"]["model_preset"] == "upsample128-512"
    doc = json.loads((run / "upsample/metrics/scale1.json").read_text())
    assert doc["image_size"] == 512 and doc["n_samples"] == 4 and doc["n_ref"] == 16
    assert doc["ref_stats_source"] == "npz"
    assert doc["feature_network"] != "inception-v3-2015"
    with (
        np.load(run / "samples/scale1.npz") as base,
        np.load(run / "upsample/bicubic/scale1.npz") as bicubic,
    ):  # the baseline: same inputs, no network
        assert bicubic["arr_0"].shape == (4, 512, 512, 3)
        assert np.array_equal(bicubic["arr_1"], base["arr_1"])
    doc = json.loads((run / "upsample/bicubic_metrics/scale1.json").read_text())
    assert doc["image_size"] == 512 and doc["n_samples"] == 4 and doc["ref_stats_source"] == "npz"


@opt_in
@pytest.mark.slow
def test_upsample_table_and_report_beside_the_paper(rehearsal):
    from adm.report.paper import UNVERIFIED_BANNER
    from adm.report.upsample_table import PAPER_LABEL

    workdir, *_ = rehearsal
    run = workdir / "results" / tr.RUN
    table = (run / "upsample/upsample_table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| 1 |")]
    assert [r.split(" | ")[1:3] for r in rows] == [
        ["base", "128x128"],
        ["bicubic 128→512 (baseline, no network)", "512x512"],
        ["upsampled 128→512", "512x512"],
    ], table
    paper_row = next(line for line in table.splitlines() if PAPER_LABEL in line)
    assert "| 3.85 |" in paper_row, paper_row
    assert "unverified feature graph" in table
    page = (workdir / "results" / "report.html").read_text()
    start = page.index("Upsampling stage (ADM-G + ADM-U)")
    end = page.find("<h2", start)
    section = page[start : end if end > 0 else None]  # to the next section
    text = re.sub(r'src="data:[^"]*"', "", section)  # base64 images could spell any word
    assert html.escape(PAPER_LABEL) in text and "3.85" in text
    assert "unverified feature graph" in text and html.escape(UNVERIFIED_BANNER) in page
    assert "base samples (128x128) upsampled 128→512" in text
    assert "<td>bicubic 128→512 (baseline, no network)</td>" in text
    assert "demo" not in text.lower()  # the paper's arrangement, not the digits demo's
    for caption in ("base 128x128, scale 1", "upsampled 512x512, scale 1"):
        assert f"<figcaption>{caption}</figcaption>" in text, caption
    for png, size in ((run / "grids/scale1.png", 128), (run / "upsample/grids/scale1.png", 512)):
        with Image.open(png) as im:  # 2 columns x 2 rows of tiles at their own size, 2 px padding
            assert im.size == (2 * (size + 2) + 2,) * 2, (png, im.size)
