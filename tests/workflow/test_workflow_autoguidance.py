"""The autoguidance arm in the DAG: the smoke config's arm guided by the main
model's EMA at step 2 (kept by train_diffusion itself: no extra job), a guide trained by its own
job, and the configs whose guide cannot exist (or whose w < 1) ending in one line."""

from __future__ import annotations

import pytest
from test_workflow import SMOKE
from test_workflow_arms import dry_jobs, one_line_error, smoke_cfg, without_arms, write

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_smoke_dag_has_the_autoguidance_arm(tmp_path):
    cfg = smoke_cfg()
    auto = next(a for a in cfg["guidance_arms"] if a["method"] == "autoguidance")
    step = auto["guide"]["step"]
    jobs = dry_jobs(tmp_path, SMOKE)
    rules = [rule for rule, _ in jobs.values()]
    assert "train_guide_model" not in rules  # the earlier EMA is free: the main training keeps it
    train = next((o, c) for o, (rule, c) in jobs.items() if rule == "train_diffusion")
    assert f"diffusion/ema_step{step}.pt" in train[0] and f"--keep-ema-step {step} " in train[1]
    mine = {o: (rule, c) for o, (rule, c) in jobs.items() if f"/arms/{auto['name']}/" in o}
    seeds, shards = cfg["sampling"]["seeds"], cfg["sampling"]["num_shards"]
    assert sorted(rule for rule, _ in mine.values()) == sorted(
        ["arm_sample"] * len(seeds) * shards + ["arm_merge", "arm_evaluate"] * len(seeds)
    )
    samples = [c for rule, c in mine.values() if rule == "arm_sample"]
    assert all(
        "--guidance autoguidance" in c
        and f"--guide-model results/smoke/diffusion/ema_step{step}.pt " in c
        and "--model results/smoke/diffusion/ema.pt " in c
        and "--classifier" not in c
        and "--scale 2 " in c
        for c in samples
    ), samples


def test_a_guide_trained_by_its_own_job(tmp_path):
    cfg = smoke_cfg()
    cfg["guidance_arms"] = [{"name": "auto", "method": "autoguidance", "scales": [1.5], "guide": {"steps": 2}}]
    jobs = dry_jobs(tmp_path, write(tmp_path / "c.yaml", cfg))
    train = [(o, c) for o, (rule, c) in jobs.items() if rule == "train_guide_model"]
    assert len(train) == 1 and "guides/auto/ema.pt" in train[0][0]
    assert "--steps 2 " in train[0][1] and "--model-preset demo-digits " in train[0][1]
    main = next(c for rule, c in jobs.values() if rule == "train_diffusion")
    assert "--keep-ema-step" not in main
    samples = [c for o, (rule, c) in jobs.items() if rule == "arm_sample" and "/arms/auto/" in o]
    assert samples and all("--guide-model results/smoke/guides/auto/ema.pt " in c for c in samples)


def auto(**kw):
    return {"name": "a", "method": "autoguidance", "scales": [2.0], "guide": {"step": 2}, **kw}


@pytest.mark.parametrize(
    "arm,message",
    [
        (auto(scales=[1.0, 0.5]), "guidance_arms.a.scales: autoguidance needs w >= 1 (1 = the main model alone)"),
        (auto(guide={"step": 4}), "guidance_arms.a.guide.step 4: the main model trains 4 steps"),
        (auto(guide={"step": 2, "steps": 1}), "guidance_arms.a.guide: step N (an earlier EMA of the main model)"),
        (auto(guide=None), "guidance_arms.a: autoguidance needs a guide"),
        (auto(method="cfg"), "guidance_arms.a.guide: only an autoguidance arm has a guide"),
        (auto(guide={"preset": "imagenet128-cond"}), "guidance_arms.a.guide.preset 'imagenet128-cond' is a 128x128"),
    ],
)
def test_bad_autoguidance_arm_is_one_clear_line(tmp_path, arm, message):
    cfg = without_arms(smoke_cfg())
    cfg["guidance_arms"] = [{k: v for k, v in arm.items() if v is not None}]
    assert one_line_error(tmp_path, cfg).startswith(f"invalid config: {message}")
