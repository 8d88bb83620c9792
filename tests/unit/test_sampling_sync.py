"""The sampler's step loop never waits on the device: no value read back to the host and no
blocking host-to-device copy per step.

On CUDA either one is a host-device sync (`.item()`, `bool(t)`, `.cpu()`, numpy indexing by a
tensor, `torch.from_numpy(table).to(cuda)` of a schedule table, the noise's pageable copy), so the
host stops queueing kernels until the GPU has drained its queue, at every step. The test runs the
real networks on the "meta" device, a device without data: any read-back fails there on its own
(meta has no values), and a dispatch-mode guard records every copy between the host and the
device and every scalar read. A first run fills the once-per-schedule caches (tables copied to
the device once); the second run, under the guard, must record nothing. Shape-only meta kernels
make this cheap on CPU.
"""

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from adm.diffusion.schedule import make_schedule, respace
from adm.sampling.guidance import classifier_guidance, limited_interval, step_sigmas
from adm.sampling.precision import FastPath, sampling_classifier_fn, sampling_model_fn
from adm.sampling.rng import sample_generators
from adm.sampling.samplers import ddim_sample, ddpm_sample

aten = torch.ops.aten
N = 3


class HostDeviceGuard(TorchDispatchMode):
    """Records each scalar read-back and each blocking copy between the host and another device.

    A non-blocking host-to-device copy is allowed: from pinned memory (what the sampler uses on
    CUDA) it is queued behind the running kernels and does not stop the host."""

    def __init__(self):
        super().__init__()
        self.events: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten._local_scalar_dense.default:
            self.events.append(f"scalar read back from {args[0].device} (.item / bool / int / tolist)")
        elif func in (aten._to_copy.default, aten.copy_.default):
            if func is aten._to_copy.default:
                src, dst = args[0].device, torch.device(kwargs.get("device") or args[0].device)
                non_blocking = kwargs.get("non_blocking", False)
            else:
                src, dst = args[1].device, args[0].device
                non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
            if src != dst and not (non_blocking and src.type == "cpu"):
                self.events.append(f"{'non-blocking ' if non_blocking else ''}copy {src} -> {dst}")
        return func(*args, **kwargs)


@pytest.fixture(scope="module")
def meta_nets(demo_nets):
    unet, clf = (copy.deepcopy(n).to("meta") for n in demo_nets)
    # the once-per-batch label range check reads y back by design (tested in test_sampling_fast);
    # this test is about the per-step path
    unet.validate_labels = lambda y: None
    fast = FastPath()
    return sampling_model_fn(unet, fast, "meta"), sampling_classifier_fn(clf, fast, "meta")


def _cond_fns(clf_fn, schedule):
    guided = classifier_guidance(clf_fn, 2.0)
    sig = step_sigmas(schedule)
    return {
        "unguided": None,
        "guided": guided,
        "interval": limited_interval(guided, schedule, (float(sig[1]), float(sig[-2]))),
    }


def _run(sampler, model_fn, cond_fn, schedule, **kw):
    gens = sample_generators(0, range(N))  # CPU generators: each step's z is drawn on the host
    noise = torch.randn(N, 3, 8, 8, device="meta")
    y = torch.arange(N, device="meta")
    return sampler(model_fn, noise, schedule, y, cond_fn, gens, **kw)


# DDPM (learned variance, as the demo UNet) in every guidance mode; DDIM with per-step noise
# (eta = 1) and without it
CASES = [
    (ddpm_sample, {}, "unguided"),
    (ddpm_sample, {}, "guided"),
    (ddpm_sample, {}, "interval"),
    (ddim_sample, {"eta": 1.0}, "interval"),
    (ddim_sample, {"eta": 0.0}, "guided"),
]


@pytest.mark.parametrize(
    "sampler, kw, guidance", CASES, ids=[f"{s.__name__}-{kw.get('eta', '')}-{g}" for s, kw, g in CASES]
)
def test_step_loop_reads_nothing_back_and_never_blocks_on_a_copy(meta_nets, sampler, kw, guidance):
    model_fn, clf_fn = meta_nets
    schedule = respace(make_schedule("cosine", 1000), "4")
    cond_fn = _cond_fns(clf_fn, schedule)[guidance]
    _run(sampler, model_fn, cond_fn, schedule, **kw)  # fills the per-(schedule, device) tables
    with HostDeviceGuard() as guard:
        x0 = _run(sampler, model_fn, cond_fn, schedule, **kw)
    assert x0.device.type == "meta" and x0.shape == (N, 3, 8, 8)
    assert guard.events == [], f"host-device syncs in the step loop: {sorted(set(guard.events))}"


def test_guard_sees_a_per_step_table_copy_and_a_read_back():
    # the guard itself: what the step loop did before (a numpy table copied to the device per
    # step; a timestep read back to index a numpy table) is recorded or refused
    with HostDeviceGuard() as guard:
        k = torch.zeros(2, dtype=torch.int64, device="meta")
        torch.from_numpy(make_schedule("linear", 1000).betas).to(k.device)[k]
    assert guard.events == ["copy cpu -> meta"]
    with pytest.raises((RuntimeError, NotImplementedError)):
        with HostDeviceGuard():
            torch.zeros(2, device="meta").cpu()
    with HostDeviceGuard() as guard:
        bool(torch.ones((), dtype=torch.bool))
    assert len(guard.events) == 1 and "scalar read back" in guard.events[0]
