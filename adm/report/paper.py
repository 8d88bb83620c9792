"""Table 1 of Dhariwal & Nichol (2021), "Diffusion Models Beat GANs on Image Synthesis".

ImageNet 128x128, conditional ADM with classifier guidance, 250 sampling steps, 50,000 samples
per row, evaluated against the 10k-image reference batch with OpenAI's evaluator (Inception-V3).
Numbers copied from the paper's Table 1 (arXiv:2105.05233v4, p. 6); the scale 0 row is the
conditional model without guidance.
"""

from __future__ import annotations

# Metric keys as written by `python -m evaluations.evaluator` (docs/interfaces.md), in table order.
METRICS: tuple[str, ...] = ("fid", "sfid", "inception_score", "precision", "recall")

# Display names and the direction of "better" (used in captions and plot legends).
METRIC_LABELS: dict[str, str] = {
    "fid": "FID",
    "sfid": "sFID",
    "inception_score": "IS",
    "precision": "Precision",
    "recall": "Recall",
}
LOWER_IS_BETTER: frozenset[str] = frozenset({"fid", "sfid"})

# scale -> (FID, sFID, IS, precision, recall), Table 1, ImageNet 128x128.
PAPER_TABLE1: dict[float, tuple[float, float, float, float, float]] = {
    0.0: (5.91, 5.09, 158.82, 0.70, 0.65),
    0.5: (2.97, 4.69, 221.57, 0.78, 0.61),
    1.0: (3.01, 5.11, 253.01, 0.82, 0.59),
    2.0: (5.28, 7.24, 279.00, 0.87, 0.50),
    3.0: (6.94, 8.94, 280.48, 0.89, 0.45),
    5.0: (9.21, 11.37, 291.06, 0.90, 0.39),
    7.5: (10.58, 13.03, 293.57, 0.90, 0.35),
    10.0: (12.14, 15.36, 300.28, 0.90, 0.28),
}

PAPER_SETTING = (
    "Dhariwal & Nichol (2021), Table 1: ImageNet 128x128, 250 DDPM steps, 50k samples per scale, "
    "Inception-V3 features against the 10k reference batch"
)

DEMO_BANNER = "demo feature network — not comparable with the paper"
DEMO_REASON = (
    "This run uses the embedded demo (small images, a small feature network trained here in place "
    "of Inception-V3), so its FID/sFID/IS/precision/recall live on a different scale from the "
    "paper's ImageNet 128x128 numbers: no comparison with Table 1 is meaningful."
)

# The evaluator's `feature_network` for the pinned Inception-V3 2015 graph (evaluations.graph
# INCEPTION_NAME); any other non-demo value (e.g. "unverified feature graph") gets this banner.
INCEPTION_FEATURES = "inception-v3-2015"
UNVERIFIED_BANNER = "unverified feature graph — not Inception-V3, not comparable with the paper"
UNVERIFIED_REASON = (
    "The evaluator could not verify this run's feature graph as the pinned Inception-V3 (2015) "
    "graph, so these FID/sFID/IS/precision/recall values come from another network's features: the "
    "paper's columns are shown for layout only."
)

# FD_DINOv2's weights are trusted as the official DINOv2 ViT-L/14 release only where the config pins
# their sha256 (evaluation.dinov2_sha256, set by a user who checked the file) and the weights match:
# the FD record's `weights_pinned` (evaluations/fd_features.py). Any other value gets this label.
DINOV2_UNVERIFIED = "unverified DINOv2 weights (sha256 not pinned)"
DINOV2_UNVERIFIED_REASON = (
    "FD_DINOv2 is labelled unverified DINOv2 weights: the config pins no sha256 for them "
    "(evaluation.dinov2_sha256), so nothing tells the official weights from any other file of "
    "the same architecture."
)


def paper_metrics(scale: float) -> dict[str, float] | None:
    """The paper's five metrics at `scale` as a dict keyed like METRICS, or None if not in Table 1."""
    row = PAPER_TABLE1.get(float(scale))
    return None if row is None else dict(zip(METRICS, row))
