"""Limited-interval guidance (Kynkaanniemi et al. 2024): which steps are guided, checked against a
closed-form sigma_t of a known schedule; the samples against a hand-rolled loop; the full interval
against today's `adm sample` bytes."""

import json
import math

import numpy as np
import pytest
import torch

from adm import cli
from adm.diffusion.gaussian import p_mean_variance, predict_eps_from_xstart, predict_xstart_from_eps
from adm.diffusion.schedule import make_schedule, respace
from adm.sampling.guidance import check_interval, limited_interval, step_sigmas
from adm.sampling.rng import randn_per_sample, sample_generators
from adm.sampling.samplers import ddim_sample, ddpm_sample

torch.set_num_threads(1)
T = 1000
LO, HI = 0.5, 5.0  # strictly between kept sigmas of "10" / "ddim10": guided steps in the middle only


def closed_form_sigma(t):
    """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) of Ho et al.'s linear betas, from scratch."""
    betas = np.linspace(1e-4, 0.02, T, dtype=np.float64)
    alpha_bar = np.cumprod(1.0 - betas)
    return np.sqrt((1.0 - alpha_bar[t]) / alpha_bar[t])


class Spy:
    """A cond_fn that depends on x and t and records the original timesteps it is called at."""

    def __init__(self):
        self.seen = []

    def __call__(self, x, t, y):
        self.seen.append(int(t[0]))
        return (0.3 * torch.cos(3 * x) + 0.002 * t.float().view(-1, 1, 1, 1)).float()


@pytest.mark.parametrize("spec", ["10", "ddim10", ""])
def test_step_sigmas_are_those_of_the_original_timestep(spec):
    sched = respace(make_schedule("linear", T), spec)
    assert np.allclose(step_sigmas(sched), closed_form_sigma(sched.timesteps), rtol=1e-10, atol=0)


@pytest.mark.parametrize("spec", ["10", "ddim10", "7,3"])
@pytest.mark.parametrize("lookup_in", ["original", "respaced"])
def test_guided_steps_are_the_closed_form_set(spec, lookup_in):
    base = make_schedule("linear", T)
    sched = respace(base, spec)
    sigma = closed_form_sigma(sched.timesteps)
    expected = sorted(int(t) for t, s in zip(sched.timesteps, sigma) if LO < s <= HI)
    # the test means something only if steps fall below, inside and above the interval
    assert expected and sigma.min() <= LO and sigma.max() > HI
    spy = Spy()
    cond_fn = limited_interval(spy, base if lookup_in == "original" else sched, (LO, HI))
    x = torch.randn(2, 3, 4, 4)
    y = torch.tensor([1, 2])
    reference = Spy()  # an unrecorded twin for the guided value
    for t in sched.timesteps[::-1]:
        tt = torch.full((2,), int(t))
        g = cond_fn(x, tt, y)
        assert torch.equal(g, reference(x, tt, y)) if int(t) in expected else not g.any()
    # outside the interval the wrapped cond_fn is never called (no classifier gradient paid for)
    assert sorted(spy.seen) == expected


def test_interval_is_open_below_closed_above():
    # bounds exactly on two kept noise levels: sigma_hi is guided, sigma_lo is not (paper's (lo, hi])
    sched = respace(make_schedule("linear", T), "10")
    sig = step_sigmas(sched)
    lo_k, hi_k = 2, 6
    spy = Spy()
    cond_fn = limited_interval(spy, sched, (sig[lo_k], sig[hi_k]))
    for k in range(len(sched)):
        cond_fn(torch.zeros(1, 3, 2, 2), torch.tensor([int(sched.timesteps[k])]), torch.tensor([0]))
    assert sorted(spy.seen) == sorted(int(sched.timesteps[k]) for k in range(lo_k + 1, hi_k + 1))


def test_mixed_batch_guides_per_sample():
    sched = respace(make_schedule("linear", T), "10")
    sig = step_sigmas(sched)
    inside_t, outside_t = int(sched.timesteps[4]), int(sched.timesteps[9])
    assert LO < sig[4] <= HI and sig[9] > HI
    spy = Spy()
    x = torch.randn(2, 3, 2, 2)
    t = torch.tensor([inside_t, outside_t])
    g = limited_interval(spy, sched, (LO, HI))(x, t, torch.tensor([0, 0]))
    assert torch.equal(g[0], spy(x, t, None)[0]) and not g[1].any()


def test_full_interval_returns_the_cond_fn_itself():
    sched = make_schedule("linear", T)
    spy = Spy()
    for full in (None, (0, math.inf), [0.0, float("inf")]):
        assert limited_interval(spy, sched, full) is spy
    assert limited_interval(None, sched, (LO, HI)) is None
    assert limited_interval(spy, sched, (0, 1e9)) is not spy  # finite bounds: wrapped


