"""Autoguidance (Karras et al. 2024) as a model_fn transform: eps~ = eps_guide + w (eps_main -
eps_guide), v from the main model, checked against a hand computation on two random TinyNets; w = 1
is the main model itself and, through `adm sample`, its unguided samples byte for byte; the sigma
interval leaves the main model alone outside it; the earlier-EMA guide (--keep-ema-step) is the
EMA a shorter run ends with; user mistakes end in one line."""

import json

import numpy as np
import pytest
import torch

from adm import cli
from adm.diffusion.schedule import make_schedule, respace
from adm.nets.build import build_model
from adm.nets.checkpoints import save_model
from adm.nets.presets import get_preset
from adm.sampling.guidance import autoguidance, step_sigmas

torch.set_num_threads(1)


def _inputs(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, 8, 8, generator=g), torch.tensor([999, 500, 37, 0][:n]), torch.tensor([3, 0, 9, 3][:n]))


def test_w_one_is_the_main_model_itself(tiny_net):
    main, guide = tiny_net(seed=1), tiny_net(seed=2)
    assert autoguidance(main, guide, 1.0) is main
    assert autoguidance(main, guide, 1) is main


@pytest.mark.parametrize("w", [0.5, 0.0, -1.0, float("nan"), float("inf")])
def test_w_below_one_is_refused(tiny_net, w):
    with pytest.raises(ValueError, match="autoguidance weight w must be a finite number >= 1"):
        autoguidance(tiny_net(seed=1), tiny_net(seed=2), w)


@pytest.mark.parametrize("w", [1.5, 2.0, 4.0])
def test_matches_hand_computation(tiny_net, w):
    main, guide = tiny_net(out_ch=6, seed=3), tiny_net(out_ch=6, seed=4)
    x, t, y = _inputs()
    with torch.no_grad():
        got = autoguidance(main, guide, w)(x, t, y)
        for i in range(len(x)):  # one sample at a time, the paper's denoiser form rearranged by hand
            m = main(x[i : i + 1], t[i : i + 1], y[i : i + 1])[0]
            g = guide(x[i : i + 1], t[i : i + 1], y[i : i + 1])[0]
            assert torch.allclose(got[i, :3], w * m[:3] - (w - 1) * g[:3], atol=1e-5, rtol=0)
            assert torch.allclose(got[i, 3:], m[3:], atol=1e-6, rtol=0)  # v of the main model
        assert (got[:, :3] - main(x, t, y)[:, :3]).abs().max() > 1e-2  # the guide did something
        assert (main(x, t, y) - guide(x, t, y)).abs().min() > 0  # two different networks


