"""Benchmark the CPU demo end to end (minus the evaluator): train both networks, sample every scale.

    python bench/bench_demo.py [--threads 2] [--out bench/out] [--diffusion-steps N] [--reuse]

Measures training steps/s, sampling images/s per guidance scale and peak RSS, checks the quality
bar (classifier held-out clean acc@1 >= 0.95), writes bench/out/demo.json + demo.md and a grid
PNG per scale (bench/out/grids/scale{S}.png; the same sample indices, hence seeds, at every scale).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ (common puts the repository on sys.path)

from common import cpu_name, peak_rss_mb, timed, write_report  # noqa: E402

from adm.data.datasets import prepare_digits  # noqa: E402
from adm.nets.presets import get_preset  # noqa: E402
from adm.programs.sample import SampleConfig, sample_shard  # noqa: E402
from adm.report.grids import write_grid  # noqa: E402
from adm.training.classifier import train_classifier  # noqa: E402
from adm.training.diffusion import train_diffusion  # noqa: E402
from adm.training.presets import resolve_train_config  # noqa: E402

SCALES = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0)  # config/config.yaml's sweep


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="bench/out")
    p.add_argument("--diffusion-steps", type=int, help="override the demo-digits preset's steps")
    p.add_argument("--classifier-steps", type=int, help="override the demo-digits-classifier preset's steps")
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--respacing", default="25")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--scales", type=float, nargs="+", default=list(SCALES))
    p.add_argument("--reuse", action="store_true", help="keep already trained networks in --out")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"threads": a.threads, "torch": torch.__version__, "machine": cpu_name(), "timings_s": {}}
    _, result["timings_s"]["prepare_data"] = timed(
        prepare_digits, out / "data/train.npz", out / "data/heldout.npz", 0.2, 0
    )

    dcfg = resolve_train_config("demo-digits", steps=a.diffusion_steps)
    if not (a.reuse and (out / "diffusion/ema.pt").exists()):
        d, result["timings_s"]["train_diffusion"] = timed(
            train_diffusion,
            out / "data/train.npz",
            out / "diffusion",
            get_preset("demo-digits"),
            get_preset("demo-digits", "diffusion"),
            dcfg,
        )
        result["diffusion"] = {
            "steps": dcfg.steps,
            "batch_size": dcfg.batch_size,
            "lr": dcfg.lr,
            "steps_per_s": d["steps_per_s"],
            "images_per_s": d["steps_per_s"] * dcfg.batch_size,
            "params": sum(v.numel() for v in torch.load(out / "diffusion/ema.pt").values()),
        }
    ccfg = resolve_train_config("demo-digits-classifier", steps=a.classifier_steps)
    if not (a.reuse and (out / "classifier/model.pt").exists()):
        c, result["timings_s"]["train_classifier"] = timed(
            train_classifier,
            out / "data/train.npz",
            out / "data/heldout.npz",
            out / "classifier",
            get_preset("demo-digits-classifier"),
            get_preset("demo-digits-classifier", "diffusion"),
            ccfg,
        )
        result["classifier"] = {
            "steps": ccfg.steps,
            "steps_per_s": c["steps_per_s"],
            **{k: c[k] for k in c if k.startswith("heldout")},
        }
    result["rss_after_training_mb"] = peak_rss_mb()

    result["sampling"] = {}
    for s in a.scales:
        npz = out / f"samples/scale{s:g}.npz"
        cfg = SampleConfig(
            model=str(out / "diffusion/ema.pt"),
            classifier=str(out / "classifier/model.pt"),
            out=str(npz),
            num_samples=a.num_samples,
            scale=s,
            respacing=a.respacing,
            batch_size=a.batch_size,
            seed=0,
        )
        r = sample_shard(cfg)
        write_grid(npz, out / f"grids/scale{s:g}.png", num=64, columns=8, tile_px=32)
        result["sampling"][f"{s:g}"] = {"images_per_s": r["images_per_s"], "seconds": r["sampling_s"]}
    result["timings_s"]["sampling_total"] = sum(v["seconds"] for v in result["sampling"].values())
    result["peak_rss_mb"] = peak_rss_mb()
    acc = result.get("classifier", {}).get("heldout_clean_acc@1")
    result["quality"] = {"classifier_heldout_clean_acc@1": acc, "meets_0.95": None if acc is None else acc >= 0.95}
    write_report(out, "demo", result, markdown(result))
    print(markdown(result))
    return 0


def markdown(r: dict) -> str:
    lines = [f"# Demo benchmark ({r['threads']} threads, torch {r['torch']})", ""]
    if "diffusion" in r:
        d = r["diffusion"]
        lines.append(
            f"- diffusion: {d['steps']} steps × batch {d['batch_size']} at {d['steps_per_s']:.2f} steps/s "
            f"({d['images_per_s']:.0f} img/s), {d['params'] / 1e6:.2f}M params"
        )
    if "classifier" in r:
        c = r["classifier"]
        lines.append(
            f"- classifier: {c['steps']} steps at {c['steps_per_s']:.2f} steps/s; held-out acc@1 "
            f"clean {c['heldout_clean_acc@1']:.3f}, noised {c['heldout_acc@1']:.3f}"
        )
    lines += ["", "| scale | images/s | seconds |", "|---|---|---|"]
    lines += [f"| {s} | {v['images_per_s']:.1f} | {v['seconds']:.1f} |" for s, v in r["sampling"].items()]
    lines += ["", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in r["timings_s"].items()]
    lines += ["", f"Peak RSS: {r['peak_rss_mb']:.0f} MB", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
