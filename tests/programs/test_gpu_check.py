"""bench/gpu_check.py keeps every finished figure whatever fails later: it will run once, unattended,
on a rented GPU, and a crash in one mode (an OOM, a compile error, a kill by the shell's timeout)
must not cost the others' numbers. The full --dry run is `bash bench/gpu_check.sh --dry`
(~10 s on 2 cores); the first tests drive its parts directly, the last runs it whole at a 3-step
solver, so every sampler it times runs on the CPU.

Mutants tried by hand: the warm-up back at 1 DDPM step (which respace refuses) fails
test_dry_run_times_ddpm_and_the_solver; the solver's Table 1 hours at 250 steps instead of its own,
or scale 0 left out of them, fail test_solver_projection_at_its_own_steps; run_sampler ignoring
`solver` (DDPM timed under the solver's name) fails test_dry_run_times_ddpm_and_the_solver.
"""

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod
    spec.loader.exec_module(mod)
    return mod


def _report():
    return {"dry": True, "device": "cpu", "torch": "x", "date": "d", "note": "n", "speed": {}}


def test_a_failing_part_is_recorded_and_the_report_is_saved_after_every_part(gc, tmp_path, monkeypatch):
    r, saved = _report(), []

    def save():
        gc.derive(r, None, time.time())
        (tmp_path / "gpu.md").write_text(gc.markdown(r))
        saved.append(json.loads(json.dumps(r, default=str)))

    monkeypatch.setattr(gc, "SAVE", [save])
    far = time.time() + 60
    gc.guarded(r, "flops", far, lambda: {"guided_step": 2e9, "unet_forward": 1.5e9, "classifier_fwd_bwd": 5e8})
    gc.guarded(
        r["speed"],
        "fp32",
        far,
        lambda: {
            "batch": 2,
            "steps": 2,
            "seconds": 1.0,
            "image_steps_per_s": 4.0,
            "warmup_s": 0.1,
            "peak_mem_mb": None,
        },
    )

    def oom():
        raise MemoryError("CUDA out of memory\nsecond line")

    gc.guarded(r["speed"], "bf16", far, oom)
    gc.guarded(r["speed"], "fp16", time.time() - 1, lambda: pytest.fail("ran past the budget"))
    assert len(saved) == 4  # one save per part: a kill after any part keeps what came before
    assert saved[1]["speed"]["fp32"]["image_steps_per_s"] == 4.0  # on disk before bf16 ran
    assert r["speed"]["bf16"] == {"error": "MemoryError: CUDA out of memory"}
    assert r["speed"]["fp16"] == {"skipped": "time budget spent"}
    # the figures of the part that worked survive into the projection and the markdown
    assert set(r["projection"]["gpu_hours_by_mode"]) == {"fp32"}
    md = (tmp_path / "gpu.md").read_text()
    assert "| fp32 | 2 | 4.00 |" in md and "MemoryError" in md and "time budget spent" in md


def test_markdown_of_a_report_cut_short_after_its_first_part(gc):
    r = _report()
    r["flops"] = {"error": "RuntimeError: boom"}
    gc.derive(r, None, time.time())
    md = gc.markdown(r)
    assert "Projected GPU-hours" in md and "FLOPs per guided image-step" not in md


def test_solver_projection_at_its_own_steps(gc):
    r = _report()
    r["speed"]["fp32"] = {"image_steps_per_s": 10.0, "batch": 2, "steps": 2, "seconds": 1.0, "peak_mem_mb": None}
    r["unguided"] = {"fp32": {"image_steps_per_s": 20.0}}
    r["solver"] = {"solver": "dpmpp-2m", "precision": "fp32", "image_steps_per_s": 10.0, "steps": 25}
    r["solver"].update(batch=2, seconds=5.0)
    gc.derive(r, None, time.time())
    ps = r["projection"]["solver"]
    # 7 guided scales at 10 image-steps/s, scale 0 at 20, 50,000 samples x 25 steps each
    assert ps["gpu_hours"] == pytest.approx((7 * 50_000 * 25 / 10 + 50_000 * 25 / 20) / 3600)
    assert ps["ratio_vs_ddpm_250"] == pytest.approx(10.0)  # same rate per step: 250 / 25
    assert ps["image_steps"] == 8 * 50_000 * 25
    assert "dpmpp-2m at 25 steps (fp32, batch 2)" in gc.markdown(r) and "(10.0x fewer)" in gc.markdown(r)


def test_dry_run_times_ddpm_and_the_solver(gc, tmp_path, monkeypatch):
    calls = []
    solver = gc.SOLVERS[gc.SOLVER]

    def counted(model_fn, noise, schedule, *args):
        calls.append(len(schedule))
        return solver(model_fn, noise, schedule, *args)

    monkeypatch.setitem(gc.SOLVERS, gc.SOLVER, counted)
    assert gc.main(["--dry", "--out", str(tmp_path), "--threads", "1", "--solver-steps", "3"]) == 0
    r = json.loads((tmp_path / "gpu_dry.json").read_text())
    for part in (r["speed"]["fp32"], r["speed"]["bf16"], r["unguided"]["fp32"], r["solver"]):
        assert part.get("image_steps_per_s", 0) > 0, part
    assert (r["solver"]["solver"], r["solver"]["steps"], r["solver"]["precision"]) == (gc.SOLVER, 3, "fp32")
    ps = r["projection"]["solver"]
    assert ps["steps"] == 3 and ps["gpu_hours"] > 0 and ps["ddpm_250_gpu_hours"] > 0
    assert f"{gc.SOLVER} at 3 steps" in (tmp_path / "gpu_dry.md").read_text()
    assert calls == [2, 3]  # the solver itself ran: the warm-up, then the timed run
