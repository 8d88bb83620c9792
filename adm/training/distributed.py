"""Multi-process helpers over torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK). No MPI.

A plain `python -m adm ...` is a world of one and never touches torch.distributed.
Each torchrun process drives the GPU numbered by its LOCAL_RANK; that GPU is made current
before the process group exists, so NCCL's communicator, barriers and every `.cuda()` land on
it and never all on GPU 0 (the reference's "out of memory on GPU 0" failure).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.distributed as dist


def choose_device(requested: str, env: Mapping[str, str], cuda_count: int) -> str:
    """This process's device name: "cpu", or "cuda:<LOCAL_RANK>" (one GPU per local rank).

    Pure (no CUDA calls) so it is testable with a fake environment. A LOCAL_RANK with no GPU of
    its own is an error, never a silent fallback onto a GPU another rank already uses.
    """
    if requested == "cpu":
        return "cpu"
    if requested != "cuda":
        raise ValueError(f"unknown device {requested!r}; expected 'cpu' or 'cuda'")
    if cuda_count < 1:
        raise ValueError("--device cuda requested but CUDA is not available")
    local = int(env.get("LOCAL_RANK", "0"))
    if not 0 <= local < cuda_count:
        visible = env.get("CUDA_VISIBLE_DEVICES", "<unset>")
        raise ValueError(
            f"LOCAL_RANK {local} has no GPU of its own: this process sees {cuda_count} GPU(s) "
            f"(CUDA_VISIBLE_DEVICES={visible}); start at most {cuda_count} processes per node"
        )
    return f"cuda:{local}"


def init(device: str = "cpu") -> torch.device:
    """Pick this rank's device, then join the process group when launched by torchrun."""
    count = torch.cuda.device_count() if device == "cuda" else 0
    dev = torch.device(choose_device(device, os.environ, count))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # before the process group: NCCL binds to the current GPU
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            dist.init_process_group(backend="nccl", device_id=dev)
        else:
            dist.init_process_group(backend="gloo")
    return dev


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def share(n: int) -> slice:
    """This rank's contiguous share of a global batch of n (n divisible by the world size):
    rank r holds positions [r·n/W, (r+1)·n/W), so the ranks' shares in rank order are the batch."""
    local = n // world_size()
    return slice(rank() * local, (rank() + 1) * local)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (in place and returned); identity in a world of one."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate equal-shape tensors from every rank along dim 0 (rank order)."""
    if not dist.is_initialized():
        return t
    parts = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
