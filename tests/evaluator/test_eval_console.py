"""The installed ``adm-eval`` console script: present, documented, and the same program as
``python -m evaluations.evaluator``.

Mutants these tests caught (each made on purpose once, then restored):
- the installed script pointed at ``evaluations.reference:main``: the help, same-output and
  missing-input tests fail;
- the ``--help`` epilog dropped: the help test fails;
- ``np.errstate(all="warn")`` back under ``if __name__ == "__main__"`` only: the errstate test
  fails;
- a missing npz raising ``FileNotFoundError`` instead of ``EvalError``: the missing ref and
  sample cases fail.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evaluations import evaluator

# pip install -e . writes console scripts beside the interpreter of its environment.
SCRIPT = Path(sys.executable).with_name("adm-eval")
MODULE = [sys.executable, "-m", "evaluations.evaluator"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The small stand-in graph of test_eval_cli.py (Inception's names, 64-d pool features) and
    two random batches: its numbers mean nothing, both entry points must print the same ones."""
    pytest.importorskip("tensorflow")
    from evaluations import standin

    d = tmp_path_factory.mktemp("console")
    standin.write_standin_graph(d / "graph.pb", seed=1, small=True)
    rng = np.random.default_rng(0)
    np.savez(d / "ref.npz", arr_0=rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8))
    np.savez(d / "sample.npz", arr_0=rng.integers(0, 224, (20, 16, 16, 3), dtype=np.uint8))
    return d


def test_console_script_is_installed_and_shows_examples():
    assert SCRIPT.is_file(), f"{SCRIPT} missing: run `pip install --no-deps -e .`"
    proc = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: adm-eval ")
    assert "python -m evaluations.evaluator" in proc.stdout  # the alias is documented
    assert "\nexamples:\n" in proc.stdout
    examples = proc.stdout.split("\nexamples:\n", 1)[1]
    assert "adm-eval ~/.cache/adm-bench/VIRTUAL_imagenet128_labeled.npz" in examples
    assert "--out" in examples and "--feature-cache" in examples
    # Raw formatting: a continued command line keeps its own line and indentation.
    assert "\n      --feature-cache" in examples


def test_console_script_and_module_give_the_same_output(files, tmp_path):
    args = [
        str(files / "ref.npz"),
        str(files / "sample.npz"),
        "--graph",
        str(files / "graph.pb"),
        "--threads",
        "1",
        "--no-progress",
        "--bootstrap",
        "2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    # Both at once: each pays TensorFlow's import (~5 s), which dominates this test.
    procs = [
        subprocess.Popen(
            [*cmd, *args, "--out", str(tmp_path / f"{name}.json")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=env,
        )
        for name, cmd in (("script", [str(SCRIPT)]), ("module", MODULE))
    ]
    (script_out, script_err), (module_out, module_err) = (p.communicate(timeout=300) for p in procs)
    assert [p.returncode for p in procs] == [0, 0], (script_err, module_err)
    assert script_out == module_out
    labels = [ln.split(": ")[0] for ln in script_out.splitlines() if ": " in ln]
    assert labels == ["Inception Score", "FID", "sFID", "Precision", "Recall"]
    records = [json.loads((tmp_path / f"{name}.json").read_text()) for name in ("script", "module")]
    for rec in records:
        del rec["timings"]
    assert records[0] == records[1]


def test_main_reports_floating_point_trouble_and_restores_the_callers_state(monkeypatch, capsys):
    """Both entry points run ``main``; the warnings it turns on must not leak to a caller."""
    seen = {}

    def fake_evaluate(*args, **kwargs):
        seen.update(np.geterr())
        return {"metrics": dict.fromkeys(("inception_score", "fid", "sfid", "precision", "recall"), 1.0), "label": None}

    monkeypatch.setattr(evaluator, "evaluate", fake_evaluate)
    before = np.geterr()
    assert evaluator.main(["ref.npz", "sample.npz"]) == 0
    assert seen == dict.fromkeys(("divide", "over", "under", "invalid"), "warn")
    assert np.geterr() == before
    assert capsys.readouterr().out.startswith("Inception Score: 1.0\n")


@pytest.mark.parametrize("missing", ["ref", "sample", "graph"])
def test_missing_input_is_one_error_line_without_traceback(files, tmp_path, missing):
    paths = {
        "ref": files / "ref.npz",
        "sample": files / "sample.npz",
        "graph": files / "graph.pb",
        missing: tmp_path / f"missing_{missing}",
    }
    out = tmp_path / "m.json"
    proc = subprocess.run(
        [
            str(SCRIPT),
            str(paths["ref"]),
            str(paths["sample"]),
            "--graph",
            str(paths["graph"]),
            "--no-progress",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), proc.stderr
    assert f"missing_{missing}" in err[0] and "Traceback" not in proc.stderr
    assert proc.stdout == "" and not out.exists()