def test_unknown_timestep_is_refused():
    sched = respace(make_schedule("linear", T), "ddim10")  # t = 0, 100, ..., 900
    with pytest.raises(ValueError, match="not all steps"):
        limited_interval(Spy(), sched, (LO, HI))(torch.zeros(1, 3, 2, 2), torch.tensor([50]), torch.tensor([0]))


@pytest.mark.parametrize(
    "bad", [(1.0, 1.0), (2.0, 1.0), (-0.1, 1.0), (math.nan, 1.0), (0.0, math.nan), (math.inf, math.inf), (1.0,)]
)
def test_bad_intervals_are_refused(bad):
    with pytest.raises(ValueError, match="--guidance-interval"):
        check_interval(bad)


def _hand_rolled(model_fn, cond_fn, noise, sched, y, seed, ddim):
    """The sampler written out step by step: guided (Alg. 1 / Alg. 2) exactly where the closed-form
    sigma of the ORIGINAL timestep lies in (LO, HI], plain DDPM / DDIM (eta = 0) elsewhere."""
    sigma = closed_form_sigma(sched.timesteps)
    gens = sample_generators(seed, range(len(noise)))
    x = noise
    for k in range(len(sched) - 1, -1, -1):
        kk = torch.full((len(x),), k)
        t = torch.full((len(x),), int(sched.timesteps[k]))
        p = p_mean_variance(sched, model_fn(x, t, y), x, kk, True, True)
        guided = LO < sigma[k] <= HI
        if ddim:
            x0, eps = p["pred_xstart"], predict_eps_from_xstart(sched, x, kk, p["pred_xstart"])
            if guided:
                eps = eps - math.sqrt(1 - sched.alphas_cumprod[k]) * cond_fn(x, t, y)
                x0 = predict_xstart_from_eps(sched, x, kk, eps)
            ab_prev = sched.alphas_cumprod_prev[k]
            x = x0 * math.sqrt(ab_prev) + math.sqrt(1 - ab_prev) * eps
        else:
            z = randn_per_sample(gens, x.shape[1:])
            mean = p["mean"] + p["variance"] * cond_fn(x, t, y) if guided else p["mean"]
            x = mean + (k != 0) * torch.exp(0.5 * p["log_variance"]) * z
    return x


@pytest.mark.parametrize("ddim", [False, True])
def test_samples_equal_a_hand_rolled_interval_loop(tiny_net, ddim):
    net = tiny_net(out_ch=6)
    model_fn = lambda x, t, y: net(x, t, y)  # noqa: E731
    sched = respace(make_schedule("linear", T), "ddim10" if ddim else "10")
    y = torch.tensor([3, 7, 1])
    noise = randn_per_sample(sample_generators(5, range(3)), (3, 8, 8))
    cond_fn = Spy()
    with torch.no_grad():
        ours = (ddim_sample if ddim else ddpm_sample)(
            model_fn,
            noise,
            sched,
            labels=y,
            cond_fn=limited_interval(cond_fn, make_schedule("linear", T), (LO, HI)),
            generators=sample_generators(5, range(3)),
        )
        hand = _hand_rolled(model_fn, cond_fn, noise, sched, y, 5, ddim)
        full = (ddim_sample if ddim else ddpm_sample)(
            model_fn, noise, sched, labels=y, cond_fn=cond_fn, generators=sample_generators(5, range(3))
        )
    if ddim:  # unguided DDIM steps re-derive x_0_hat from eps: equal up to float rounding
        assert torch.allclose(ours, hand, atol=1e-5, rtol=0)
    else:  # mean + Sigma * 0 is the unguided mean exactly
        assert torch.equal(ours, hand)
    assert (ours - full).abs().max() > 1e-2  # the interval changed the samples


# --- the `adm sample` program ---------------------------------------------------------------


@pytest.fixture(scope="module")
def nets(tiny_saved_nets):
    return tiny_saved_nets  # conftest: tiny-test UNet + classifier, random non-zero weights


def _sample(nets, out, *extra):
    return cli.main(
        [
            "sample",
            "--model",
            str(nets / "ema.pt"),
            "--classifier",
            str(nets / "clf.pt"),
            "--scale",
            "3",
            "--num-samples",
            "5",
            "--respacing",
            "6",
            "--batch-size",
            "5",
            "--seed",
            "2",
            "--no-progress",
            "--out",
            str(out),
            *extra,
        ]
    )


