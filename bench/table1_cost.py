"""The FLOPs of Table 1 and the GPU-hours they floor, from the ImageNet-128 presets alone (no GPU).

    python bench/table1_cost.py [--out bench/out]     # seconds: the networks run on the meta device

torch's FLOP counter on one guided image-step of the 128x128 UNet (forward) and the noisy
classifier (forward and backward to x, as classifier guidance runs them), counted from shapes on
the "meta" device, so nothing is computed. The sweep is bench/common.py's TABLE1 (8 scales x
50,000 samples x 250 DDPM steps, scale 0 without the classifier). Hours at a share of a card's
dense peak are floor / share; the share itself is what bench/gpu_check.sh measures on a GPU.
Writes table1_cost.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ (common puts the repository on sys.path)

import gpu_check as gc  # noqa: E402
from common import PEAKS, TABLE1, utc_stamp, write_report  # noqa: E402

from adm.nets.classifier import Classifier  # noqa: E402
from adm.nets.presets import get_preset  # noqa: E402
from adm.nets.unet import UNet  # noqa: E402

CARD = "H100"  # SXM: the peaks gpu_check uses for an H100 / H200 (same dense tensor-core peak)
SHARES = (1.0, 0.5, 0.3)


def cost() -> dict:
    meta = torch.device("meta")
    unet = UNet(get_preset("imagenet128-cond")).to(meta)
    clf = Classifier(get_preset("imagenet128-classifier")).to(meta)
    unet.validate_labels = lambda y: None  # the range check reads y back; meta holds no values
    f = gc.flops_per_image_step(unet, clf, meta)
    t = TABLE1
    guided = t["guided_scales"] * t["samples"] * t["steps"]
    plain = (t["scales"] - t["guided_scales"]) * t["samples"] * t["steps"]
    total = guided * f["guided_step"] + plain * f["unet_forward"]
    fp32, _, bf16, fp16 = PEAKS[CARD]
    hours = {
        f"{name} peak {peak} TFLOP/s at {share:.0%}": total / (peak * 1e12 * share) / 3600
        for name, peak in (("fp16/bf16", fp16), ("fp32", fp32))
        for share in SHARES
    }
    return {
        "flops": f,
        "guided_image_steps": guided,
        "unguided_image_steps": plain,
        "total_flop": total,
        "card": CARD,
        "peaks_tflops": {"fp32": fp32, "bf16": bf16, "fp16": fp16},
        "gpu_hours": hours,
        "params": {
            "unet": sum(p.numel() for p in unet.parameters()),
            "classifier": sum(p.numel() for p in clf.parameters()),
        },
        **t,
    }


def markdown(r: dict) -> str:
    f = r["flops"]
    lines = [
        f"# Table 1 cost from the ImageNet-128 presets ({r['date']})",
        "",
        f"torch.utils.flop_counter, one image, meta device: UNet forward {f['unet_forward'] / 1e9:.1f} GFLOP "
        f"({r['params']['unet'] / 1e6:.1f} M parameters), classifier forward + backward to x "
        f"{f['classifier_fwd_bwd'] / 1e9:.1f} GFLOP ({r['params']['classifier'] / 1e6:.1f} M parameters), "
        f"guided image-step {f['guided_step'] / 1e9:.1f} GFLOP.",
        "",
        f"Sweep: {r['guided_scales']} guided scales x {r['samples']:,} samples x {r['steps']} steps = "
        f"{r['guided_image_steps'] / 1e6:.1f} M guided image-steps, plus {r['unguided_image_steps'] / 1e6:.1f} M "
        f"unguided (scale 0): {r['total_flop']:.3g} FLOP.",
        "",
        f"| {r['card']} SXM dense peak, share achieved | GPU-hours |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.1f} |" for k, v in r["gpu_hours"].items()]
    lines += [
        "",
        "100% is the floor no implementation can beat; the share a real run reaches is measured by "
        "bench/gpu_check.sh (bench/out/gpu.md once a GPU has run it).",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench/out")
    a = p.parse_args(argv)
    r = {"date": utc_stamp(), **cost()}
    write_report(a.out, "table1_cost", r, markdown(r))
    print(markdown(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
