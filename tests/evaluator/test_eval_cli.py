"""The evaluator CLI: output wording, JSON record, cache reuse, and one clear error per bad input.

Mutants these tests caught (each made on purpose once, then restored):
- a partial set of stored statistics silently ignored (``read_optional`` returning None): the
  partial and sample-partial cases fail;
- no finiteness check of stored statistics: the NaN-mu case fails;
- stored statistics of the batches ignored: the precomputed-statistics test fails;
- no label-count check in ``reference --build-from``: its test fails.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

from evaluations import evaluator, standin  # noqa: E402
from evaluations.npzio import sha256_file  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    # Inception's names with small dimensions: 2048-d covariances would take minutes here
    # (test_eval_graph.py covers the full Inception shapes).
    standin.write_standin_graph(d / "graph.pb", seed=1, small=True)
    rng = np.random.default_rng(0)
    np.savez(d / "ref.npz", arr_0=rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8))
    np.savez(d / "sample.npz", arr_0=rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8))
    return d


def run_main(files, *extra):
    args = [
        str(files / "ref.npz"),
        str(files / "sample.npz"),
        "--graph",
        str(files / "graph.pb"),
        "--threads",
        "1",
        "--no-progress",
        "--bootstrap",
        "3",
        *map(str, extra),
    ]
    return evaluator.main(args)


def test_prints_reference_wording_and_writes_json(files, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert run_main(files, "--out", out, "--feature-cache", tmp_path / "fc") == 0
    lines = capsys.readouterr().out.splitlines()
    labels = [ln.split(":")[0] for ln in lines if ":" in ln]
    assert labels == ["Inception Score", "FID", "sFID", "Precision", "Recall"]
    rec = json.loads(out.read_text())
    assert set(rec["metrics"]) == {"fid", "sfid", "inception_score", "precision", "recall"}
    assert set(rec["ci"]) == set(rec["metrics"])
    assert rec["n_samples"] == 20 and rec["n_ref"] == 24
    assert rec["graph_sha256"] == sha256_file(files / "graph.pb")
    # The stand-in is not the pinned Inception file: never labelled Inception.
    assert rec["feature_network"] == "unverified feature graph" and rec["label"] is None
    assert rec["precision_recall_device"]["device"] == "/CPU:0"
    assert rec["ci"]["sfid"] is not None
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()  # readable by colleagues
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    # Second run: the reference comes from the cache and the numbers are unchanged.
    assert run_main(files, "--out", out, "--feature-cache", tmp_path / "fc") == 0
    rec2 = json.loads(out.read_text())
    assert rec2["cache_hits"] == {"ref": True, "sample": True}
    assert rec2["metrics"] == rec["metrics"]
    assert rec2["ci"] == rec["ci"]  # the sFID interval survives a cache hit


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


D, DS = 64, 4 * 4 * 7  # the small stand-in's pool and spatial dimensions


def _stats(**over):
    stats = {"mu": np.zeros(D, np.float32), "sigma": np.eye(D), "mu_s": np.zeros(DS, np.float32), "sigma_s": np.eye(DS)}
    stats.update(over)
    return {k: v for k, v in stats.items() if v is not None}


def _eval(ref, sample, files, out, *extra):
    return evaluator.main(
        [
            str(ref),
            str(sample),
            "--graph",
            str(files / "graph.pb"),
            "--threads",
            "1",
            "--no-progress",
            "--bootstrap",
            "0",
            "--out",
            str(out),
            *map(str, extra),
        ]
    )


def test_precomputed_statistics_are_used_as_the_reference_uses_them(files, tmp_path):
    out = tmp_path / "m.json"
    assert _eval(files / "ref.npz", files / "sample.npz", files, out) == 0
    base = json.loads(out.read_text())["metrics"]
    ref = np.load(files / "ref.npz")["arr_0"]
    sample = np.load(files / "sample.npz")["arr_0"]
    np.savez(tmp_path / "ref_stats.npz", arr_0=ref, **_stats())
    np.savez(tmp_path / "sample_stats.npz", arr_0=sample, **_stats(mu=np.ones(D, np.float32)))
    assert _eval(tmp_path / "ref_stats.npz", tmp_path / "sample_stats.npz", files, out) == 0
    rec = json.loads(out.read_text())
    assert (rec["ref_stats_source"], rec["sample_stats_source"]) == ("npz", "npz")
    # FID of N(1, I) against N(0, I) in D dimensions: D; sFID of equal statistics: 0.
    assert rec["metrics"]["fid"] == pytest.approx(D, rel=1e-9)
    assert abs(rec["metrics"]["sfid"]) < 1e-9
    assert rec["metrics"]["precision"] == base["precision"]  # P&R still from arr_0


@pytest.mark.parametrize(
    "case,expect",
    [
        ("partial", "not mu_s/sigma_s"),
        ("nan_mu", "stored mu contains non-finite"),
        ("shape", "stored sigma has shape (3, 3)"),
        ("sample_partial", "not sigma"),
    ],
)
def test_bad_precomputed_statistics_give_one_line(files, tmp_path, capsys, case, expect):
    ref = np.load(files / "ref.npz")["arr_0"]
    nan_mu = np.zeros(D, np.float32)
    nan_mu[3] = np.nan
    ref_arrays = {
        "partial": _stats(mu_s=None, sigma_s=None),
        "nan_mu": _stats(mu=nan_mu),
        "shape": _stats(sigma=np.eye(3)),
        "sample_partial": {},
    }[case]
    np.savez(tmp_path / "ref.npz", arr_0=ref, **ref_arrays)
    sample = files / "sample.npz"
    if case == "sample_partial":
        sample = tmp_path / "sample.npz"
        np.savez(sample, arr_0=np.load(files / "sample.npz")["arr_0"], mu=np.zeros(D))
    out = tmp_path / "m.json"
    assert _eval(tmp_path / "ref.npz", sample, files, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expect in err[0], err
    assert not out.exists()


def test_graph_lock_pins_the_first_graph(files, tmp_path, capsys):
    lock, out = tmp_path / "graph.lock", tmp_path / "m.json"
    assert _eval(files / "ref.npz", files / "sample.npz", files, out, "--graph-lock", lock) == 0
    pinned = json.loads(lock.read_text())["sha256"]
    assert pinned == sha256_file(files / "graph.pb")
    assert json.loads(out.read_text())["graph_pinned_sha256"] == pinned
    other = tmp_path / "other.pb"
    standin.write_standin_graph(other, seed=2, small=True)
    code = evaluator.main(
        [
            str(files / "ref.npz"),
            str(files / "sample.npz"),
            "--graph",
            str(other),
            "--threads",
            "1",
            "--no-progress",
            "--graph-lock",
            str(lock),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pinned in" in err[0]


def test_build_reference_refuses_label_count_mismatch(tmp_path, capsys):
    from evaluations import reference

    rng = np.random.default_rng(3)
    np.savez(tmp_path / "held.npz", arr_0=rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8), arr_1=np.arange(5))
    code = reference.main(["--build-from", str(tmp_path / "held.npz"), "--out", str(tmp_path / "ref.npz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "one label per image" in err[0]
    assert not (tmp_path / "ref.npz").exists()


def test_build_reference_refuses_an_empty_batch(tmp_path, capsys):
    from evaluations import reference

    np.savez(tmp_path / "held.npz", arr_0=np.zeros((0, 8, 8, 3), np.uint8), arr_1=np.zeros(0, np.int64))
    code = reference.main(["--build-from", str(tmp_path / "held.npz"), "--out", str(tmp_path / "ref.npz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [
        f"error: {tmp_path / 'held.npz'}: holds 0 images; a reference batch needs at least one"
    ]
    assert not (tmp_path / "ref.npz").exists()


def test_reference_batch_is_checked_for_its_role_from_headers(tmp_path):
    """The download rules' check: resolution from arr_0's header, statistics all or none."""
    from evaluations.errors import EvalError
    from evaluations.reference import check_reference_batch

    images = np.zeros((2, 8, 8, 3), np.uint8)
    np.savez(tmp_path / "ok.npz", arr_0=images, mu=np.zeros(2), sigma=np.eye(2), mu_s=np.zeros(2), sigma_s=np.eye(2))
    np.savez(tmp_path / "half.npz", arr_0=images, mu=np.zeros(2), sigma=np.eye(2))
    check_reference_batch(tmp_path / "ok.npz", 8)
    with pytest.raises(EvalError, match="a reference batch of 8x8 images; this run compares 16x16 samples"):
        check_reference_batch(tmp_path / "ok.npz", 16)
    with pytest.raises(EvalError, match=r"has statistics \['mu', 'sigma'\] but not \['mu_s', 'sigma_s'\]"):
        check_reference_batch(tmp_path / "half.npz", 8)


def _full_disk(*args, **kwargs):
    raise OSError(28, "No space left on device")


def test_feature_cache_write_failure_warns_and_the_evaluation_completes(files, tmp_path, capsys, monkeypatch):
    """The feature cache is best-effort: a full disk under it is one warning per entry, and the
    metrics are printed and written as without a cache."""
    from evaluations import features

    monkeypatch.setattr(features, "atomic_path", _full_disk)
    out = tmp_path / "m.json"
    assert run_main(files, "--out", out, "--feature-cache", tmp_path / "fc") == 0
    captured = capsys.readouterr()
    warnings = captured.err.strip().splitlines()
    assert warnings and all(
        w.startswith(f"warning: could not write the feature cache {tmp_path / 'fc'}/")
        and w.endswith("(No space left on device); nothing was kept there, the evaluation goes on without it")
        for w in warnings
    ), captured.err
    assert "FID:" in captured.out and json.loads(out.read_text())["cache_hits"] == {"ref": False, "sample": False}


def test_out_write_failure_is_one_line(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(evaluator.atomic, "write_text", _full_disk)
    out = tmp_path / "metrics" / "m.json"
    assert run_main(files, "--out", out) == 2
    captured = capsys.readouterr()
    assert "FID:" in captured.out  # the metrics were printed before the write
    assert captured.err.strip().splitlines() == [
        f"error: could not write {out} (No space left on device); nothing was written under that name, "
        "the metrics printed above are not saved"
    ]
    assert not out.exists()


def test_label_demo_refuses_a_non_demo_graph(files, capsys):
    assert run_main(files, "--label-demo") == 2
    assert "not the demo network" in capsys.readouterr().err


def _bad_inputs(d):
    rng = np.random.default_rng(1)
    good = rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    nan = good.astype(np.float32)
    nan[0, 0, 0, 0] = np.nan
    cases = {
        "float": dict(arr_0=good.astype(np.float32)),
        "nchw": dict(arr_0=good.transpose(0, 3, 1, 2).copy()),
        "range": dict(arr_0=good.astype(np.int16) * 2),
        "nan": dict(arr_0=nan),
        "res": dict(arr_0=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)),
        "few": dict(arr_0=good[:3]),
    }
    for name, arrays in cases.items():
        np.savez(d / f"{name}.npz", **arrays)
    np.savez(d / "full.npz", arr_0=good)
    (d / "trunc.npz").write_bytes((d / "full.npz").read_bytes()[:3000])
    return list(cases) + ["trunc"]


EXPECTED = {
    "float": "dtype float32",
    "nchw": "NCHW",
    "range": "outside 0..255",
    "nan": "NaN",
    "res": "32x32",
    "few": "at least 4",
    "trunc": "trunc",
}


def test_bad_inputs_give_one_clear_error_naming_the_file(files, tmp_path, capsys):
    for name in _bad_inputs(tmp_path):
        out = tmp_path / f"{name}.json"
        code = evaluator.main(
            [
                str(files / "ref.npz"),
                str(tmp_path / f"{name}.npz"),
                "--graph",
                str(files / "graph.pb"),
                "--no-progress",
                "--out",
                str(out),
                "--feature-cache",
                str(tmp_path / "fc"),
            ]
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, name
        assert len(err) == 1 and err[0].startswith("error: "), (name, err)
        assert f"{name}.npz" in err[0] and EXPECTED[name] in err[0], (name, err)
        assert not out.exists()
    assert not (tmp_path / "fc").exists() or not any((tmp_path / "fc").iterdir())


def test_wrong_graph_checksum_exits_2_without_traceback(files, tmp_path):
    out = tmp_path / "m.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "evaluations.evaluator",
            str(files / "ref.npz"),
            str(files / "sample.npz"),
            "--graph",
            str(files / "graph.pb"),
            "--graph-sha256",
            "0" * 64,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "graph.pb" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
