"""Numeric precision modes for the networks, and the inference fast path used by the sampler.

- "fp32": the default, everything float32; the exact mode (equal to the reference to 1e-4).
- "bf16": `torch.autocast` (CPU or CUDA); weights stay float32, GroupNorm32 still normalises in fp32.
- "fp16": `torch.autocast(float16)` on CUDA (with a GradScaler when training); or, for inference,
  OpenAI's mode (`use_fp16=True`, `model.convert_to_fp16()`): the torso's convolutions hold
  float16 weights and run in float16, while norms (computed in fp32 by GroupNorm32), the
  embedding MLPs and the output head stay float32. CUDA only: CPU float16 is slow or unsupported.
- "auto" (sampling only): fp16 on CUDA, the paper's mode (OpenAI's README samples the 128 model
  with `--use_fp16 True`), fp32 elsewhere.

Sampling in fp16 converts the UNet only: the README's guided-sampling command leaves
`--classifier_use_fp16` at its default False, so the classifier and its gradient stay float32.
In bf16 both networks run under autocast, the classifier's backward included.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16", "fp16")


def autocast(precision: str, device_type: str) -> contextlib.AbstractContextManager:
    """Context for a forward pass: nothing for fp32, torch.autocast in bfloat16 / float16 otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device_type != "cuda":
        raise ValueError(f"fp16 precision runs on CUDA only (device is {device_type}); use bf16 or fp32")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device_type, dtype=dtype)


SAMPLING_PRECISIONS = ("auto",) + PRECISIONS


def resolve_sampling_precision(precision: str, device_type: str) -> str:
    """ "auto" -> fp16 on CUDA (the paper's mode), fp32 elsewhere; fp16 off CUDA is a user error."""
    if precision not in SAMPLING_PRECISIONS:
        raise ValueError(f"precision must be one of {SAMPLING_PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "fp16" if device_type == "cuda" else "fp32"
    if precision == "fp16" and device_type != "cuda":
        raise ValueError(
            f"--precision fp16 (OpenAI's fp16 torso) runs on CUDA only, the device is "
            f"{device_type}; use fp32 (exact) or bf16 there"
        )
    return precision


# ---------------------------------------------------------------- the sampler's fast path


@dataclass(frozen=True)
class FastPath:
    """How the sampler runs the two networks. No field changes an image beyond float rounding;
    bench/bench_sampling.py measures each one against the reference sampler."""

    precision: str = "fp32"  # resolved mode: fp32 (exact) | fp16 (CUDA) | bf16
    inference_mode: bool = True  # UNet forward under torch.inference_mode (no autograd records)
    channels_last: bool = False  # NHWC weights and activations (tensor-core friendly on CUDA)
    compile: bool = False  # torch.compile both forwards; the first batch pays the compile
    classifier_fp16: bool = False  # OpenAI's --classifier_use_fp16 (CUDA; off in the README's command)
    fused_attention: bool = False  # SDPA's fused kernels on contiguous heads (adm.nets.blocks.qkv_attention)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"FastPath.precision must be one of {PRECISIONS} (resolve 'auto' first), got {self.precision!r}"
            )


# Named fast-path sets (`adm sample --fast MODE`, config `sampling.fast`): each turns on FastPath
# fields by name; bench/bench_sampling.py measures every one against the reference sampler.
FAST_MODES: dict[str, dict[str, bool]] = {
    "exact": {},  # the default: every x_0 byte-equal to the reference trajectory
    # the kernels that measured faster on CPU with no compile cost; they change x_0 only by
    # rounding (bench/out/sampling.md: max |dx0| vs the reference, and bf16_demo.md: the metrics)
    "fast": {"fused_attention": True},
    # plus torch.compile of both networks (inductor): pays only where a process samples for
    # longer than the compile takes (minutes on a CPU; see sampling.md)
    "compiled": {"fused_attention": True, "compile": True},
}


def check_fast_mode(mode: str) -> str:
    if mode not in FAST_MODES:
        raise ValueError(f"--fast must be one of {', '.join(FAST_MODES)}, got {mode!r}")
    return mode


def fast_path(mode: str, precision: str, **fields: bool) -> FastPath:
    """The FastPath of a named mode; `fields` (channels_last=True, ...) turn further fields on."""
    return FastPath(
        precision=precision, **{**FAST_MODES[check_fast_mode(mode)], **{k: v for k, v in fields.items() if v}}
    )


def _freeze(net: nn.Module) -> nn.Module:
    # Sampling never trains: no weight needs a gradient, the classifier's gradient is w.r.t. x only.
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _attention(net: nn.Module, fused: bool) -> None:
    for m in net.modules():
        if hasattr(m, "fused_attention"):
            m.fused_attention = fused


def _layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


def sampling_model_fn(model: nn.Module, fast: FastPath, device_type: str):
    """model_fn(x_t, t, y) -> float32 raw output, for the samplers.

    The UNet's per-forward label-range check reads the labels back to the host (a device sync on
    CUDA, and a graph break for torch.compile), so it is switched off here and the full check
    (`model.validate_labels`) runs once per label tensor: once per batch, not once per step."""
    _freeze(model)
    if fast.precision == "fp16":
        model.convert_to_fp16()
    if fast.channels_last:
        model.to(memory_format=torch.channels_last)
    _attention(model, fast.fused_attention)
    model.check_label_values = False
    forward = torch.compile(model, dynamic=False) if fast.compile else model
    amp = "bf16" if fast.precision == "bf16" else "fp32"  # fp16 is the converted torso, not autocast
    checked: list = [None, None]  # the last two label tensors: CFG alternates y and its null labels

    def model_fn(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if y is not checked[0] and y is not checked[1]:
            model.validate_labels(y)
            checked[:] = [y, checked[0]]
        grad_mode = torch.inference_mode() if fast.inference_mode else torch.no_grad()
        with grad_mode, autocast(amp, device_type):
            return forward(_layout(x, fast.channels_last), t, y).float()

    return model_fn


def sampling_classifier_fn(classifier: nn.Module, fast: FastPath, device_type: str):
    """classifier_fn(x_t, t) -> logits, differentiable w.r.t. x_t (guidance takes its gradient).

    fp16 leaves the classifier in float32 unless classifier_fp16 (the README's sampling command
    leaves it off); bf16 runs its forward under autocast, and autograd then runs the backward in
    the forward's dtypes."""
    _freeze(classifier)
    if fast.classifier_fp16:
        classifier.convert_to_fp16()
    if fast.channels_last:
        classifier.to(memory_format=torch.channels_last)
    _attention(classifier, fast.fused_attention)
    forward = torch.compile(classifier, dynamic=False) if fast.compile else classifier
    amp = "bf16" if fast.precision == "bf16" else "fp32"

    def classifier_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with autocast(amp, device_type):
            return forward(_layout(x, fast.channels_last), t).float()

    return classifier_fn
