"""The EMA of the weights: its values, not only its presence.

theta_ema <- rate * theta_ema + (1 - rate) * theta after every optimizer step (ADM keeps an EMA at
rate 0.9999 and samples from it). Checked against the closed form, against OpenAI's update_ema
(guided-diffusion-sdk, imported inside that one test only), and end to end in the trainer's files.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adm.data.datasets import save_npz
from adm.nets.presets import get_preset
from adm.training.diffusion import train_diffusion
from adm.training.presets import resolve_train_config
from adm.training.state import ema_state_dict, ema_update

torch.set_num_threads(1)


def _net(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 3))
    return net.to(dtype)


def _ema_of(net, seed):
    """An EMA state different from the weights (as after training has moved them)."""
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in net.named_parameters()}


@pytest.mark.parametrize("rate", [0.9, 0.5, 0.0])
def test_closed_form_with_constant_weights(rate):
    """k updates towards constant theta: ema_k = theta + rate^k (ema_0 - theta)."""
    net = _net()
    ema0 = _ema_of(net, 1)
    ema = {n: v.clone() for n, v in ema0.items()}
    for k in range(1, 6):
        ema_update(ema, net, rate)
        for n, p in net.named_parameters():
            expected = p.detach() + rate**k * (ema0[n] - p.detach())
            assert torch.allclose(ema[n], expected, rtol=1e-12, atol=1e-14), (n, k)


def test_one_update_by_hand_and_no_side_effects():
    net = _net(dtype=torch.float32)
    ema = _ema_of(net, 2)
    before = {n: v.clone() for n, v in ema.items()}
    weights = {n: p.detach().clone() for n, p in net.named_parameters()}
    ema_update(ema, net, 0.99)
    for n, p in net.named_parameters():
        assert torch.allclose(ema[n], 0.99 * before[n] + 0.01 * weights[n], atol=1e-7)
        assert torch.equal(p.detach(), weights[n]) and not ema[n].requires_grad  # weights untouched


def test_matches_openai_update_ema_on_random_walk():
    ref_nn = pytest.importorskip("guided_diffusion.nn")
    net = _net(dtype=torch.float32)
    ours = _ema_of(net, 3)
    theirs = [v.clone() for v in ours.values()]
    g = torch.Generator().manual_seed(4)
    for _ in range(20):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.1)  # an optimizer step
        ema_update(ours, net, 0.95)
        ref_nn.update_ema(theirs, list(net.parameters()), rate=0.95)
    for (n, v), w in zip(ours.items(), theirs):
        assert torch.equal(v, w), n


def test_state_dict_substitutes_parameters_and_keeps_buffers():
    net = _net()
    net.train()(torch.randn(8, 5, dtype=torch.float64))  # BatchNorm running stats move off their init
    ema = _ema_of(net, 5)
    sd = ema_state_dict(net, ema)
    assert list(sd) == list(net.state_dict())
    for k, v in net.state_dict().items():
        assert torch.equal(sd[k], ema[k] if k in ema else v), k
    sd["0.weight"].add_(1.0)  # a copy: the EMA and the model are not aliased
    assert not torch.equal(sd["0.weight"], ema["0.weight"]) and not torch.equal(sd["0.weight"], net[0].weight)


def test_trainer_writes_each_rate_to_its_own_file(tmp_path):
    """One step from theta_0 to theta_1: ema_r = r theta_0 + (1 - r) theta_1 for each rate, so
    (ema_r - theta_1) / r = theta_0 - theta_1 is the same for every rate. That identity needs no
    copy of theta_0 and fails when rate and 1 - rate are swapped or the files mislabelled."""
    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    save_npz(data, rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8), rng.integers(0, 10, 16))
    rates = (0.9, 0.99)
    cfg = resolve_train_config("tiny-test", steps=1, save_interval=1, ema_rates=list(rates))
    train_diffusion(
        data, tmp_path / "run", get_preset("tiny-test"), get_preset("tiny-test", "diffusion"), cfg, progress=False
    )
    theta1 = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    files = {r: torch.load(tmp_path / "run" / f"ema_{r}.pt", weights_only=True) for r in rates}
    first = torch.load(tmp_path / "run" / "ema.pt", weights_only=True)
    assert all(torch.equal(first[k], files[0.9][k]) for k in first)  # ema.pt is the first rate's
    moved = 0.0
    for k, t1 in theta1.items():
        d0, d1 = ((files[r][k].double() - t1.double()) / r for r in rates)
        assert torch.allclose(d0, d1, atol=1e-6), k
        moved = max(moved, d0.abs().max().item())
    assert moved > 1e-4  # the step moved the weights (lr 1e-3), so the identity is not 0 == 0
