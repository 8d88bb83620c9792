"""Numeric precision modes for the networks.

- "fp32": the default, everything float32.
- "bf16": `torch.autocast` (CPU or CUDA); weights stay float32, GroupNorm32 still normalises in fp32.
- "fp16": `torch.autocast(float16)` on CUDA (with a GradScaler when training); or, for inference,
  OpenAI's mode (`use_fp16=True`, `model.convert_to_fp16()`): the torso's convolutions hold
  float16 weights and run in float16, while norms (computed in fp32 by GroupNorm32), the
  embedding MLPs and the output head stay float32. CUDA only: CPU float16 is slow or unsupported.
"""

from __future__ import annotations

import contextlib
from typing import Iterable

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16", "fp16")


def _convs(modules: Iterable[nn.Module]) -> Iterable[nn.Module]:
    for module in modules:
        yield from (m for m in module.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d)))


def convert_torso_to_fp16(model: nn.Module, torso: list[nn.Module]) -> None:
    """Cast the torso's conv weights to float16 (as OpenAI's convert_module_to_f16); CUDA only."""
    devices = {p.device.type for p in model.parameters()}
    if devices != {"cuda"}:
        raise ValueError(f"fp16 mode needs the model on CUDA (parameters are on {sorted(devices)}); "
                         f"use fp32 or bf16 autocast on CPU")
    for conv in _convs(torso):
        conv.to(torch.float16)
    model.dtype = torch.float16


def convert_torso_to_fp32(model: nn.Module, torso: list[nn.Module]) -> None:
    """Undo convert_torso_to_fp16."""
    for conv in _convs(torso):
        conv.to(torch.float32)
    model.dtype = torch.float32


def check_dtype_device(dtype: torch.dtype, device: torch.device) -> None:
    """A float16 torso only runs on CUDA; fail early with a clear message elsewhere."""
    if dtype == torch.float16 and device.type != "cuda":
        raise ValueError(f"this model is in fp16 mode, which runs on CUDA only; input is on {device.type}")


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