def test_eps_form_is_the_denoiser_form(tiny_net):
    # D = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar) is affine in eps at a fixed x_t, so
    # D_guide + w (D_main - D_guide) is the denoiser of eps~
    main, guide = tiny_net(out_ch=3, seed=5), tiny_net(out_ch=3, seed=6)
    x, t, y = _inputs()
    alpha_bar = torch.from_numpy(make_schedule("linear", 1000).alphas_cumprod)[t].float().view(-1, 1, 1, 1)

    def denoise(eps):
        return (x - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()

    w = 2.5
    with torch.no_grad():
        d_main, d_guide = denoise(main(x, t, y)), denoise(guide(x, t, y))
        got = denoise(autoguidance(main, guide, w, learn_sigma=False)(x, t, y))
    assert torch.allclose(got, d_guide + w * (d_main - d_guide), atol=1e-4, rtol=1e-5)  # 1/sqrt(alpha_bar) ~ 160


def test_interval_leaves_the_main_model_alone_outside(tiny_net):
    main, guide = tiny_net(out_ch=6, seed=7), tiny_net(out_ch=6, seed=8)
    sched = respace(make_schedule("linear", 1000), "6")
    sig = dict(zip(sched.timesteps.tolist(), step_sigmas(sched).tolist()))
    lo, hi = 0.5, 5.0
    fn = autoguidance(main, guide, 3.0, schedule=sched, interval=(lo, hi))
    x, _, y = _inputs()
    with torch.no_grad():
        for t in sched.timesteps.tolist():
            tt = torch.full((4,), t)
            expected = autoguidance(main, guide, 3.0)(x, tt, y) if lo < sig[t] <= hi else main(x, tt, y)
            assert torch.equal(fn(x, tt, y), expected), t


# --- the program: `adm sample --guidance autoguidance` ---------------------------------------


@pytest.fixture(scope="module")
def nets(tmp_path_factory, randomise):
    """main.pt and guide.pt: the tiny-test UNet with two different sets of random weights."""
    d = tmp_path_factory.mktemp("autonets")
    cfg, diffusion = get_preset("tiny-test"), get_preset("tiny-test", "diffusion")
    save_model(randomise(build_model(cfg), seed=4), cfg, d / "main.pt", diffusion=diffusion)
    save_model(randomise(build_model(cfg), seed=5), cfg, d / "guide.pt", diffusion=diffusion)
    return d


def _sample(nets, out, *extra):
    return cli.main(
        ["sample", "--model", str(nets / "main.pt"), "--num-samples", "3", "--respacing", "4"]
        + ["--batch-size", "2", "--seed", "1", "--no-progress", "--out", str(out), *extra]
    )


def test_program_w_one_is_unguided_byte_for_byte(nets, tmp_path):
    _sample(nets, tmp_path / "plain.npz")
    auto = ["--guidance", "autoguidance", "--guide-model", str(nets / "guide.pt")]
    assert _sample(nets, tmp_path / "w1.npz", *auto, "--scale", "1") == 0
    assert _sample(nets, tmp_path / "w3.npz", *auto, "--scale", "3") == 0
    plain, w1, w3 = (np.load(tmp_path / f"{n}.npz") for n in ("plain", "w1", "w3"))
    assert np.array_equal(plain["arr_0"], w1["arr_0"]) and np.array_equal(plain["arr_1"], w1["arr_1"])
    assert not np.array_equal(plain["arr_0"], w3["arr_0"])  # w = 3 is guided
    record = json.loads((tmp_path / "w3.json").read_text())["guidance"]
    assert record["method"] == "autoguidance" and record["guide_model"] == str(nets / "guide.pt")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--guidance", "autoguidance", "--guide-model", "G", "--scale", "0.5"], "needs --scale w >= 1"),
        (["--guidance", "autoguidance", "--scale", "2"], "--guide-model is the guide"),
        (["--guide-model", "G"], "--guide-model is the guide"),
    ],
)
def test_program_refusals_are_one_line(nets, tmp_path, capsys, extra, message):
    assert _sample(nets, tmp_path / "x.npz", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_kept_ema_step_is_a_shorter_runs_ema(tmp_path):
    """ema_step3.pt of a 6-step run is the EMA a 3-step run ends with: every draw depends on
    (seed, step) only, and the lr does not anneal in tiny-test."""
    from adm.data.datasets import save_npz

    g = np.random.default_rng(0)
    save_npz(tmp_path / "d.npz", g.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8), g.integers(0, 10, 16))
    base = ["train-diffusion", "--data", str(tmp_path / "d.npz"), "--model-preset", "tiny-test", "--no-progress"]
    assert cli.main(base + ["--out-dir", str(tmp_path / "long"), "--keep-ema-step", "3"]) == 0
    assert cli.main(base + ["--out-dir", str(tmp_path / "short"), "--steps", "3"]) == 0
    kept, short = (torch.load(tmp_path / p, weights_only=True) for p in ("long/ema_step3.pt", "short/ema.pt"))
    assert kept.keys() == short.keys() and all(torch.equal(kept[k], short[k]) for k in kept)
    final = torch.load(tmp_path / "long/ema.pt", weights_only=True)
    assert any(not torch.equal(kept[k], final[k]) for k in kept)
