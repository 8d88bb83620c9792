"""Where the bf16-vs-fp32 x_0 drift of the sampling bench comes from (demo case, our sampler).

    python bench/bench_drift.py [--threads 2] [--batch 250] [--out bench/out]

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
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_sampling as bs  # noqa: E402
from adm import diffusion as D  # noqa: E402
from adm.classifier import Classifier  # noqa: E402
from adm.guidance import classifier_guidance  # noqa: E402
from adm.precision import FastPath, sampling_classifier_fn, sampling_model_fn  # noqa: E402
from adm.rng import randn_per_sample, sample_generators  # noqa: E402
from adm.sampling import ddpm_sample  # noqa: E402
from adm.schedule import make_schedule, respace  # noqa: E402
from adm.unet import UNet  # noqa: E402

MODES = {"both_bf16": ("bf16", "bf16"), "unet_bf16": ("bf16", "fp32"), "classifier_bf16": ("fp32", "bf16")}


def demo_case(n: int):
    ucfg, ccfg, sched_name, _, spec, scale = bs.CASES["demo"]
    ref_unet, ref_clf = bs.reference_nets(ucfg, ccfg)  # the bench's weights, by OpenAI's key names
    unet, clf = UNet(ucfg).eval(), Classifier(ccfg).eval()
    unet.load_state_dict(ref_unet.state_dict(), strict=True)
    clf.load_state_dict(ref_clf.state_dict(), strict=True)
    return unet, clf, respace(make_schedule(sched_name, 1000), spec), torch.arange(n) % ucfg.num_classes, scale


def run(unet, clf, schedule, y, scale, unet_prec, clf_prec):
    """x_0 and, per step, (x_t, eps, unclamped x_0_hat) of every sample."""
    inner = sampling_model_fn(copy.deepcopy(unet), FastPath(precision=unet_prec), "cpu")
    trace = []

    def model_fn(x, t, yy):
        out = inner(x, t, yy)
        k = torch.full((len(x),), int((schedule.timesteps == int(t[0])).nonzero()[0][0]))
        eps = out[:, : x.shape[1]]
        trace.append((x.clone(), eps.clone(), D.predict_xstart_from_eps(schedule, x, k, eps)))
        return out

    cond_fn = classifier_guidance(sampling_classifier_fn(copy.deepcopy(clf), FastPath(precision=clf_prec), "cpu"), scale)
    gens = sample_generators(0, range(len(y)))
    hw = unet.cfg.image_size
    return ddpm_sample(model_fn, randn_per_sample(gens, (3, hw, hw)), schedule, y, cond_fn, gens), trace


def earlier_bf16_drifts(r: dict) -> dict:
    """case name -> the ours_bf16 drift bench_sampling.py recorded for the demo case's runs."""
    return {name: c["runs"]["ours_bf16"]["max_abs_dx0_vs_reference"] for name, c in r.get("cases", {}).items()
            if name.startswith("demo") and "ours_bf16" in c.get("runs", {})}


def matching_mode(value: float, modes: dict) -> str | None:
    """The mode whose drift equals `value` to float32 resolution (the same computation), if any."""
    for name, m in modes.items():
        if abs(m["max_abs"] - value) <= 1e-6 * abs(value):
            return name
    return None


def measure(n: int) -> dict:
    unet, clf, schedule, y, scale = demo_case(n)
    x32, t32 = run(unet, clf, schedule, y, scale, "fp32", "fp32")
    res = {"batch": n, "steps": len(schedule), "threads": torch.get_num_threads(),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "sqrt_recipm1_alpha_bar_per_step": schedule.sqrt_recipm1_alphas_cumprod[::-1].tolist(),
           "modes": {}}
    for name, (up, cp) in MODES.items():
        x, tr = run(unet, clf, schedule, y, scale, up, cp)
        d = (x - x32).abs()
        per_sample = d.flatten(1).amax(1)
        res["modes"][name] = {"max_abs": d.max().item(), "median_per_sample_max": per_sample.median().item(),
                              "pixels_over_0.1": int((d > 0.1).sum()), "samples_over_0.1": int((per_sample > 0.1).sum()),
                              "pixels": d.numel()}
        if name == "both_bf16":
            s, p = divmod(int(d.flatten().argmax()), d[0].numel())
            res["worst"] = {"sample": s, "pixel": p, "final_fp32": x32[s].flatten()[p].item(),
                            "final_bf16": x[s].flatten()[p].item(), "steps": [
                {"t": int(schedule.timesteps[len(schedule) - 1 - j]),
                 **{f"{q}_{lab}": tr_[j][i][s].flatten()[p].item() for lab, tr_ in (("fp32", t32), ("bf16", tr))
                    for i, q in enumerate(("x_t", "eps", "x0_hat"))}} for j in range(len(schedule))]}
    return res


