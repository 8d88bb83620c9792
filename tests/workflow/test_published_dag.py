"""The published-samples check (named target `published`) as a DAG, rehearsed on served stand-ins.

OpenAI's sample batches, the Inception graph and the DINOv2 weights cannot be downloaded here, so
files of the same kinds are served on 127.0.0.1 (tests/workflow/rehearsal_fixtures.py): a stand-in
graph, the session's DINOv2 ViT-L/14 stand-in (tests/conftest.py), a VIRTUAL-style 128 reference
batch and two "published" batches of smooth random images at OpenAI's relative paths. The real
rules download, evaluate (the sweep's own evaluation rule), take FD_DINOv2 (the sweep's features
and FD rules) and compare:
1. against the real published values: the stand-in batches cannot match, so the table job fails
   with one line naming batch, metric, published value and ours, and leaves no table;
2. against `published.expected` set to the values the DAG computed: the table is written, with
   the *unverified feature graph* label and an FD_DINOv2 row per batch ("not published"), and
   report.html's section made from it shows them;
3. a doctored batch (other images under the same URL): the check fails again, naming that batch.
"""

from __future__ import annotations

import html
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rehearsal_fixtures as rf
import yaml
from test_rehearsal import PAPER, REHEARSAL, ROOT, rules_in, snakemake
from test_workflow import job_counts

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BATCHES = ("admnet_imagenet128", "admnet_guided_imagenet128")
BASE = "diffusion/jul-2021/ref_batches/imagenet/"
ONE_LINE = r"error: {batch}: (FID|sFID|IS|Precision|Recall) published [\d.]+ \({source}\), ours \S+: outside the published digits"


