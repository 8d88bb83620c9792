"""Dress rehearsal of the paper config (config/imagenet128.yaml + .test/config/rehearsal.yaml), and bad
input on the paper path.

The rehearsal serves files of the kinds the paper config downloads (tests/workflow/rehearsal_fixtures.py)
from 127.0.0.1 and runs the paper's DAG on them through the real download rules: OpenAI-format
128x128 checkpoints with no JSON beside them, a VIRTUAL-style reference batch with precomputed
statistics, a frozen graph with Inception's tensor names, 2 scales x 4 samples x 2 steps, the
evaluation and the report with the paper's columns. The faults (a checkpoint of another
architecture, a reference batch at another resolution, a URL that answers an HTML page) drive the
programs or the single rule directly, so they stay fast.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rehearsal_fixtures as rf
import yaml

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "config" / "imagenet128.yaml"
REHEARSAL = ROOT / ".test" / "config" / "rehearsal.yaml"
RUN = "rehearsal"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# What .test/config/rehearsal.yaml may change: where files come from, the device, sizes. Anything else
# (presets, sampler, labels, pretrained, dataset, image size, batch size, ...) is the paper's.
ALLOWED_CHANGES = re.compile(
    r"^(run|device|checkpoints\.base_url|reference\.url|evaluation\.(graph_url|dinov2_url|cache_dir|bootstrap)"
    r"|sampling\.(scales|num_samples|num_shards|steps)|grids\.(num_images|columns)"
    r"|resources\.\w+\.(threads|mem_mb))$"
)


def leaves(tree: dict, prefix: str = "") -> dict:
    """{'sampling.steps': 2, ...}: the dotted keys of a nested config."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def snakemake(
    workdir: Path, *args: str, configfiles=(PAPER, REHEARSAL), timeout: float = 300
) -> subprocess.CompletedProcess:
    """The venv's snakemake on the repository's Snakefile, the paper config first."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        *args,
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        *map(str, configfiles),
    ]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


def rules_in(output: str) -> set[str]:
    """Rule names of the jobs a (dry) run lists."""
    return set(re.findall(r"^(?:local)?rule (\w+):", output, re.M)) - {"default", "all"}


def served_config(path: Path, url: str, files: dict) -> Path:
    """The third config file: the served URLs (the port is chosen at run time)."""
    cfg = {  # and the pinned sha256 of each file, as a user pins OpenAI's
        "checkpoints": {
            "base_url": f"{url}/{rf.CHECKPOINT_DIR}/",
            "diffusion_sha256": files["diffusion"]["sha256"],
            "classifier_sha256": files["classifier"]["sha256"],
        },
        "reference": {"url": f"{url}/{files['reference']['path']}", "sha256": files["reference"]["sha256"]},
        "evaluation": {
            "graph_url": f"{url}/{files['graph']['path']}",
            "graph_sha256": files["graph"]["sha256"],
            "dinov2_url": f"{url}/{files['dinov2']['path']}",
            "dinov2_sha256": files["dinov2"]["sha256"],
        },
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def no_partial_files(folder: Path) -> list[Path]:
    """Leftovers of an interrupted write: *.part, *.tmp*, dot-temporaries (the downloader's
    empty `.NAME.lock` files, kept for the next flock, are not data)."""
    return [
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not p.name.endswith(".lock")
        and (p.suffix == ".part" or ".tmp" in p.name or p.name.startswith("."))
    ]


def one_error_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    assert "Traceback" not in text
    return lines[0]


# ---------------------------------------------------------------- the config and the fixtures


def test_rehearsal_changes_only_sources_and_sizes():
    """rehearsal.yaml is layered over the paper config and may not change what the paper runs."""
    paper, rehearsal = yaml.safe_load(PAPER.read_text()), yaml.safe_load(REHEARSAL.read_text())
    changed = leaves(rehearsal)
    assert changed, ".test/config/rehearsal.yaml is empty"
    bad = sorted(k for k in changed if not ALLOWED_CHANGES.match(k))
    assert not bad, f"rehearsal.yaml changes more than sources and sizes: {bad}"
    paper_keys = leaves(paper)
    for key in changed:  # every size it changes exists in the paper config (no new branch)
        if key.startswith(("resources.", "sampling.", "grids.", "checkpoints.", "reference.")):
            assert key in paper_keys, f"{key} is not a key of config/imagenet128.yaml"
    assert set(rehearsal["sampling"]["scales"]) <= set(paper["sampling"]["scales"])
    assert rehearsal["sampling"]["num_samples"] > 3  # precision/recall (k = 3) need 4 images


def test_paper_and_rehearsal_run_the_same_rules(tmp_path):
    """The rehearsal's DAG has exactly the rules of the paper's DAG: no rule it skips, none of
    its own."""
    paper = snakemake(tmp_path, "-n", "--cores", "2", configfiles=(PAPER,))
    assert paper.returncode == 0, paper.stderr[-3000:]
    rehearsal = snakemake(tmp_path, "-n", "--cores", "2")
    assert rehearsal.returncode == 0, rehearsal.stderr[-3000:]
    assert rules_in(rehearsal.stdout) == rules_in(paper.stdout)
    assert {
        "download_checkpoint",
        "download_reference",
        "sample",
        "merge_shards",
        "evaluate",
        "report_html",
    } <= rules_in(paper.stdout)


def test_openai_checkpoint_fixture_loads_float16_and_float32(tmp_path):
    """The 128x128 classifier in OpenAI's format (no JSON beside it) loads by preset name, and
    its float16-stored tensors arrive as float32 with the stored values."""
    import torch

    from adm.nets.checkpoints import load_model, sidecar_path

    path = tmp_path / "128x128_classifier.pt"
    rf.write_openai_checkpoint("imagenet128-classifier", path, seed=3)
    assert not sidecar_path(path).exists()
    stored = torch.load(path, weights_only=True)
    assert {v.dtype for v in stored.values()} == {torch.float16, torch.float32}
    assert all(v.abs().sum() > 0 for v in stored.values())  # no zero layer hides a wiring bug
    model, cfg = load_model(path, "imagenet128-classifier", expect_kind="classifier")
    assert cfg.image_size == 128
    loaded = model.state_dict()
    for key, value in stored.items():
        assert loaded[key].dtype == torch.float32
        assert torch.equal(loaded[key], value.float()), key


@pytest.mark.parametrize("network, labelled", [("unverified feature graph", True), ("inception-v3-2015", False)])
def test_report_labels_numbers_of_an_unverified_graph(tmp_path, network, labelled):
    """The paper's columns stay, but numbers from a graph the evaluator could not verify as
    Inception (the rehearsal's stand-in) carry a banner in the table and the HTML report."""
    from adm.report import html as report_html
    from adm.report import table
    from adm.report.paper import UNVERIFIED_BANNER

    results = {
        s: {
            "metrics": {"fid": 300.0, "sfid": 900.0, "inception_score": 1.0, "precision": 0.0, "recall": 0.0},
            "ci": {},
            "n_samples": 4,
            "n_ref": 16,
            "feature_network": network,
            "settings": {"bootstrap": 2},
        }
        for s in (0.0, 1.0)
    }
    table.write_table1(results, tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "t.tex", True)
    page = report_html.render_report(
        report_html.ReportInputs(results=results, compare_paper=True, plots=[], grids={}, config={}, repo=tmp_path)
    )
    for text in ((tmp_path / "t.md").read_text(), page):
        assert "FID (paper)" in text and "5.91" in text
        assert (UNVERIFIED_BANNER in text) == labelled


# ---------------------------------------------------------------- the rehearsal, end to end


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory, dinov2_standin):
    """Build the served files, serve them, run the paper DAG on them; (workdir, files, timings).
    The DINOv2 stand-in is the session's (tests/conftest.py), shared with the published rehearsal."""
    served, workdir = tmp_path_factory.mktemp("served"), tmp_path_factory.mktemp("rehearsal")
    t0 = time.monotonic()
    files = rf.build_served_tree(served, dinov2=dinov2_standin)
    t1 = time.monotonic()
    with rf.FileServer(served) as server:
        extra = served_config(workdir / "served.yaml", server.url, files)
        res = snakemake(workdir, "--cores", "2", configfiles=(PAPER, REHEARSAL, extra), timeout=1800)
    t2 = time.monotonic()
    assert res.returncode == 0, res.stderr[-5000:]
    timings = {"fixtures_s": t1 - t0, "dag_s": t2 - t1}
    print(f"rehearsal: fixtures {timings['fixtures_s']:.0f} s, DAG {timings['dag_s']:.0f} s")
    return workdir, files, timings, res


