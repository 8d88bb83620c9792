"""FD_DINOv2 on the evaluator's side (evaluations/fd_features.py): the Fréchet distance of two
feature files is metrics.frechet_distance of their statistics (the maths FID uses), with FID's
bootstrap interval; features of another network or weights are refused in one line; the record
says whether the weights have the sha256 the config pins (--pinned-sha256).

Mutants tried: weights_pinned true without a pin (`not pinned_sha256 or ...`) fails
test_weights_pinned_only_with_a_matching_pin."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluations import fd_features, metrics
from evaluations.errors import EvalError


def _write(path, feats, **meta):
    meta = {"network": "dinov2-vitl14", "features": "v", "weights_sha256": "ab", **meta}
    np.savez(path, features=feats.astype(np.float32), meta=np.array(json.dumps(meta)))
    return path


def test_fd_is_the_frechet_distance_of_the_feature_statistics(tmp_path):
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(400, 6))
    sample = rng.normal(0.3, 1.2, size=(300, 6))
    r, s = _write(tmp_path / "r.npz", ref), _write(tmp_path / "s.npz", sample)
    rec = fd_features.fd_record(r, s, bootstrap=20, seed=1)
    mu_r, sig_r = np.float32(ref).mean(0), np.cov(np.float32(ref), rowvar=False)
    mu_s, sig_s = np.float32(sample).mean(0), np.cov(np.float32(sample), rowvar=False)
    want = metrics.frechet_distance(mu_s, sig_s, mu_r, sig_r, method="sqrtm")
    assert rec["metrics"]["fd_dinov2"] == pytest.approx(want, rel=1e-6)
    lo, hi = rec["ci"]["fd_dinov2"]
    assert lo < rec["metrics"]["fd_dinov2"] < hi
    assert rec["n_samples"] == 300 and rec["n_ref"] == 400 and rec["settings"]["bootstrap"] == 20
    assert fd_features.fd_record(r, r, bootstrap=0)["metrics"]["fd_dinov2"] == pytest.approx(0, abs=1e-6)


def test_features_of_another_space_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    r = _write(tmp_path / "r.npz", rng.normal(size=(50, 4)))
    s = _write(tmp_path / "s.npz", rng.normal(size=(50, 4)), weights_sha256="cd")
    with pytest.raises(EvalError, match="another space.*weights_sha256 'ab' vs 'cd'"):
        fd_features.fd_record(r, s)
    np.savez(tmp_path / "x.npz", arr_0=np.zeros((2, 2)))
    with pytest.raises(EvalError, match="not a features file"):
        fd_features.read_features(tmp_path / "x.npz")


def test_cli_writes_the_record(tmp_path, capsys):
    rng = np.random.default_rng(0)
    r = _write(tmp_path / "r.npz", rng.normal(size=(60, 3)))
    s = _write(tmp_path / "s.npz", rng.normal(1, 1, size=(60, 3)))
    assert fd_features.main([str(r), str(s), "--out", str(tmp_path / "fd.json"), "--bootstrap", "5"]) == 0
    rec = json.loads((tmp_path / "fd.json").read_text())
    assert capsys.readouterr().out.startswith("fd_dinov2: ") and rec["metrics"]["fd_dinov2"] > 0.5
    assert fd_features.main([str(r), str(tmp_path / "missing.npz")]) == 2


def test_weights_pinned_only_with_a_matching_pin(tmp_path):
    """weights_pinned: true only when --pinned-sha256 is given and equals the weights' sha256
    (case aside); no pin, or another sha256, is false (the reports then label FD_DINOv2)."""
    rng = np.random.default_rng(0)
    r = _write(tmp_path / "r.npz", rng.normal(size=(40, 3)), weights_sha256="ab12")
    s = _write(tmp_path / "s.npz", rng.normal(size=(40, 3)), weights_sha256="ab12")
    assert fd_features.fd_record(r, s, bootstrap=0)["weights_pinned"] is False
    assert fd_features.fd_record(r, s, bootstrap=0, pinned_sha256="AB12")["weights_pinned"] is True
    assert fd_features.fd_record(r, s, bootstrap=0, pinned_sha256="cd34")["weights_pinned"] is False
    out = tmp_path / "fd.json"
    assert fd_features.main([str(r), str(s), "--out", str(out), "--bootstrap", "0", "--pinned-sha256", "ab12"]) == 0
    assert json.loads(out.read_text())["weights_pinned"] is True