def markdown(d: dict) -> list[str]:
    """The section bench_sampling.markdown appends when sampling.json has "bf16_drift"."""
    m, w = d["modes"], d["worst"]
    first = w["steps"][0]
    earlier = "; ".join(f"`{case}` {v:.4e} = {matching_mode(v, m) or 'no mode measured here'}"
                        for case, v in d.get("earlier", {}).items())
    rows = [f"| {k} | {v['max_abs']:.2e} | {v['median_per_sample_max']:.1e} | {v['pixels_over_0.1']} of "
            f"{v['pixels']} | {v['samples_over_0.1']} of {d['batch']} |" for k, v in m.items()]
    trace = [f"| {s['t']} | {s['x_t_fp32']:.5f} / {s['x_t_bf16']:.5f} | {s['eps_fp32']:.5f} / {s['eps_bf16']:.5f} "
             f"| {s['x0_hat_fp32']:.4f} / {s['x0_hat_bf16']:.4f} |" for s in w["steps"]]
    amp = d["sqrt_recipm1_alpha_bar_per_step"][0]
    return ["## Why bf16's x_0 drift read 2.1e-5 in one run and 0.99 in the other", "",
            f"Measured {d['date']} (bench/bench_drift.py, the demo case, batch {d['batch']}, {d['steps']} steps, "
            f"{d['threads']} threads); drift = |x_0(mode) - x_0(fp32)| of our sampler:", "",
            "| bf16 on | max abs | median per-sample max | pixels > 0.1 | samples > 0.1 |", "|---|---|---|---|---|",
            *rows, "",
            f"The earlier runs' bf16 figures, matched against these modes: {earlier or 'none recorded'}. The "
            "first run's 2.1e-5 is the classifier-only drift to all printed digits: its UNet did not run in "
            "bf16, so it measured another configuration than its label says (the committed code puts both "
            "networks under autocast, then and now). With both in bf16 the drift is "
            f"{m['both_bf16']['max_abs']:.2f}, the second run's; that large value is not a bug but the first step's "
            f"cancellation: at t = {first['t']}, x_0_hat = sqrt(1/alpha_bar) x_t - sqrt(1/alpha_bar - 1) eps with "
            f"sqrt(1/alpha_bar - 1) = {amp:.3g} (cosine schedule), so an eps rounding of a few 1e-4 moves x_0_hat by "
            "~10, and a pixel whose fp32 x_0_hat lies near 0 is clamped to the other end of [-1, 1]; the "
            "posterior mean carries that 2-unit jump to x_t of the next step. The worst pixel "
            f"(sample {w['sample']}, pixel {w['pixel']}), fp32 / bf16:", "",
            "| t | x_t | eps | x_0_hat (before the clamp) |", "|---|---|---|---|", *trace, "",
            f"Final x_0: {w['final_fp32']:.4f} / {w['final_bf16']:.4f}. The same cancellation amplifies any "
            "rounding, fp16's included (the paper's mode); it shows as a handful of outlier pixels, while the "
            "typical sample moves by the median above. Random-weight nets at 4 steps make it visible; the "
            "metric check (bf16 inside the fp32 bootstrap intervals) is what judges the mode, and on this CPU "
            "bf16 is emulated and not the default.", ""]


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
    path.write_text(json.dumps(r, indent=2, default=str) + "\n")
    (Path(a.out) / "sampling.md").write_text(bs.markdown(r))
    print("\n".join(markdown(r["bf16_drift"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