@pytest.mark.slow
def test_rehearsal_downloads_through_the_rules(rehearsal):
    """The checkpoints and the reference arrive by the download rules, byte for byte, and the
    checkpoints carry no JSON (so sampling named their presets, as for OpenAI's files)."""
    workdir, files, _, res = rehearsal
    run = workdir / "results" / RUN
    got = {
        "diffusion": run / "pretrained/diffusion.pt",
        "classifier": run / "pretrained/classifier.pt",
        "reference": run / "reference/ref.npz",
        "graph": run / "inception/classify_image_graph_def.pb",
        "dinov2": run / "dinov2/dinov2_vitl14_pretrain.pth",  # the session's stand-in, linked into the tree
    }
    for name, path in got.items():
        assert rf.sha256_file(path) == files[name]["sha256"], name
    lock = json.loads((run / "provenance/feature_graph.lock").read_text())
    assert lock["sha256"] == files["graph"]["sha256"]  # the run's provenance pins the served graph
    assert not (run / "pretrained/diffusion.json").exists()
    assert not (run / "pretrained/classifier.json").exists()
    assert {"download_checkpoint", "download_reference", "download_graph"} <= rules_in(res.stdout + res.stderr)
    assert not no_partial_files(run) and not no_partial_files(workdir / ".cache")


