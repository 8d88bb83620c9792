"""bench/gpu_check.py keeps every finished figure whatever fails later: it will run once, unattended,
on a rented GPU, and a crash in one mode (an OOM, a compile error, a kill by the shell's timeout)
must not cost the others' numbers. The full --dry run is `bash bench/gpu_check.sh --dry`
(~1 min on 2 cores); these tests drive its parts directly.
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
