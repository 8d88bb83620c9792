"""Sampling precision: resolving the mode per device, what each mode does to the networks, and
the classifier gradient in the matching precision."""

import copy

import pytest
import torch

from adm.sampling.precision import (
    FastPath,
    resolve_sampling_precision,
    sampling_classifier_fn,
    sampling_model_fn,
)

torch.set_num_threads(1)


def test_auto_is_the_papers_fp16_on_cuda_and_fp32_elsewhere():
    assert resolve_sampling_precision("auto", "cuda") == "fp16"
    assert resolve_sampling_precision("auto", "cpu") == "fp32"
    assert resolve_sampling_precision("bf16", "cpu") == "bf16"
    assert resolve_sampling_precision("fp32", "cuda") == "fp32"


def test_fp16_off_cuda_and_unknown_modes_are_refused():
    with pytest.raises(ValueError, match="CUDA only"):
        resolve_sampling_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_sampling_precision("fp8", "cuda")


def test_bf16_classifier_gradient_is_float32_and_close_to_fp32(demo_nets):
    clf = demo_nets[1]
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    t, y = torch.tensor([10, 200, 500, 900]), torch.tensor([0, 3, 5, 9])
    grads = {}
    for mode in ("fp32", "bf16"):
        fn = sampling_classifier_fn(copy.deepcopy(clf), FastPath(precision=mode), "cpu")
        x_in = x.clone().requires_grad_(True)
        logits = fn(x_in, t)
        torch.log_softmax(logits, -1)[torch.arange(4), y].sum().backward()
        grads[mode] = (logits.dtype, x_in.grad)
    assert grads["bf16"][0] == torch.float32 and grads["bf16"][1].dtype == torch.float32
    g32, g16 = grads["fp32"][1], grads["bf16"][1]
    assert not torch.equal(g32, g16)  # the bf16 forward/backward really ran in bf16
    assert (g32 - g16).norm() < 0.1 * g32.norm()


def test_fp32_mode_leaves_every_weight_float32_and_frozen(demo_nets):
    unet, clf = copy.deepcopy(demo_nets[0]), copy.deepcopy(demo_nets[1])
    sampling_model_fn(unet, FastPath(), "cpu"), sampling_classifier_fn(clf, FastPath(), "cpu")
    for net in (unet, clf):
        assert all(p.dtype == torch.float32 and not p.requires_grad for p in net.parameters())
        assert not net.training


def test_fp16_mode_refuses_a_cpu_model(demo_nets):
    with pytest.raises(ValueError, match="CUDA"):
        sampling_model_fn(copy.deepcopy(demo_nets[0]), FastPath(precision="fp16"), "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 sampling is CUDA-only")
def test_fp16_mode_converts_only_the_unet_torso_on_cuda(demo_nets):
    unet, clf = copy.deepcopy(demo_nets[0]).cuda(), copy.deepcopy(demo_nets[1]).cuda()
    model_fn = sampling_model_fn(unet, FastPath(precision="fp16"), "cuda")
    sampling_classifier_fn(clf, FastPath(precision="fp16"), "cuda")
    assert unet.input_blocks[0][0].weight.dtype == torch.float16
    assert unet.out[0].weight.dtype == torch.float32 and unet.time_embed[0].weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in clf.parameters())  # the README leaves the classifier fp32
    x, t, y = (
        torch.randn(2, 3, 8, 8, device="cuda"),
        torch.tensor([5, 900], device="cuda"),
        torch.tensor([1, 2], device="cuda"),
    )
    assert model_fn(x, t, y).dtype == torch.float32


def test_bf16_unet_forward_runs_in_bf16_and_returns_float32(demo_nets):
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    t, y = torch.tensor([5, 400, 900]), torch.tensor([1, 2, 3])
    outs = {
        m: sampling_model_fn(copy.deepcopy(demo_nets[0]), FastPath(precision=m), "cpu")(x, t, y)
        for m in ("fp32", "bf16")
    }
    assert outs["bf16"].dtype == torch.float32
    assert not torch.equal(outs["fp32"], outs["bf16"])
    assert (outs["fp32"] - outs["bf16"]).abs().max() < 0.05 * outs["fp32"].abs().max()