@pytest.mark.slow
def test_rehearsal_samples_at_128(rehearsal):
    workdir, *_ = rehearsal
    run = workdir / "results" / RUN
    cfg = yaml.safe_load(REHEARSAL.read_text())["sampling"]
    with np.load(run / "samples/scale0.npz") as s0, np.load(run / "samples/scale1.npz") as s1:
        assert np.array_equal(s0["arr_1"], s1["arr_1"])  # same labels (and noise) at every scale
        assert not np.array_equal(s0["arr_0"], s1["arr_0"])  # the classifier's gradient acted
    for scale in ("0", "1"):
        with np.load(run / f"samples/scale{scale}.npz") as data:
            images, labels = data["arr_0"], data["arr_1"]
        assert images.shape == (cfg["num_samples"], 128, 128, 3) and images.dtype == np.uint8
        assert labels.min() >= 0 and labels.max() < 1000
        assert images.std() > 0
        shard = json.loads((run / f"samples/scale{scale}/shard0.json").read_text())
        assert shard["steps"] == cfg["steps"]
        assert shard["config"]["model_preset"] == "imagenet128-cond"


@pytest.mark.slow
def test_rehearsal_evaluates_with_the_precomputed_statistics(rehearsal):
    workdir, *_ = rehearsal
    for scale in ("0", "1"):
        doc = json.loads((workdir / f"results/{RUN}/metrics/scale{scale}.json").read_text())
        assert doc["image_size"] == 128 and doc["n_samples"] == 4 and doc["n_ref"] == 16
        assert doc["ref_stats_source"] == "npz"  # mu/sigma/mu_s/sigma_s read, as the reference does
        assert all(np.isfinite(v) for v in doc["metrics"].values())
        # a stand-in graph: never called Inception
        assert doc["feature_network"] != "inception-v3-2015"
        # FD_DINOv2 (on in the paper config): the ViT-L/14 stand-in's features through the real rules
        fd = json.loads((workdir / f"results/{RUN}/metrics/fd_dinov2_scale{scale}.json").read_text())
        assert fd["feature_network"] == "dinov2-vitl14" and fd["n_samples"] == 4 and fd["n_ref"] == 16
        assert np.isfinite(fd["metrics"]["fd_dinov2"]) and fd["metrics"]["fd_dinov2"] >= 0
        assert fd["weights_pinned"] is True  # the config pins the stand-in's sha256
    from adm.report.paper import DINOV2_UNVERIFIED_REASON

    table1 = (workdir / f"results/{RUN}/table1.md").read_text()
    assert "FD_DINOv2" in table1 and DINOV2_UNVERIFIED_REASON not in table1


@pytest.mark.slow
def test_rehearsal_report_shows_the_paper_columns_and_the_graph_label(rehearsal):
    workdir, *_ = rehearsal
    html = (workdir / "results" / "report.html").read_text()
    table = (workdir / f"results/{RUN}/table1.md").read_text()
    for text in (html, table):
        for column in (
            "FID (ours)",
            "FID (paper)",
            "ΔFID",
            "sFID (paper)",
            "IS (paper)",
            "Precision (paper)",
            "Recall (paper)",
        ):
            assert column in text, column
        assert "5.91" in text and "3.01" in text  # the paper's FID at scales 0 and 1
        assert "unverified" in text.lower()  # the stand-in graph is labelled as such
    assert "demo feature network" not in html


# ---------------------------------------------------------------- bad input on the paper path