def test_program_full_interval_is_byte_identical_and_recorded(nets, tmp_path):
    assert _sample(nets, tmp_path / "today.npz") == 0
    assert _sample(nets, tmp_path / "full.npz", "--guidance-interval", "0", "inf") == 0
    assert _sample(nets, tmp_path / "limited.npz", "--guidance-interval", "0.5", "5") == 0
    assert (tmp_path / "today.npz").read_bytes() == (tmp_path / "full.npz").read_bytes()
    assert (tmp_path / "today.npz").read_bytes() != (tmp_path / "limited.npz").read_bytes()
    record = lambda name: json.loads((tmp_path / name).with_suffix(".json").read_text())["config"]  # noqa: E731
    assert record("today.npz")["guidance_interval"] is None
    assert record("full.npz")["guidance_interval"] == [0.0, math.inf]
    assert record("limited.npz")["guidance_interval"] == [0.5, 5.0]


@pytest.mark.parametrize("bad", [["2", "1"], ["nan", "1"], ["-1", "1"], ["1", "1"]])
def test_program_bad_interval_is_one_line_and_writes_nothing(nets, tmp_path, capsys, bad):
    assert _sample(nets, tmp_path / "x.npz", "--guidance-interval", *bad) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --guidance-interval") and "\n" not in err
    assert not list(tmp_path.iterdir())


# --- how many steps were guided: recorded in the shard's JSON, a warning when none --------------


def _counting_classifier_guidance(monkeypatch):
    """Wrap adm.sampling.guidance.classifier_guidance so the cond_fn it returns counts its calls
    (on CPU, limited_interval calls it only at guided steps: the count the program must record)."""
    from adm.sampling import guidance

    calls = []
    real = guidance.classifier_guidance

    def counting(classifier, scale):
        cond_fn = real(classifier, scale)
        if cond_fn is None:
            return None
        return lambda x, t, y: (calls.append(int(t[0])), cond_fn(x, t, y))[1]

    monkeypatch.setattr(guidance, "classifier_guidance", counting)
    return calls


@pytest.mark.parametrize(
    "interval", [None, ("0", "inf"), ("0.5", "5"), ("1e6", "1e7")], ids=["none", "full", "limited", "empty"]
)
def test_program_records_the_guided_steps(nets, tmp_path, capsys, monkeypatch, interval):
    calls = _counting_classifier_guidance(monkeypatch)
    extra = ["--guidance-interval", *interval] if interval else []
    assert _sample(nets, tmp_path / "x.npz", *extra) == 0
    record = json.loads((tmp_path / "x.json").read_text())
    # the tiny-test diffusion (linear, T = 1000) respaced to 6 steps, sigma from its definition
    sched = respace(make_schedule("linear", T), "6")
    sigma = np.sqrt((1 - sched.alphas_cumprod) / sched.alphas_cumprod)
    lo, hi = (float(v) for v in interval) if interval else (0.0, math.inf)
    expected = int(((sigma > lo) & (sigma <= hi)).sum())
    assert record["steps"] == 6 and record["guided_steps"] == expected == len(calls)  # one batch of 5
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    if interval == ("0.5", "5"):
        assert 0 < expected < 6  # some steps in, some out: the count means something
    if expected == 0:
        assert len(err) == 1 and err[0].startswith("warning: --guidance-interval 1e+06 1e+07 contains none")
        assert "no step is guided" in err[0]
    else:
        assert not any(line.startswith("warning") for line in err)


@pytest.mark.parametrize(
    "guidance, scale, interval, expected",
    [
        ("classifier", 0.0, None, 0),  # s = 0: unguided
        ("classifier", 2.0, None, 10),
        ("cfg", 0.0, (0.5, 5.0), 0),  # w = 0: the plain conditional model
        ("cfg", 1.5, None, 10),
        ("cfg", 1.5, (LO, HI), "closed"),
        ("autoguidance", 1.0, (LO, HI), 0),  # w = 1: the main model alone
        ("autoguidance", 2.0, (0.0, math.inf), 10),
        ("autoguidance", 2.0, (LO, HI), "closed"),
        ("cfg", 1.5, (1e6, 1e7), 0),
    ],
)
def test_guided_step_count_of_every_method(guidance, scale, interval, expected, capsys):
    from adm.programs.sample import SampleConfig, count_guided_steps

    extra = {"classifier": "c.pt"} if guidance == "classifier" else {}
    extra |= {"guide_model": "g.pt"} if guidance == "autoguidance" else {}
    cfg = SampleConfig(
        model="m.pt", out="o.npz", num_samples=1, scale=scale, guidance=guidance, guidance_interval=interval, **extra
    )
    base = make_schedule("linear", T)
    sched = respace(base, "10")
    if expected == "closed":
        expected = sum(LO < s <= HI for s in closed_form_sigma(sched.timesteps))
        assert 0 < expected < 10
    assert count_guided_steps(cfg, base, sched) == expected
    warned = capsys.readouterr().err
    assert ("no step is guided" in warned) == (interval == (1e6, 1e7))
