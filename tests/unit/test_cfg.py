"""Classifier-free guidance (Ho & Salimans 2021) as a model_fn transform, checked against an
independent computation on a random TinyNet: eps~ = (1 + w) eps(x, y) - w eps(x, null), variance
channels from the conditional pass. Sampling math only: no model here is trained with label dropout."""

import math

import pytest
import torch

from adm.diffusion.schedule import make_schedule, respace
from adm.sampling.guidance import classifier_free_guidance
from adm.sampling.samplers import ddpm_sample

torch.set_num_threads(1)
NULL = 10  # the extra class index of a label-dropout model with 10 real classes


def _inputs(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, 8, 8, generator=g), torch.tensor([999, 500, 37, 0][:n]), torch.tensor([3, 0, 9, 3][:n]))


def test_w_zero_is_the_conditional_model_itself(tiny_net):
    net = tiny_net(num_classes=11)
    assert classifier_free_guidance(net, 0.0, NULL) is net
    assert classifier_free_guidance(net, 0, NULL) is net


@pytest.mark.parametrize("w", [0.5, 1.0, 4.0])
def test_matches_independent_computation(tiny_net, w):
    net = tiny_net(out_ch=6, num_classes=11, seed=3)
    x, t, y = _inputs()
    with torch.no_grad():
        got = classifier_free_guidance(net, w, NULL)(x, t, y)
        # the same quantity written the other way round: eps_u + (1 + w) (eps_c - eps_u), per sample
        for i in range(len(x)):
            cond = net(x[i : i + 1], t[i : i + 1], y[i : i + 1])[0]
            uncond = net(x[i : i + 1], t[i : i + 1], torch.tensor([NULL]))[0]
            assert torch.allclose(got[i, :3], uncond[:3] + (1 + w) * (cond[:3] - uncond[:3]), atol=1e-5, rtol=0)
            # the learned variance channels (v of IDDPM) come from the conditional pass unchanged
            assert torch.allclose(got[i, 3:], cond[3:], atol=1e-6, rtol=0)
        assert (got[:, :3] - net(x, t, y)[:, :3]).abs().max() > 1e-2  # guidance did something
    assert got.shape == (4, 6, 8, 8)


def test_without_learned_variance_every_channel_is_guided(tiny_net):
    net = tiny_net(out_ch=3, num_classes=11, seed=4)
    x, t, y = _inputs()
    with torch.no_grad():
        got = classifier_free_guidance(net, 2.0, NULL, learn_sigma=False)(x, t, y)
        expected = 3.0 * net(x, t, y) - 2.0 * net(x, t, torch.full_like(y, NULL))
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)


def test_sampling_with_cfg_equals_a_hand_combined_model(tiny_net):
    # the transform is an ordinary model_fn: the sampler's mean AND variance follow the guided eps
    # and the conditional v
    net = tiny_net(out_ch=6, num_classes=11, seed=5)
    w = 1.5

    def hand(x, t, y):
        c, u = net(x, t, y), net(x, t, torch.full_like(y, NULL))
        return torch.cat([u[:, :3] + (1 + w) * (c[:, :3] - u[:, :3]), c[:, 3:]], dim=1)

    sched = respace(make_schedule("linear", 1000), "8")
    x_T, _, y = _inputs(3, seed=1)
    with torch.no_grad():
        ours = ddpm_sample(
            classifier_free_guidance(net, w, NULL),
            x_T,
            sched,
            labels=y,
            generators=[torch.Generator().manual_seed(i) for i in range(3)],
        )
        theirs = ddpm_sample(
            hand, x_T, sched, labels=y, generators=[torch.Generator().manual_seed(i) for i in range(3)]
        )
    assert torch.isfinite(ours).all() and torch.allclose(ours, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("w", [-0.5, math.nan, math.inf])
def test_bad_weight_is_refused(tiny_net, w):
    with pytest.raises(ValueError, match="weight w"):
        classifier_free_guidance(tiny_net(), w, NULL)


@pytest.mark.parametrize("null", [-1, 1.5, True, None])
def test_bad_null_label_is_refused(tiny_net, null):
    with pytest.raises(ValueError, match="null_label"):
        classifier_free_guidance(tiny_net(), 1.0, null)


def test_needs_labels(tiny_net):
    with pytest.raises(ValueError, match="labels"):
        classifier_free_guidance(tiny_net(num_classes=11), 1.0, NULL)(*_inputs()[:2], None)
