"""The sample / merge programs: format, reruns identical, scale and merge errors (invariance: test_invariance.py)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from adm import cli
from adm.nets.build import build_model
from adm.nets.checkpoints import save_model
from adm.nets.presets import get_preset
from adm.programs.sample import SampleConfig, ShardError, merge_shards, sample_shard, shard_range

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]
N = 7


@pytest.fixture(scope="module")
def nets(tiny_saved_nets):
    return tiny_saved_nets  # conftest: tiny-test UNet + classifier, random non-zero weights


def _cfg(nets, out, **kw):
    base = dict(
        model=str(nets / "ema.pt"),
        classifier=str(nets / "clf.pt"),
        out=str(out),
        num_samples=N,
        scale=2.0,
        respacing="4",
        batch_size=4,
        seed=3,
    )
    return SampleConfig(**{**base, **kw})


def _arrays(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def test_shard_ranges_partition():
    assert [list(shard_range(7, k, 3)) for k in range(3)] == [[0, 1], [2, 3], [4, 5, 6]]


@pytest.mark.parametrize("respacing", ["4", "ddim3"])
def test_shard_format_and_rerun_is_byte_identical(nets, tmp_path, respacing):
    # shard/batch invariance with non-zero weights is tests/unit/test_invariance.py; here: the format,
    # and a rerun of one shard gives the same file bytes (what a resumed workflow relies on)
    shards = []
    for k in range(3):
        shards.append(tmp_path / f"s{k}.npz")
        sample_shard(_cfg(nets, shards[-1], respacing=respacing, shard=k, num_shards=3, batch_size=2), progress=False)
    merge_shards(shards, tmp_path / "merged.npz", N, progress=False)
    merged = _arrays(tmp_path / "merged.npz")
    assert merged["arr_0"].shape == (N, 16, 16, 3) and merged["arr_0"].dtype == np.uint8
    assert merged["arr_1"].dtype == np.int64
    assert np.concatenate([_arrays(p)["indices"] for p in shards]).tolist() == list(range(N))
    assert len({merged["arr_0"][i].tobytes() for i in range(N)}) == N  # images differ per index
    sample_shard(
        _cfg(nets, tmp_path / "again.npz", respacing=respacing, shard=1, num_shards=3, batch_size=2), progress=False
    )
    assert (tmp_path / "again.npz").read_bytes() == shards[1].read_bytes()
    assert (tmp_path / "s1.json").exists()


def test_same_seeds_at_every_scale_and_scale0_ignores_classifier(nets, tmp_path):
    a = sample_shard(_cfg(nets, tmp_path / "g.npz", scale=0.0), progress=False)
    sample_shard(_cfg(nets, tmp_path / "u.npz", scale=0.0, classifier=None), progress=False)
    sample_shard(_cfg(nets, tmp_path / "s.npz", scale=50.0), progress=False)
    g, u, s = (_arrays(tmp_path / f"{n}.npz") for n in "gus")
    assert g["arr_0"].tobytes() == u["arr_0"].tobytes() and a["n"] == N
    assert (g["arr_1"] == s["arr_1"]).all() and not (g["arr_0"] == s["arr_0"]).all()


def test_merge_errors(nets, tmp_path):
    shards = []
    for k in range(2):
        shards.append(tmp_path / f"s{k}.npz")
        sample_shard(_cfg(nets, shards[-1], scale=0.0, shard=k, num_shards=2), progress=False)
    with pytest.raises(ShardError, match="missing"):
        merge_shards(shards[:1], tmp_path / "m.npz", N, progress=False)
    with pytest.raises(ShardError, match="appears twice"):
        merge_shards([shards[0], shards[0], shards[1]], tmp_path / "m.npz", N, progress=False)
    (tmp_path / "trunc.npz").write_bytes(shards[1].read_bytes()[:-200])
    with pytest.raises(ShardError, match="trunc.npz: truncated or unreadable"):
        merge_shards([shards[0], tmp_path / "trunc.npz"], tmp_path / "m.npz", N, progress=False)
    other = _arrays(shards[1])
    np.savez(tmp_path / "wrong.npz", arr_0=other["arr_0"][:, :8], arr_1=other["arr_1"], indices=other["indices"])
    with pytest.raises(ShardError, match="wrong.npz: images are"):
        merge_shards([shards[0], tmp_path / "wrong.npz"], tmp_path / "m.npz", N, progress=False)
    with pytest.raises(ShardError, match="not found"):
        merge_shards([shards[0], tmp_path / "nope.npz"], tmp_path / "m.npz", N, progress=False)
    assert not (tmp_path / "m.npz").exists()
    merge_shards(shards[::-1], tmp_path / "m.npz", N, progress=False)  # order of arguments is irrelevant
    assert _arrays(tmp_path / "m.npz")["arr_0"].shape[0] == N


def test_cli_sample_and_merge(nets, tmp_path, capsys):
    out = tmp_path / "x.npz"
    assert (
        cli.main(
            [
                "sample",
                "--model",
                str(nets / "ema.pt"),
                "--num-samples",
                "2",
                "--respacing",
                "ddim2",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    assert cli.main(["merge", "--out", str(tmp_path / "m.npz"), "--num-samples", "2", str(out), "--no-progress"]) == 0
    assert cli.main(["merge", "--out", str(tmp_path / "m.npz"), "--num-samples", "3", str(out)]) == 2
    assert (
        cli.main(["sample", "--model", str(nets / "ema.pt"), "--num-samples", "2", "--scale", "1", "--out", str(out)])
        == 2
    )
    assert cli.main(["sample", "--model", str(nets / "clf.pt"), "--num-samples", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: 1 of 3 sample indices missing" in err and "needs --classifier" in err
    assert "expected a unet checkpoint" in err and "Traceback" not in err


def test_cli_missing_model_in_a_real_process(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "adm",
            "sample",
            "--model",
            str(tmp_path / "none.pt"),
            "--model-preset",
            "tiny-test",
            "--num-samples",
            "2",
            "--out",
            str(tmp_path / "o.npz"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize("scale", ["nan", "inf", "-inf", "-1"])
def test_non_finite_or_negative_scale_is_refused(nets, tmp_path, capsys, scale):
    with pytest.raises(ValueError, match="finite number >= 0"):
        _cfg(nets, tmp_path / "x.npz", scale=float(scale))
    rc = cli.main(
        [
            "sample",
            "--model",
            str(nets / "ema.pt"),
            "--classifier",
            str(nets / "clf.pt"),
            f"--scale={scale}",
            "--num-samples",
            "1",
            "--respacing",
            "2",
            "--out",
            str(tmp_path / "x.npz"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--scale must be a finite number" in err
    assert not (tmp_path / "x.npz").exists()


def test_samples_that_go_non_finite_are_never_written(tmp_path):
    """A huge scale overflows the guidance gradient to inf: refuse, instead of writing black images."""
    torch.manual_seed(1)
    for name, preset in (("ema", "tiny-test"), ("clf", "tiny-test-classifier")):
        net = build_model(get_preset(preset))
        with torch.no_grad():  # non-zero weights everywhere (the init zeroes output layers: zero gradient)
            for p in net.parameters():
                p.normal_(0, 0.2)
        save_model(
            net,
            get_preset(preset),
            tmp_path / f"{name}.pt",
            diffusion=get_preset(preset, "diffusion") if name == "ema" else None,
        )
    cfg = _cfg(tmp_path, tmp_path / "out.npz", scale=1e300, num_samples=2, respacing="3")
    with pytest.raises(ValueError, match=r"samples 0..1 are not finite .*nothing written"):
        sample_shard(cfg, progress=False)
    assert not (tmp_path / "out.npz").exists() and not (tmp_path / "out.json").exists()
    sample_shard(_cfg(tmp_path, tmp_path / "ok.npz", scale=1.0, num_samples=2, respacing="3"), progress=False)


def _fake_shard(path, indices, labels, num_classes=10):
    n = len(indices)
    np.savez(path, arr_0=np.zeros((n, 4, 4, 3), np.uint8), arr_1=np.asarray(labels), indices=np.asarray(indices))
    path.with_suffix(".json").write_text(json.dumps({"command": "sample", "num_classes": num_classes}))
    return path


def test_merge_refuses_labels_outside_the_classes_and_non_integer_arrays(tmp_path, capsys):
    good = _fake_shard(tmp_path / "a.npz", [0, 1], [3, 9])
    bad = _fake_shard(tmp_path / "b.npz", [2, 3], [9, 10])
    out = tmp_path / "m.npz"
    with pytest.raises(ShardError, match=r"b.npz: label 10 is outside the 10 classes 0..9"):
        merge_shards([good, bad], out, 4, progress=False)
    _fake_shard(tmp_path / "n.npz", [2, 3], [-1, 0])
    with pytest.raises(ShardError, match="label -1 is negative"):
        merge_shards([good, tmp_path / "n.npz"], out, 4, progress=False)
    with pytest.raises(ShardError, match=r"f.npz: indices must be integers, got float64"):
        merge_shards([good, _fake_shard(tmp_path / "f.npz", [2.0, 3.0], [1, 2])], out, 4, progress=False)
    with pytest.raises(ShardError, match=r"g.npz: arr_1 \(labels\) must be integers"):
        merge_shards([good, _fake_shard(tmp_path / "g.npz", [2, 3], [1.5, 2.0])], out, 4, progress=False)
    assert not out.exists()
    # no JSON beside the shard: the flag gives the class count
    bad.with_suffix(".json").unlink()
    merge_shards([good, bad], out, 4, progress=False)  # unknown C: only the sign is checked
    assert (
        cli.main(
            [
                "merge",
                "--out",
                str(out),
                "--num-samples",
                "4",
                "--num-classes",
                "10",
                str(good),
                str(bad),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "label 10 is outside the 10 classes" in capsys.readouterr().err


@pytest.mark.parametrize("sampler,steps", [("dpmpp-2m", "uniform"), ("dpmpp-3m", "karras"), ("dpmpp-2m-sde", "logsnr")])
def test_solver_images_independent_of_batch_size(nets, tmp_path, sampler, steps):
    # DPM-Solver++ (and its SDE variant) through the program, classifier-guided: images equal whatever the batch size
    # (per-sample noise contract; float rounding of batched convolutions can move a uint8 by 1)
    kw = dict(sampler=sampler, step_schedule=steps, respacing="4")
    sample_shard(_cfg(nets, tmp_path / "b1.npz", batch_size=1, **kw), progress=False)
    sample_shard(_cfg(nets, tmp_path / "b4.npz", batch_size=4, **kw), progress=False)
    sample_shard(_cfg(nets, tmp_path / "ddim.npz", respacing="4", sampler="ddim"), progress=False)
    b1, b4, ddim = (_arrays(tmp_path / f"{n}.npz") for n in ("b1", "b4", "ddim"))
    assert np.abs(b1["arr_0"].astype(int) - b4["arr_0"].astype(int)).max() <= 1
    assert (b1["arr_1"] == b4["arr_1"]).all() and not (b1["arr_0"] == ddim["arr_0"]).all()
    assert json.loads((tmp_path / "b4.json").read_text())["sampler"] == sampler


def test_solver_config_errors(nets, tmp_path):
    with pytest.raises(ValueError, match="number of steps"):
        _cfg(nets, tmp_path / "x.npz", sampler="dpmpp-2m", respacing="ddim4")
    with pytest.raises(ValueError, match="for the solvers"):
        _cfg(nets, tmp_path / "x.npz", step_schedule="karras")
    with pytest.raises(ValueError, match="--sampler must be"):
        _cfg(nets, tmp_path / "x.npz", sampler="heun")
