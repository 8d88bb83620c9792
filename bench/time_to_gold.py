"""Time to gold quality, the body of `bench_sampling.py --time-to-gold`: per guidance scale, the
reference's p_sample_loop at the gold setting (250 DDPM steps, fp32) against our sampler at a
frontier setting, in one process on the same networks, labels and x_T.

The setting per scale is either given (`--solver --steps`, the same at every scale) or picked from
a frontier.csv (`--frontier-csv`): the cheapest setting inside the gold row's interval at that
scale, by adm.report.frontier.cheapest_inside (fewest network evaluations, then fewer seconds,
then the lower FID). The report holds, per scale, the NFE ratio and the wall- and CPU-time ratios,
the frontier's quality rows, and Table 1's GPU-hours as these CPU ratios project them.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ (common puts the repository on sys.path)

from common import OUT, ROOT, TABLE1, timed_cpu, torch_machine, utc_stamp  # noqa: E402
from sampling_cases import CASES, case_networks, reference_nets, reference_runner  # noqa: E402

from adm.diffusion.schedule import make_schedule, respace, step_schedule  # noqa: E402
from adm.report.frontier import cheapest_inside  # noqa: E402
from adm.report.runinfo import git_commit  # noqa: E402
from adm.sampling.guidance import classifier_guidance  # noqa: E402
from adm.sampling.precision import FastPath, sampling_classifier_fn, sampling_model_fn  # noqa: E402
from adm.sampling.rng import randn_per_sample, sample_generators  # noqa: E402
from adm.sampling.samplers import ddim_sample, ddpm_sample  # noqa: E402
from adm.sampling.solvers import SOLVERS  # noqa: E402

# the targets the report checks each scale against: >= 10x fewer network evaluations and >= 8x
# less wall time than the gold setting, at a quality inside the gold row's interval
TARGETS = {"nfe_ratio": 10.0, "wall_ratio": 8.0}
QUALITY_KEYS = ("label", "nfe", "fid", "fid_ci_lo", "fid_ci_hi", "inside_gold")


def gold_networks(model: str | None, classifier: str | None):
    """(reference UNet, reference classifier, our UNet, our classifier, noise schedule name, num
    classes): a trained checkpoint pair (its weights copied into the reference's networks by
    OpenAI's key names), or the demo case's seeded random networks."""
    if model is None:
        ucfg, ccfg, sched_name = CASES["demo"][:3]
        return (*case_networks(ucfg, ccfg), sched_name, ucfg.num_classes)
    from adm.nets.checkpoints import load_model, read_sidecar

    unet, ucfg = load_model(model, expect_kind="unet")
    clf, ccfg = load_model(classifier, expect_kind="classifier")
    diffusion = (read_sidecar(model) or {}).get("diffusion") or {}
    if diffusion.get("diffusion_steps", 1000) != 1000:
        raise SystemExit(f"{model}: the reference runner here takes a 1000-step diffusion")
    ref_unet, ref_clf = reference_nets(ucfg, ccfg)
    ref_unet.load_state_dict(unet.state_dict(), strict=True)
    ref_clf.load_state_dict(clf.state_dict(), strict=True)
    return ref_unet, ref_clf, unet, clf, diffusion.get("noise_schedule", "cosine"), ucfg.num_classes


def solver_runner(unet, clf, setting: dict, sched_name: str, scale: float):
    """run(noise, y, gens) -> x_0 by our sampler at a frontier setting, the exact fp32 default path."""
    base = make_schedule(sched_name, 1000)
    solver, steps = setting["solver"], setting["steps"]
    if solver in SOLVERS:
        schedule, sample = step_schedule(base, setting["step_schedule"], steps), SOLVERS[solver]
    else:
        schedule = respace(base, f"ddim{steps}" if solver == "ddim" else str(steps))
        sample = ddim_sample if solver == "ddim" else ddpm_sample
    model_fn = sampling_model_fn(unet, FastPath(), "cpu")
    cond_fn = classifier_guidance(sampling_classifier_fn(clf, FastPath(), "cpu"), scale)
    return lambda noise, y, gens: sample(model_fn, noise, schedule, y, cond_fn, gens)


def _number(text: str, kind=float):
    return None if text in ("", "None") else kind(float(text))


def read_frontier(path: str | Path) -> list[dict]:
    """frontier.csv's rows (its `#` lines skipped) with the types adm.report.frontier wrote them from."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    for r in rows:
        r.update(scale=float(r["scale"]), gold=r["gold"] == "True", steps=int(r["steps"]), nfe=int(r["nfe"]))
        r.update(seconds=_number(r["seconds"]), fid=_number(r["fid"]))
        r["inside_gold"] = {"True": True, "False": False}.get(r["inside_gold"])
    return rows


def pick_settings(path: str | Path, scales: list[float]) -> dict[float, dict | None]:
    """Per scale, the frontier's cheapest setting inside the gold row's interval (None: none is)."""
    rows = read_frontier(path)
    missing = [s for s in scales if not any(r["scale"] == s and r["gold"] for r in rows)]
    if missing:
        raise SystemExit(f"{path}: no gold row at scale(s) {missing}")
    picked = {s: cheapest_inside(rows, s) for s in scales}
    return {
        s: None if r is None else {"solver": r["solver"], "steps": r["steps"], "step_schedule": r["step_schedule"]}
        for s, r in picked.items()
    }


def frontier_quality(path: str | None, setting: dict, scale: float) -> dict | None:
    """The frontier.csv rows of this setting and of the gold row at `scale` (the quality side)."""
    if path is None:
        return None
    at = [r for r in read_frontier(path) if r["scale"] == scale]
    ours = next(
        (r for r in at if not r["gold"] and all(r[k] == setting[k] for k in ("solver", "steps", "step_schedule"))),
        None,
    )
    gold = next((r for r in at if r["gold"]), None)
    return {
        "frontier_csv": str(path),
        "ours": {k: ours[k] for k in QUALITY_KEYS} if ours else None,
        "gold": {k: gold[k] for k in QUALITY_KEYS} if gold else None,
    }


def time_scale(nets, a, setting: dict, scale: float) -> dict:
    """The reference at --gold-steps against ours at `setting`, guided at `scale`, repeats rotated."""
    ref_unet, ref_clf, unet, clf, sched_name, classes = nets
    n, hw = a.batch, unet.cfg.image_size
    runners = {
        "reference": reference_runner(ref_unet, ref_clf, sched_name, str(a.gold_steps), scale, n, hw),
        "ours": solver_runner(unet, clf, setting, sched_name, scale),
    }
    y = torch.arange(n) % classes
    wall: dict[str, list[float]] = {k: [] for k in runners}
    cpu: dict[str, list[float]] = {k: [] for k in runners}
    load_before = os.getloadavg()
    for r in range(a.repeats):  # rotated order: other jobs' load falls on both alike
        for k in list(runners)[r % 2 :] + list(runners)[: r % 2]:
            gens = sample_generators(0, range(n))
            _, w, c = timed_cpu(runners[k], randn_per_sample(gens, (3, hw, hw)), y, gens)
            wall[k].append(w)
            cpu[k].append(c)
            print(f"time-to-gold scale {scale:g} {k} repeat {r}: {w:.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    out = {
        "scale": scale,
        "reference": {"sampler": "guided_diffusion p_sample_loop (fp32)", "steps": a.gold_steps, "nfe": a.gold_steps},
        "ours": {**setting, "nfe": setting["steps"]},
        "seconds": wall,
        "cpu_seconds": cpu,
        "median_s": med,
        "median_cpu_s": med_cpu,
        "nfe_ratio": a.gold_steps / setting["steps"],
        "wall_ratio": med["reference"] / med["ours"],
        "cpu_time_ratio": med_cpu["reference"] / med_cpu["ours"],
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }
    out["quality"] = frontier_quality(a.frontier_csv or a.frontier, setting, scale)
    out["targets"] = targets_met(out)
    return out


def targets_met(s: dict) -> dict:
    """Each target against this scale's figures; quality from the frontier (None: not read)."""
    q = (s.get("quality") or {}).get("ours")
    return {
        **TARGETS,
        "nfe_met": s["nfe_ratio"] >= TARGETS["nfe_ratio"],
        "wall_met": s["wall_ratio"] >= TARGETS["wall_ratio"],
        "inside_gold": None if q is None else q["inside_gold"],
    }


def table1_bases(out_dir: Path = OUT) -> dict[str, float]:
    """Table 1's GPU-hours at 250 DDPM steps: the FLOP floor at an H100's fp16 peak
    (table1_cost.json), and a GPU check's measured fp16 figure where one has run (gpu.json)."""
    bases = {}
    cost = out_dir / "table1_cost.json"
    if cost.exists():
        bases["FLOP floor at the fp16 peak (table1_cost.json)"] = json.loads(cost.read_text())["gpu_hours"][
            "fp16/bf16 peak 989 TFLOP/s at 100%"
        ]
    gpu = out_dir / "gpu.json"
    if gpu.exists():
        g = json.loads(gpu.read_text())
        hours = g.get("projection", {}).get("gpu_hours_by_mode", {}).get("fp16")
        if hours and not g.get("dry"):
            bases[f"measured fp16 throughput on {g['device']} (gpu.json)"] = hours
    return bases


def table1_projection(scales: dict, gold_steps: int, bases: dict[str, float]) -> dict:
    """Table 1's 250-step GPU-hours divided by each scale's ratios. The wall and CPU-time ratios
    were measured against a `gold_steps` reference: scaled by 250 / gold_steps to Table 1's steps."""
    per = TABLE1["steps"] / gold_steps
    by_scale = {}
    for key, s in scales.items():
        if "wall_ratio" not in s:
            continue
        ratios = {
            "nfe_ratio": TABLE1["steps"] / s["ours"]["nfe"],
            "wall_ratio": s["wall_ratio"] * per,
            "cpu_time_ratio": s["cpu_time_ratio"] * per,
        }
        by_scale[key] = {name: {b: h / r for b, h in bases.items()} for name, r in ratios.items()}
    return {
        "note": "a projection from the CPU ratios measured here, not a GPU measurement: Table 1's GPU-hours "
        f"at {TABLE1['steps']} DDPM steps divided by each ratio ({TABLE1['scales']} scales x "
        f"{TABLE1['samples']} samples)",
        "250_steps": bases,
        "by_scale": by_scale,
    }


def run(a) -> dict:
    """The report of `bench_sampling.py --time-to-gold` (its parsed arguments)."""
    nets = gold_networks(a.model, a.classifier)
    if a.frontier_csv:
        settings = pick_settings(a.frontier_csv, a.scales)
    else:
        settings = {s: {"solver": a.solver, "steps": a.steps, "step_schedule": a.step_schedule} for s in a.scales}
    r = {
        "date": utc_stamp(),
        "commit": git_commit(ROOT),
        "machine": torch_machine(),
        "networks": a.model or "demo case, seeded random weights",
        "classifier": a.classifier,
        "batch": a.batch,
        "gold_steps": a.gold_steps,
        "setting_from": a.frontier_csv or "--solver/--steps",
        "load_before": os.getloadavg(),
        "scales": {},
    }
    for scale, setting in settings.items():
        if setting is None:
            r["scales"][f"{scale:g}"] = {
                "scale": scale,
                "skipped": "no setting of the frontier is inside the gold row's interval",
            }
            continue
        r["scales"][f"{scale:g}"] = time_scale(nets, a, setting, scale)
    r["load_after"] = os.getloadavg()
    r["table1_gpu_hours"] = table1_projection(r["scales"], a.gold_steps, table1_bases())
    return r


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        f"# Time to gold quality: reference DDPM-{r['gold_steps']} vs ours ({r['date']}, commit {r['commit']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} torch threads, torch {m['torch']}. Load average "
        f"{' '.join(f'{v:.2f}' for v in r['load_before'])} -> {' '.join(f'{v:.2f}' for v in r['load_after'])}. "
        f"Networks: {r['networks']}; batch {r['batch']}, same labels and x_T on both sides, rotated order. "
        f"Setting per scale from: {r['setting_from']}.",
        "",
        "| scale | ours | NFE ratio | ref wall s | ours wall s | wall ratio | CPU-time ratio | inside gold | targets (NFE >= 10x, wall >= 8x) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, s in r["scales"].items():
        if "skipped" in s:
            lines.append(f"| {key} | {s['skipped']} | | | | | | | |")
            continue
        o, t = s["ours"], s["targets"]
        lines.append(
            f"| {key} | {o['solver']} {o['steps']} ({o['step_schedule']}) | {s['nfe_ratio']:.1f}x "
            f"| {s['median_s']['reference']:.2f} | {s['median_s']['ours']:.2f} | {s['wall_ratio']:.2f}x "
            f"| {s['cpu_time_ratio']:.2f}x | {'not read' if t['inside_gold'] is None else t['inside_gold']} "
            f"| {'met' if t['nfe_met'] else 'missed'} / {'met' if t['wall_met'] else 'missed'} |"
        )
    p = r["table1_gpu_hours"]
    lines += ["", f"Table 1 GPU-hours, {p['note']}:", ""]
    for basis, hours in p["250_steps"].items():
        per = "; ".join(
            f"scale {k}: {v['nfe_ratio'][basis]:.1f} by NFE, {v['wall_ratio'][basis]:.1f} by wall time"
            for k, v in p["by_scale"].items()
        )
        lines.append(f"- {basis}: {hours:.1f} h at 250 steps; {per or 'no scale timed'}")
    if not p["250_steps"]:
        lines.append("- no basis found (bench/out/table1_cost.json, bench/out/gpu.json)")
    return "\n".join(lines) + "\n"
