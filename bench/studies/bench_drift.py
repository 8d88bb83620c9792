"""Where the bf16-vs-fp32 x_0 drift of the sampling bench comes from (demo case, our sampler).

    python bench/studies/bench_drift.py [--threads 2] [--batch 250] [--out bench/out]

Two runs of bench_sampling.py reported bf16 drifts of 2.1e-5 and 0.99 on the same case. This
runs the case with bf16 on both networks, on the UNet only and on the classifier only (same
weights, noise and labels as bench_sampling.py), and traces the worst pixel through the steps:
x_t, eps and x_0_hat = sqrt(1/alpha_bar) x_t - sqrt(1/alpha_bar - 1) eps before the clamp.
Writes the figures under "bf16_drift" in sampling.json and re-renders sampling.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ (common puts the repository on sys.path)

import bench_sampling as bs  # noqa: E402
from common import bf16_drift_section, utc_stamp, write_report  # noqa: E402

from adm.diffusion import gaussian as D  # noqa: E402
from adm.diffusion.schedule import make_schedule, respace  # noqa: E402
from adm.sampling.guidance import classifier_guidance  # noqa: E402
from adm.sampling.precision import FastPath, sampling_classifier_fn, sampling_model_fn  # noqa: E402
from adm.sampling.rng import randn_per_sample, sample_generators  # noqa: E402
from adm.sampling.samplers import ddpm_sample  # noqa: E402

MODES = {"both_bf16": ("bf16", "bf16"), "unet_bf16": ("bf16", "fp32"), "classifier_bf16": ("fp32", "bf16")}


def demo_case(n: int):
    ucfg, ccfg, sched_name, _, spec, scale = bs.CASES["demo"]
    _, _, unet, clf = bs.case_networks(ucfg, ccfg)  # the sampling bench's weights
    return unet, clf, respace(make_schedule(sched_name, 1000), spec), torch.arange(n) % ucfg.num_classes, scale


def sample_traced(unet, clf, schedule, y, scale, unet_prec, clf_prec):
    """x_0 and, per step, (x_t, eps, unclamped x_0_hat) of every sample."""
    inner = sampling_model_fn(copy.deepcopy(unet), FastPath(precision=unet_prec), "cpu")
    trace = []

    def model_fn(x, t, yy):
        out = inner(x, t, yy)
        k = torch.full((len(x),), int((schedule.timesteps == int(t[0])).nonzero()[0][0]))
        eps = out[:, : x.shape[1]]
        trace.append((x.clone(), eps.clone(), D.predict_xstart_from_eps(schedule, x, k, eps)))
        return out

    cond_fn = classifier_guidance(
        sampling_classifier_fn(copy.deepcopy(clf), FastPath(precision=clf_prec), "cpu"), scale
    )
    gens = sample_generators(0, range(len(y)))
    hw = unet.cfg.image_size
    return ddpm_sample(model_fn, randn_per_sample(gens, (3, hw, hw)), schedule, y, cond_fn, gens), trace


def earlier_bf16_drifts(r: dict) -> dict:
    """case name -> the ours_bf16 drift bench_sampling.py recorded for the demo case's runs."""
    return {
        name: c["runs"]["ours_bf16"]["max_abs_dx0_vs_reference"]
        for name, c in r.get("cases", {}).items()
        if name.startswith("demo") and "ours_bf16" in c.get("runs", {})
    }


def measure(n: int) -> dict:
    unet, clf, schedule, y, scale = demo_case(n)
    x32, t32 = sample_traced(unet, clf, schedule, y, scale, "fp32", "fp32")
    res = {
        "batch": n,
        "steps": len(schedule),
        "threads": torch.get_num_threads(),
        "date": utc_stamp(),
        "sqrt_recipm1_alpha_bar_per_step": schedule.sqrt_recipm1_alphas_cumprod[::-1].tolist(),
        "modes": {},
    }
    for name, (up, cp) in MODES.items():
        x, tr = sample_traced(unet, clf, schedule, y, scale, up, cp)
        d = (x - x32).abs()
        per_sample = d.flatten(1).amax(1)
        res["modes"][name] = {
            "max_abs": d.max().item(),
            "median_per_sample_max": per_sample.median().item(),
            "pixels_over_0.1": int((d > 0.1).sum()),
            "samples_over_0.1": int((per_sample > 0.1).sum()),
            "pixels": d.numel(),
        }
        if name == "both_bf16":
            s, p = divmod(int(d.flatten().argmax()), d[0].numel())
            res["worst"] = {
                "sample": s,
                "pixel": p,
                "final_fp32": x32[s].flatten()[p].item(),
                "final_bf16": x[s].flatten()[p].item(),
                "steps": [
                    {
                        "t": int(schedule.timesteps[len(schedule) - 1 - j]),
                        **{
                            f"{q}_{lab}": tr_[j][i][s].flatten()[p].item()
                            for lab, tr_ in (("fp32", t32), ("bf16", tr))
                            for i, q in enumerate(("x_t", "eps", "x0_hat"))
                        },
                    }
                    for j in range(len(schedule))
                ],
            }
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--out", default="bench/out")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    path = Path(a.out) / "sampling.json"
    if not path.exists():
        print(f"error: {path} not found: run bench/bench_sampling.py first", file=sys.stderr)
        return 2
    r = json.loads(path.read_text())
    r["bf16_drift"] = {**measure(a.batch), "earlier": earlier_bf16_drifts(r)}
    write_report(a.out, "sampling", r, bs.markdown(r))
    print("\n".join(bf16_drift_section(r["bf16_drift"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
