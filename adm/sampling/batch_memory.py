"""Memory-aware batch sizes for guided sampling.

A guided step holds one UNet forward's activations (freed at the end of the step) and the
classifier's activations, kept for the backward pass of grad_x log p(y | x_t). Both grow linearly
with the batch, so the peak is affine in the batch size b: peak(b) = fixed + b * per_image. Two
probe steps on the device itself (b = 1 and b = 2) measure both terms; `fitting_batch` then picks
the largest batch whose predicted peak fits the memory that is free, with headroom.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Callable

import torch

HEADROOM = 0.8  # use at most this share of the free memory: allocator fragmentation, other tenants


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_high_water_mark() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _high_water_mark_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class _RSSPeak:
    """Peak resident memory above the level at entry (CPU has no allocator peak counter and
    tracemalloc does not see torch's allocations): the kernel's VmHWM, reset at entry, which sees
    a peak however brief; where it cannot be reset, a poll every few ms (which a busy machine can
    make miss a short peak)."""

    def __enter__(self):
        self.exact = _reset_high_water_mark()
        self.base = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())
        if self.exact:
            self.peak = max(self.peak, _high_water_mark_bytes())

    @property
    def bytes(self) -> int:
        return self.peak - self.base


def peak_bytes(run: Callable[[], object], device: torch.device) -> int:
    """Extra memory at the peak of run() over what was in use before it (allocator peak on CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    with _RSSPeak() as probe:
        run()
    return probe.bytes


def affine_fit(peak_1: int, peak_2: int) -> tuple[int, int]:
    """(fixed, per_image) from the peaks at batch 1 and 2 (per_image at least 1 byte)."""
    per_image = max(peak_2 - peak_1, 1)
    return max(peak_1 - per_image, 0), per_image


def available_bytes(device: torch.device) -> int:
    """Memory free for this process now: the CUDA driver's free count, or Linux MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise OSError("cannot read MemAvailable from /proc/meminfo")


def fitting_batch(fixed: int, per_image: int, available: int, cap: int, headroom: float = HEADROOM) -> int:
    """Largest b <= cap with fixed + b * per_image <= headroom * available; 0 if not even b = 1."""
    budget = headroom * available - fixed
    return max(0, min(cap, int(budget // per_image)))


def probe_batch_size(step: Callable[[int], object], device: torch.device, cap: int) -> dict:
    """Run one guided step at b = 1 and b = 2 (step(b)), fit the affine model, pick the batch.

    Returns dict(batch_size, fixed_bytes, per_image_bytes, available_bytes). A batch size of 0
    means not even one image fits: the caller refuses with one line."""
    peaks = [peak_bytes(lambda b=b: step(b), device) for b in (1, 2)]
    fixed, per_image = affine_fit(*peaks)
    free = available_bytes(device)
    return {
        "batch_size": fitting_batch(fixed, per_image, free, cap),
        "fixed_bytes": fixed,
        "per_image_bytes": per_image,
        "available_bytes": free,
    }


def out_of_memory_message(batch_size: int, device: torch.device, probe: dict | None) -> str:
    """The one line a sampling run prints when a batch does not fit."""
    where = f"{device.type} out of memory at batch size {batch_size}"
    if not probe:
        return f"{where}; try a smaller --batch-size or --batch-size auto"
    mib = 2**20
    return (
        f"{where}: a guided step needs ~{probe['per_image_bytes'] / mib:.0f} MiB per image + "
        f"{probe['fixed_bytes'] / mib:.0f} MiB, {probe['available_bytes'] / mib:.0f} MiB are free; "
        f"--batch-size {max(probe['batch_size'], 1)} fits" + ("" if probe["batch_size"] else " (barely)")
    )


def guided_step(
    model_fn, cond_fn, shape: tuple[int, ...], num_classes: int | None, t: int, device: torch.device
) -> Callable[[int], object]:
    """step(b): one UNet forward and one classifier gradient on b images at timestep t, the
    unit whose peak memory `probe_batch_size` measures (zeros: the values do not matter)."""

    def step(b: int):
        x = torch.zeros((b, *shape), device=device)
        tt = torch.full((b,), t, dtype=torch.int64, device=device)
        y = torch.zeros(b, dtype=torch.int64, device=device) if num_classes else None
        out = model_fn(x, tt, y)
        if cond_fn is not None:
            out = cond_fn(x, tt, y)
        return out

    return step