def shape_only_state_dict(preset: str):
    """The keys and shapes of `preset` as zero tensors with stride 0: a file of a few kB that the
    loader sees exactly as it would see that network's weights (their values are never read
    before the shapes are checked)."""
    import torch

    from adm.nets.build import build_model
    from adm.nets.presets import get_preset

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in build_model(get_preset(preset)).state_dict().items()}
    return {k: torch.zeros(()).expand(shape) for k, shape in shapes.items()}


def run_program(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "model_preset, classifier_preset, wrong",
    [
        ("imagenet64-cond", "imagenet128-classifier", "diffusion.pt"),  # the 64x64 model for the 128
        ("imagenet128-cond", "imagenet64-classifier", "classifier.pt"),  # the 64x64 classifier
        ("imagenet128-classifier", "imagenet128-classifier", "diffusion.pt"),  # a classifier as model
    ],
)
def test_checkpoint_of_the_wrong_architecture_stops_sampling(tmp_path, model_preset, classifier_preset, wrong):
    """The sample rule's command, with the paper's presets, on a file of another network."""
    import torch

    torch.save(shape_only_state_dict(model_preset), tmp_path / "diffusion.pt")
    torch.save(shape_only_state_dict(classifier_preset), tmp_path / "classifier.pt")
    out = tmp_path / "samples" / "shard0.npz"
    res = run_program(
        "adm",
        "sample",
        "--model",
        "diffusion.pt",
        "--classifier",
        "classifier.pt",
        "--model-preset",
        "imagenet128-cond",
        "--classifier-preset",
        "imagenet128-classifier",
        "--scale",
        "1",
        "--num-samples",
        "4",
        "--shard",
        "0",
        "--num-shards",
        "2",
        "--respacing",
        "2",
        "--device",
        "cpu",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert res.returncode == 2
    line = one_error_line(res.stderr)
    assert line.startswith("error: ") and wrong in line, line
    assert "do not fit" in line, line
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert not no_partial_files(tmp_path)


@pytest.fixture(scope="module")
def standin_graph(tmp_path_factory):
    path = tmp_path_factory.mktemp("graph") / "classify_image_graph_def.pb"
    rf.write_graph(path)
    return path


def test_reference_batch_at_the_wrong_resolution_stops_the_evaluation(tmp_path, standin_graph):
    """A VIRTUAL-style 64x64 batch (precomputed statistics included) against 128x128 samples."""
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "ref.npz",
        arr_0=rf.random_images(16, 64, 0),
        arr_1=rng.integers(0, 1000, 16),
        mu=np.zeros(2048),
        sigma=np.eye(2048),
        mu_s=np.zeros(2023),
        sigma_s=np.eye(2023),
    )
    np.savez(tmp_path / "scale1.npz", arr_0=rf.random_images(4, 128, 1), arr_1=rng.integers(0, 1000, 4))
    out = tmp_path / "metrics" / "scale1.json"
    res = run_program(
        "evaluations.evaluator",
        "ref.npz",
        "scale1.npz",
        "--graph",
        str(standin_graph),
        "--bootstrap",
        "2",
        "--threads",
        "1",
        "--feature-cache",
        "cache",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert res.returncode != 0
    line = one_error_line(res.stderr)
    assert "128x128" in line and "64x64" in line, line
    assert not out.exists() and not (tmp_path / "metrics").exists()


@pytest.mark.parametrize(
    "target", ["pretrained/classifier.pt", "reference/ref.npz", "inception/classify_image_graph_def.pb"]
)
def test_url_that_answers_html_stops_the_download(tmp_path, target):
    """The download rules, pointed at a page that answers 200 with HTML (a sign-in portal):
    the job fails with one line in its log and nothing is left under the target's name."""
    with rf.FileServer(tmp_path) as server:
        trap = f"{server.url}/{rf.HTML_PATH.rsplit('/', 1)[0]}"
        extra = tmp_path / "served.yaml"
        extra.write_text(
            yaml.safe_dump(
                {
                    "checkpoints": {"base_url": f"{trap}/"},
                    "reference": {"url": f"{trap}/VIRTUAL_imagenet128_labeled.npz"},
                    "evaluation": {"graph_url": f"{trap}/classify_image_graph_def.pb"},
                }
            )
        )
        res = snakemake(
            tmp_path, "--cores", "1", f"results/{RUN}/{target}", configfiles=(PAPER, REHEARSAL, extra), timeout=120
        )
    assert res.returncode != 0
    run = tmp_path / "results" / RUN
    assert not (run / target).exists() and not (run / "provenance/feature_graph.lock").exists()
    assert not no_partial_files(run)
    assert not (tmp_path / ".cache").exists() or not no_partial_files(tmp_path / ".cache")
    logs = list((run / "logs").glob("*.log"))
    assert len(logs) == 1, logs
    line = one_error_line(logs[0].read_text())
    assert "html" in line.lower(), line


@pytest.mark.parametrize("target", ["pretrained/classifier.pt", "reference/ref.npz"])
def test_pinned_sha256_refuses_another_file(tmp_path, target):
    """A config that pins a file's sha256 refuses a served file of another content in one line
    (nothing renamed into place), and accepts the file it pins."""
    import torch

    served = tmp_path / "served"
    served.mkdir()
    torch.save(shape_only_state_dict("imagenet128-classifier"), served / "128x128_classifier.pt")
    np.savez(served / "VIRTUAL_imagenet128_labeled.npz", arr_0=np.zeros((2, 128, 128, 3), np.uint8))
    name = {
        "pretrained/classifier.pt": "128x128_classifier.pt",
        "reference/ref.npz": "VIRTUAL_imagenet128_labeled.npz",
    }[target]
    true_sha = rf.sha256_file(served / name)
    with rf.FileServer(served) as server:
        for work, pin in (("wrong", "0" * 64), ("right", true_sha)):
            workdir = tmp_path / work
            workdir.mkdir()
            extra = workdir / "served.yaml"
            extra.write_text(
                yaml.safe_dump(
                    {
                        "checkpoints": {"base_url": f"{server.url}/", "classifier_sha256": pin},
                        "reference": {"url": f"{server.url}/{name}", "sha256": pin},
                    }
                )
            )
            res = snakemake(
                workdir, "--cores", "1", f"results/{RUN}/{target}", configfiles=(PAPER, REHEARSAL, extra), timeout=120
            )
            run = workdir / "results" / RUN
            if work == "wrong":
                assert res.returncode != 0 and not (run / target).exists(), res.stderr[-3000:]
                assert (run / "logs").is_dir(), res.stderr[-3000:]
                assert not no_partial_files(run)
                line = one_error_line(next((run / "logs").glob("*.log")).read_text())
                assert "sha256" in line and "0" * 64 in line, line
            else:
                assert res.returncode == 0, res.stderr[-3000:]
                assert rf.sha256_file(run / target) == true_sha


@pytest.mark.parametrize(
    "target, served, says",
    [
        ("reference/ref.npz", "VIRTUAL_imagenet128_labeled.npz", "a reference batch of 64x64 images"),
        ("pretrained/classifier.pt", "128x128_classifier.pt", "weights do not fit a classifier"),
    ],
)
def test_file_that_does_not_fit_its_role_stops_the_download(tmp_path, target, served, says):
    """The download rules check what they fetched for its role from headers, keys and shapes only:
    a 64x64 reference batch (precomputed statistics and all) for the 128x128 run, the 64x64
    classifier under the 128x128 one's name. The job fails with one line, nothing stays under the
    target's name (nor its recorded sha256), and no sampling or evaluation ever sees the file."""
    import torch

    folder = tmp_path / "served"
    folder.mkdir()
    if served.endswith(".npz"):
        stats = dict(mu=np.zeros(4), sigma=np.eye(4), mu_s=np.zeros(4), sigma_s=np.eye(4))
        np.savez(folder / served, arr_0=rf.random_images(2, 64, 0), arr_1=np.arange(2), **stats)
    else:
        torch.save(shape_only_state_dict("imagenet64-classifier"), folder / served)
    with rf.FileServer(folder) as server:
        extra = tmp_path / "served.yaml"
        extra.write_text(
            yaml.safe_dump(
                {"checkpoints": {"base_url": f"{server.url}/"}, "reference": {"url": f"{server.url}/{served}"}}
            )
        )
        res = snakemake(
            tmp_path, "--cores", "1", f"results/{RUN}/{target}", configfiles=(PAPER, REHEARSAL, extra), timeout=120
        )
    run = tmp_path / "results" / RUN
    assert res.returncode != 0, res.stderr[-3000:]
    assert not (run / target).exists() and not (run / f"{target}.sha256").exists()
    assert not no_partial_files(run)
    line = one_error_line(next((run / "logs").glob("*.log")).read_text())
    assert says in line and "deleted the download, nothing was kept" in line, line