def test_paper_config_has_the_published_target(tmp_path):
    res = snakemake(tmp_path, "-n", "published", configfiles=(PAPER,))
    assert res.returncode == 0, res.stderr[-3000:]
    assert job_counts(res.stdout) == {
        "download_graph": 1,
        "download_published": 2,
        "download_published_reference": 1,
        "evaluate_published": 2,
        # FD_DINOv2 (on in the paper config): the sweep's weights, features of both batches and
        # their reference batch, an FD record per batch
        "download_dinov2": 1,
        "published_dinov2_features": 3,
        "published_fd_dinov2": 2,
        "published_table": 1,
        "published": 1,
        "total": 14,
    }
    table = res.stdout.split("rule published_table:", 1)[1].split("\n\n", 1)[0]
    assert "published/fd_dinov2/admnet_imagenet128.json" in table
    # where they come from (script params are not printed by a dry run: ask the workflow's library)
    sys.path.insert(0, str(ROOT))
    from workflow.lib import published

    assert published.batch_url({}, "admnet_guided_imagenet128") == (
        "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet/128/admnet_guided_imagenet128.npz"
    )
    assert published.reference_url({}, "VIRTUAL_imagenet128_labeled").endswith(
        "/imagenet/128/VIRTUAL_imagenet128_labeled.npz"
    )
    # and the default run of the paper config does not download the published batches
    res = snakemake(tmp_path, "-n", configfiles=(PAPER,))
    assert "download_published" not in rules_in(res.stdout)
    # unless published.in_report: then report.html reads the check's table
    (tmp_path / "in_report.yaml").write_text(yaml.safe_dump({"published": {"in_report": True}}))
    res = snakemake(tmp_path, "-n", configfiles=(PAPER, tmp_path / "in_report.yaml"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert {"download_published", "published_table", "published_fd_dinov2"} <= rules_in(res.stdout)
    report = res.stdout.split("rule report_html:", 1)[1].split("\n\n", 1)[0]
    assert "results/imagenet128/published.csv" in report


# Images per served batch: the fewest the evaluator takes (precision/recall with k = 3 need 4), as
# few in the reference batch: each costs ~2 CPU-seconds of ViT-L/14 features (FD_DINOv2) besides Inception.
N_SAMPLES, N_REF = 4, 8


def write_batch(path: Path, seed: int, n: int = N_SAMPLES) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = np.random.default_rng(seed + 7).integers(0, 1000, n, dtype=np.int64)
    np.savez(path, arr_0=rf.random_images(n, 128, seed), arr_1=labels)


def served_overlay(path: Path, url: str, files: dict, expected: dict | None = None) -> Path:
    cfg = {  # FD_DINOv2 on, as in the paper config: the stand-in weights pinned by their sha256
        "evaluation": {
            "graph_url": f"{url}/{files['graph']['path']}",
            "fd_dinov2": True,
            "dinov2_url": f"{url}/{files['dinov2']['path']}",
            "dinov2_sha256": files["dinov2"]["sha256"],
        },
        "published": {
            "base_url": f"{url}/{BASE}",
            "batches": list(BATCHES),
            **({"expected": expected} if expected else {}),
        },
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def table_error(run: Path) -> str:
    lines = [line for line in (run / "logs/published/table.log").read_text().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


def fd_rows_in_table(run: Path, md: str, section: str) -> None:
    """An FD_DINOv2 row per batch in published.csv, published.md and the report's section: the
    value of the batch's FD record (finite, >= 0), nothing published beside it, the verdict "not
    published", the DINOv2 network named (its weights pinned: no unverified-weights label); the table keeps the stand-in graph's label."""
    from adm.report.paper import DINOV2_UNVERIFIED, UNVERIFIED_BANNER
    from adm.report.published import FD_DINOV2_NOTE, read_published_csv

    rows = [r for r in read_published_csv(run / "published.csv") if r["metric"] == "fd_dinov2"]
    assert [r["batch"] for r in rows] == list(BATCHES)
    for r in rows:
        record = json.loads((run / f"published/fd_dinov2/{r['batch']}.json").read_text())
        value = float(r["ours"])
        assert np.isfinite(value) and value >= 0 and value == record["metrics"]["fd_dinov2"]
        assert record["n_samples"] == N_SAMPLES and record["n_ref"] == N_REF
        assert (r["published"], r["source"], r["verdict"]) == ("", "", "not published")
        assert r["feature_network"] == record["feature_network"] == "dinov2-vitl14"
        assert record["weights_pinned"] is True  # the config pins the stand-in's sha256: no label
        cells = f"| {r['batch']} | — | FD_DINOv2 | — | {value:.6g} | – | – | not published |"
        assert cells in md
        assert f"<td>FD_DINOv2</td><td>—</td><td>{value:.6g}</td>" in section
    assert md.count("| FD_DINOv2 |") == len(BATCHES) and FD_DINOV2_NOTE in md
    assert md.splitlines()[2] == f"**{UNVERIFIED_BANNER}**"  # the stand-ins' label, over every row
    assert html.escape(FD_DINOV2_NOTE) in section and DINOV2_UNVERIFIED not in md + section


@pytest.mark.slow
def test_published_check_end_to_end_on_served_stand_ins(tmp_path, dinov2_standin):
    served, workdir = tmp_path / "served", tmp_path / "work"
    workdir.mkdir()
    t0 = time.monotonic()
    files = {
        "graph": {"path": rf.GRAPH_PATH, "sha256": rf.write_graph(served / rf.GRAPH_PATH)},
        "dinov2": {"path": rf.DINOV2_PATH, "sha256": rf.place(dinov2_standin, served / rf.DINOV2_PATH)},
    }
    rf.write_reference_batch(served / rf.REFERENCE_PATH, served / rf.GRAPH_PATH, N_REF, 128, 0)
    for i, name in enumerate(BATCHES):
        write_batch(served / BASE / f"128/{name}.npz", seed=10 + i)
    run = workdir / "results" / "rehearsal"
    with rf.FileServer(served) as server:
        # 1. the real published values: stand-ins cannot match them
        overlay = served_overlay(workdir / "served.yaml", server.url, files)
        res = snakemake(workdir, "--cores", "2", "published", configfiles=(PAPER, REHEARSAL, overlay), timeout=900)
        assert res.returncode != 0
        line = table_error(run)
        assert re.fullmatch(
            ONE_LINE.format(batch="admnet_imagenet128", source=r"(paper Table 1, scale 0|OpenAI README .*)"), line
        ), line
        assert not (run / "published.md").exists() and not (run / "published.csv").exists()
        ours = {b: json.loads((run / f"published/metrics/{b}.json").read_text()) for b in BATCHES}
        assert {r["feature_network"] for r in ours.values()} == {"unverified feature graph"}

        # 2. expected = what the DAG computed: the table is written and labelled
        expected = {b: ours[b]["metrics"] for b in BATCHES}
        overlay = served_overlay(workdir / "served.yaml", server.url, files, expected)
        res = snakemake(workdir, "--cores", "2", "published", configfiles=(PAPER, REHEARSAL, overlay), timeout=900)
        assert res.returncode == 0, res.stderr[-3000:]
        assert "evaluate_published" not in rules_in(res.stdout)  # only the table job re-ran
        text = (run / "published.md").read_text()
        assert "unverified feature graph" in text
        for b in BATCHES:
            assert f"- {b}: matches expected (config)" in text
        # report.html's section (published.in_report) from the same CSV: the label and what the source is
        from adm.report.published import EXPECTED_NOTE, render_section

        section = render_section(run / "published.csv")
        assert '<div class="banner">unverified feature graph' in section
        assert "<td>expected (config)</td>" in section and html.escape(EXPECTED_NOTE) in section
        fd_rows_in_table(run, text, section)

        # 3. a doctored batch under the same URL: the check fails, naming it
        write_batch(served / BASE / "128/admnet_guided_imagenet128.npz", seed=99)
        (run / "published/batches/admnet_guided_imagenet128.npz").unlink()
        res = snakemake(workdir, "--cores", "2", "published", configfiles=(PAPER, REHEARSAL, overlay), timeout=900)
        assert res.returncode != 0
        line = table_error(run)
        assert re.fullmatch(ONE_LINE.format(batch="admnet_guided_imagenet128", source=r"expected \(config\)"), line), (
            line
        )
        assert not (run / "published.md").exists()
    print(f"published rehearsal: {time.monotonic() - t0:.0f} s")
