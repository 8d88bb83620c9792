"""The guidance-interval search's pure parts: candidate bounds from the sampling
schedule (workflow/lib/interval_search.py) and the two-stage choice, table and outputs
(adm/report/interval_search.py), with real schedule values."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from adm.report import interval_search as search
from workflow.lib import interval_search as lib


def test_linear_schedule_puts_sigma_0_34_to_1_02_at_t_100_to_261():
    """ADM's linear schedule (T = 1000): sigma in (0.34, 1.02] is t = 100..261, nowhere near where
    a cosine or EDM schedule puts it, so bounds must be searched, not borrowed."""
    sigmas = lib.sampling_sigmas("linear", 1000, "1000")
    inside = [t for t, s in enumerate(sigmas) if 0.34 < s <= 1.02]
    assert inside == list(range(100, 262))
    assert sigmas[0] == pytest.approx(0.0100005, rel=1e-5) and sigmas[-1] == pytest.approx(157.407, rel=1e-5)
    # the same bounds on the cosine schedule (IDDPM Eq. 17) select other timesteps
    cosine = lib.sampling_sigmas("cosine", 1000, "1000")
    assert [t for t, s in enumerate(cosine) if 0.34 < s <= 1.02][0] > 150


def test_candidate_sigmas_are_the_sampler_step_sigmas():
    """The demo model (cosine, T = 1000) at 4 respaced steps: the interval's candidate bounds are
    exactly the sigmas limited_interval compares against (so (0, sigma_k] holds steps 0..k)."""
    from adm.diffusion.schedule import make_schedule, respace
    from adm.sampling.guidance import step_sigmas

    sigmas = lib.sampling_sigmas("cosine", 1000, "4")
    assert sigmas == step_sigmas(respace(make_schedule("cosine", 1000), "4")).tolist()
    assert sigmas == pytest.approx([0.00642541, 0.589707, 1.750723, 20291.17], rel=1e-6)
    assert sigmas == sorted(sigmas)


@pytest.mark.parametrize(
    "steps,most,want",
    [
        (4, 8, [0, 1, 2, 3]),
        (25, 8, [0, 3, 7, 10, 14, 17, 21, 24]),
        (250, 5, [0, 62, 124, 187, 249]),
        (250, 1, [249]),  # one candidate: the top step, sigma_hi = the full interval
    ],
)
def test_candidate_indices_spread_and_keep_the_top_step(steps, most, want):
    assert lib.candidate_indices(steps, most) == want


def test_search_arm_names_and_intervals():
    config = {
        "run": "r",
        "diffusion": {"preset": "demo-digits"},
        "sampling": {"steps": 4, "sampler": "ddpm", "seed": 0},
        "interval_search": {"arm": "classifier", "scales": [1.0, 2.0], "max_candidates": 8},
    }
    base = {"name": "classifier", "method": "classifier", "scales": [0.0, 1.0]}
    sigmas = lib.sampling_sigmas("cosine", 1000, "4")
    assert lib.parse("isearch_hi3") == (None, 3) and lib.parse("isearch_lo1_hi3") == (1, 3)
    assert not lib.is_search_arm("interval") and not lib.is_search_arm("isearch_hi")
    assert lib.search_arm(config, "isearch_hi2", base) == {
        "method": "classifier",
        "name": "isearch_hi2",
        "interval": [0.0, sigmas[2]],
        "scales": [1.0, 2.0],
    }
    assert lib.search_arm(config, "isearch_lo1_hi2", base)["interval"] == [sigmas[1], sigmas[2]]
    entries = lib.stage_hi_entries(config, base)
    assert [e["hi"] for e in entries] == [s for s in sigmas for _ in (1.0, 2.0)]
    assert entries[1]["path"] == "results/r/arms/isearch_hi0/seed0/metrics/scale2.json"
    assert lib.lo_candidates(config, base, 2) == [0, 1] and lib.lo_candidates(config, base, 0) == []
    assert lib.chosen_index(config, base, sigmas[2]) == 2


def test_stage_two_entries_follow_the_checkpoint_choice(tmp_path):
    """stage_hi.json's chosen sigma_hi (a JSON float: exact) -> the sigma_lo runs below that step."""
    config = {
        "run": "r",
        "diffusion": {"preset": "demo-digits"},
        "sampling": {"steps": 4, "sampler": "ddpm", "seed": 0},
        "interval_search": {"arm": "classifier", "scales": [1.0], "max_candidates": 8},
    }
    base = {"name": "classifier", "method": "classifier", "scales": [1.0]}
    sigmas = lib.sampling_sigmas("cosine", 1000, "4")
    path = tmp_path / "stage_hi.json"
    path.write_text(json.dumps({"chosen": {"lo": 0.0, "hi": sigmas[2], "scale": 1.0, "fid": 5.0}}))
    entries = lib.stage_lo_after(config, base, str(path))
    assert [(e["lo"], e["hi"]) for e in entries] == [(sigmas[0], sigmas[2]), (sigmas[1], sigmas[2])]
    assert entries[1]["path"] == "results/r/arms/isearch_lo1_hi2/seed0/metrics/scale1.json"


