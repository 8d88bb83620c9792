"""OpenAI's fp16 mode of the networks (`use_fp16=True`, `convert_to_fp16()`): the torso's
convolutions hold float16 weights and run in float16, while norms, embedding MLPs and heads stay
float32. A property of the networks, so it lives with them; CUDA only.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def _convs(modules: Iterable[nn.Module]) -> Iterable[nn.Module]:
    for module in modules:
        yield from (m for m in module.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d)))


def convert_torso_to_fp16(model: nn.Module, torso: list[nn.Module]) -> None:
    """Cast the torso's conv weights to float16 (as OpenAI's convert_module_to_f16); CUDA only."""
    devices = {p.device.type for p in model.parameters()}
    if devices != {"cuda"}:
        raise ValueError(
            f"fp16 mode needs the model on CUDA (parameters are on {sorted(devices)}); use fp32 or bf16 autocast on CPU"
        )
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