# Stage 1 at two scales: FID per sigma_hi (sigma_lo = 0); the full interval (hi = 80) is worse than
# a cut one, as Kynkäänniemi et al. find; numbers shaped like their EDM2-S sweep.
STAGE_HI = [
    {"stage": "hi", "lo": 0.0, "hi": h, "scale": w, "fid": f}
    for h, fids in [(0.6, (2.41, 2.38)), (1.6, (2.12, 2.05)), (2.9, (1.98, 2.01)), (80.0, (2.23, 2.60))]
    for w, f in zip((1.5, 2.1), fids)
]


def test_stage_one_chooses_sigma_hi_of_least_fid():
    assert search.choose_hi(STAGE_HI) == {"stage": "hi", "lo": 0.0, "hi": 2.9, "scale": 1.5, "fid": 1.98}
    with pytest.raises(ValueError, match="sigma_lo = 0 only"):
        search.choose_hi(STAGE_HI + [{"lo": 0.28, "hi": 2.9, "scale": 1.5, "fid": 1.0}])


def test_stage_two_chooses_sigma_lo_below_the_chosen_sigma_hi():
    stage_lo = [
        {"stage": "lo", "lo": lo, "hi": 2.9, "scale": w, "fid": f}
        for lo, fids in [(0.19, (1.90, 1.81)), (0.28, (1.85, 1.76)), (0.6, (2.30, 2.50))]
        for w, f in zip((1.5, 2.1), fids)
    ]
    chosen = search.choose_interval(STAGE_HI, stage_lo)
    assert (chosen["lo"], chosen["hi"], chosen["scale"], chosen["fid"]) == (0.28, 2.9, 2.1, 1.76)
    # a sigma_lo that only ties stage 1's point keeps sigma_lo = 0 (stage 1's points come first)
    tie = [{"stage": "lo", "lo": 0.28, "hi": 2.9, "scale": 1.5, "fid": 1.98}]
    assert search.choose_interval(STAGE_HI, tie)["lo"] == 0.0
    with pytest.raises(ValueError, match="sigma_hi stage 1 chose"):
        search.choose_interval(STAGE_HI, [{"lo": 0.28, "hi": 1.6, "scale": 1.5, "fid": 1.0}])


def test_points_without_a_finite_fid_are_skipped():
    points = [{"lo": 0.0, "hi": 1.0, "scale": 1.0, "fid": math.nan}, {"lo": 0.0, "hi": 2.0, "scale": 1.0, "fid": 5.0}]
    assert search.choose_hi(points)["hi"] == 2.0
    with pytest.raises(ValueError, match="no point with a finite fid"):
        search.choose_hi(points[:1])


def test_table_heatmap_and_chosen_yaml(tmp_path):
    stage_lo = [{"stage": "lo", "lo": 0.28, "hi": 2.9, "scale": w, "fid": f} for w, f in ((1.5, 1.85), (2.1, 1.76))]
    chosen = search.choose_interval(STAGE_HI, stage_lo) | {"num_samples": 64}
    points = STAGE_HI + stage_lo
    search.write_table(points, chosen, tmp_path / "t.csv", tmp_path / "t.md")
    md = (tmp_path / "t.md").read_text()
    assert "| stage | interval | 1.5 | 2.1 |" in md
    assert "| hi | (0, 80] | 2.23 | 2.60 |" in md and "| lo | (0.28, 2.9] | 1.85 | **1.76** |" in md
    assert "N = 64 samples" in md and "Chosen (least FID, in bold): (0.28, 2.9] at scale 2.1" in md
    assert (tmp_path / "t.csv").read_text().count("\n") == 1 + len(points)
    search.write_heatmap(points, chosen, tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    base = {"name": "auto", "method": "autoguidance", "guide": {"step": 2}, "scales": [2.0]}
    arm = search.chosen_arm(chosen, base, "auto_searched", [1.5, 2.1])
    search.write_chosen(chosen, arm, tmp_path / "chosen.yaml")
    doc = yaml.safe_load((tmp_path / "chosen.yaml").read_text())
    assert doc["guidance_arms"] == [
        {
            "name": "auto_searched",
            "method": "autoguidance",
            "guide": {"step": 2},
            "interval": [0.28, 2.9],
            "scales": [1.5, 2.1],
        }
    ]
    assert doc["chosen"] == {"lo": 0.28, "hi": 2.9, "scale": 2.1, "fid": 1.76}
    # the report's section, from the same three files
    section = search.render_section(tmp_path / "t.csv", tmp_path / "chosen.yaml", tmp_path / "h.png", lambda p: "data:")
    assert "<h2>Guidance interval search</h2>" in section and "(0.28, 2.9] at scale 2.1" in section
    assert "<tr><td>lo (0.28, 2.9]</td><td>1.85</td><td><b>1.76</b></td></tr>" in section
    assert section.count("<tr>") == 1 + 5 and "name: auto_searched" in section


def test_load_points_reads_the_evaluator_json(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"metrics": {"fid": 3.5, "precision": 0.7}}))
    entry = {"stage": "hi", "lo": 0.0, "hi": 1.0, "scale": 2.0, "path": str(path)}
    assert search.load_points([entry]) == [
        {"stage": "hi", "lo": 0.0, "hi": 1.0, "scale": 2.0, "fid": 3.5, "precision": 0.7}
    ]
