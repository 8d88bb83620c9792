"""`adm sample --guidance cfg`: classifier-free guided samples of a null-class model equal an
independent step-by-step computation (transform written out here), with and without a sigma
interval, DDPM and DDIM; w = 0 is today's unguided program bit for bit; shards merge to one run;
user mistakes end in one line."""

import json
import math

import numpy as np
import pytest
import torch

from adm import cli
from adm.diffusion.gaussian import p_mean_variance, predict_eps_from_xstart
from adm.diffusion.schedule import make_schedule, respace
from adm.nets.build import build_model
from adm.nets.checkpoints import save_model
from adm.nets.presets import get_preset
from adm.sampling.guidance import classifier_free_guidance
from adm.sampling.rng import randn_per_sample, sample_generators, sample_labels
from adm.sampling.samplers import to_uint8
from adm.training.draws import with_null_class

torch.set_num_threads(1)
T, N, SEED, NULL = 1000, 5, 2, 10
LO, HI = 0.5, 5.0  # with respacing "6" (t = 0, 200, ..., 999): guided at t = 200, 400 only


@pytest.fixture(scope="module")
def nets(tmp_path_factory, randomise):
    """cfg.pt: the tiny-test UNet with a null class (11 label rows), random non-zero weights;
    plain.pt: the same network without one (today's models)."""
    d = tmp_path_factory.mktemp("cfgnets")
    cfg = with_null_class(get_preset("tiny-test"), 0.1)
    net = randomise(build_model(cfg), seed=4)
    with torch.no_grad():  # random rows of std 0.05 barely move the output: x30 lets the label
        net.label_emb.weight.mul_(30)  # matter as a trained one does (CFG moves pixels by up to ~60 levels)
    save_model(net, cfg, d / "cfg.pt", diffusion=get_preset("tiny-test", "diffusion"))
    plain = get_preset("tiny-test")
    save_model(
        randomise(build_model(plain), seed=4), plain, d / "plain.pt", diffusion=get_preset("tiny-test", "diffusion")
    )
    return d


def _sample(nets, out, *extra, model="cfg.pt", respacing="6", batch=3, n=N):
    return cli.main(
        [
            "sample",
            "--model",
            str(nets / model),
            "--num-samples",
            str(n),
            "--respacing",
            respacing,
            "--batch-size",
            str(batch),
            "--seed",
            str(SEED),
            "--no-progress",
            "--out",
            str(out),
            *extra,
        ]
    )


def closed_form_sigma(t):
    """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) of Ho et al.'s linear betas, from scratch."""
    alpha_bar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, T, dtype=np.float64))
    return np.sqrt((1.0 - alpha_bar[t]) / alpha_bar[t])


def _independent(net, index, w, respacing, interval=None):
    """Sample `index` alone, step by step: eps~ = eps_u + (1 + w)(eps_c - eps_u) and the
    conditional v where the closed-form sigma of the original t lies in the interval, the plain
    conditional output elsewhere; DDPM ancestral or DDIM (eta = 0) written out."""
    sched = respace(make_schedule("linear", T), respacing)
    ddim = respacing.startswith("ddim")
    gens = sample_generators(SEED, [index])
    y = sample_labels(SEED, [index], 10)
    x = randn_per_sample(gens, (3, 16, 16))
    sigma = closed_form_sigma(sched.timesteps)
    for k in range(len(sched) - 1, -1, -1):
        kk, t = torch.full((1,), k), torch.full((1,), int(sched.timesteps[k]))
        cond = net(x, t, y)
        out = cond
        if interval is None or interval[0] < sigma[k] <= interval[1]:
            uncond = net(x, t, torch.tensor([NULL]))
            out = torch.cat([uncond[:, :3] + (1 + w) * (cond[:, :3] - uncond[:, :3]), cond[:, 3:]], dim=1)
        p = p_mean_variance(sched, out, x, kk, True, True)
        if ddim:
            eps = predict_eps_from_xstart(sched, x, kk, p["pred_xstart"])
            ab_prev = float(sched.alphas_cumprod_prev[k])
            x = p["pred_xstart"] * math.sqrt(ab_prev) + math.sqrt(1 - ab_prev) * eps
        else:
            z = randn_per_sample(gens, (3, 16, 16))
            x = p["mean"] + (k != 0) * torch.exp(0.5 * p["log_variance"]) * z
    return to_uint8(x)[0], int(y[0])


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    """uint8 images equal up to one level where float rounding (batch 3 vs 1) crosses a boundary."""
    d = np.abs(a.astype(int) - b.astype(int))
    return d.max() <= 1 and (d == 0).mean() > 0.95


@pytest.mark.parametrize("respacing,interval", [("6", None), ("ddim6", None), ("6", (LO, HI)), ("ddim6", (LO, HI))])
def test_cfg_samples_equal_an_independent_computation(nets, tmp_path, respacing, interval):
    from adm.nets.checkpoints import load_model

    w = 2.0
    extra = ["--guidance-interval", str(LO), str(HI)] if interval else []
    assert _sample(nets, tmp_path / "s.npz", "--guidance", "cfg", "--scale", str(w), *extra, respacing=respacing) == 0
    got = np.load(tmp_path / "s.npz")
    net, _ = load_model(nets / "cfg.pt")
    with torch.no_grad():
        for i in range(N):
            image, label = _independent(net, i, w, respacing, interval)
            assert got["arr_1"][i] == label
            assert _close(got["arr_0"][i], image), f"sample {i} differs from the independent computation"
        unguided, _ = _independent(net, 0, 0.0, respacing)
    assert np.abs(got["arr_0"][0].astype(int) - unguided.astype(int)).max() > 10  # guidance did something
    if interval:  # ... and the interval too: not the full-interval samples
        full, _ = _independent(net, 0, w, respacing)
        assert np.abs(got["arr_0"][0].astype(int) - full.astype(int)).max() > 10
    record = json.loads((tmp_path / "s.json").read_text())
    assert record["guidance"]["method"] == "cfg" and record["guidance"]["scale"] == w
    assert record["guidance"]["sigma_interval"] == (list(interval) if interval else None)
    assert record["config"]["guidance"] == "cfg"


def test_w_zero_is_todays_unguided_program_bit_for_bit(nets, tmp_path):
    assert _sample(nets, tmp_path / "today.npz") == 0
    assert _sample(nets, tmp_path / "w0.npz", "--guidance", "cfg", "--scale", "0") == 0
    assert (
        _sample(nets, tmp_path / "w0i.npz", "--guidance", "cfg", "--scale", "0", "--guidance-interval", "0.5", "5") == 0
    )
    today = (tmp_path / "today.npz").read_bytes()
    assert today == (tmp_path / "w0.npz").read_bytes() == (tmp_path / "w0i.npz").read_bytes()


def test_full_interval_equals_no_interval_bit_for_bit(nets, tmp_path):
    assert _sample(nets, tmp_path / "a.npz", "--guidance", "cfg", "--scale", "1.5") == 0
    assert (
        _sample(nets, tmp_path / "b.npz", "--guidance", "cfg", "--scale", "1.5", "--guidance-interval", "0", "inf") == 0
    )
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_shards_merge_to_the_unsharded_run(nets, tmp_path):
    flags = ["--guidance", "cfg", "--scale", "1.5", "--guidance-interval", "0.5", "5"]
    assert _sample(nets, tmp_path / "one.npz", *flags, n=6, batch=2) == 0
    for k in range(3):
        assert _sample(nets, tmp_path / f"s{k}.npz", *flags, "--shard", str(k), "--num-shards", "3", n=6, batch=2) == 0
    shards = [str(tmp_path / f"s{k}.npz") for k in range(3)]
    assert (
        cli.main(["merge", "--out", str(tmp_path / "merged.npz"), "--num-samples", "6", "--no-progress", *shards]) == 0
    )
    one, merged = np.load(tmp_path / "one.npz"), np.load(tmp_path / "merged.npz")
    assert np.array_equal(one["arr_0"], merged["arr_0"]) and np.array_equal(one["arr_1"], merged["arr_1"])


def test_bf16_cfg_runs_and_stays_close_to_fp32(nets, tmp_path):
    flags = ["--guidance", "cfg", "--scale", "1.5", "--guidance-interval", "0.5", "5"]
    assert _sample(nets, tmp_path / "fp32.npz", *flags) == 0
    assert _sample(nets, tmp_path / "bf16.npz", *flags, "--precision", "bf16") == 0
    a, b = (np.load(tmp_path / f"{p}.npz")["arr_0"].astype(int) for p in ("fp32", "bf16"))
    assert 0 < np.abs(a - b).mean() < 8  # bf16 is not fp32, but the same samples up to rounding
    assert json.loads((tmp_path / "bf16.json").read_text())["precision"] == "bf16"


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--guidance", "cfg", "--scale", "1"], "needs a model trained with a null class"),
        (["--guidance", "cfg", "--scale", "1", "--classifier", "clf.pt"], "--guidance cfg takes no --classifier"),
        (["--guidance", "cfg", "--scale", "-1"], "--scale must be a finite number >= 0"),
    ],
)
def test_user_mistakes_are_one_line_and_write_nothing(nets, tmp_path, capsys, extra, message):
    model = "plain.pt" if "null class" in message else "cfg.pt"
    assert _sample(nets, tmp_path / "x.npz", *extra, model=model) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("error: ")
    assert not list(tmp_path.iterdir())


def test_labels_that_hit_the_null_class_are_refused(tiny_net):
    net = tiny_net(out_ch=6, num_classes=11)
    guided = classifier_free_guidance(net, 1.0, NULL)
    x, t = torch.zeros(2, 3, 8, 8), torch.tensor([5, 5])
    guided(x, t, torch.tensor([3, 9]))
    with pytest.raises(ValueError, match="labels include the null class 10"):
        guided(x, t, torch.tensor([3, NULL]))


def test_labels_are_range_checked_once_per_batch_not_per_step(nets, tmp_path, monkeypatch):
    # the full check reads labels back to the host (a device sync): CFG alternates the labels and
    # their null labels every step, which must not turn it into two checks per step
    from adm.nets.unet import UNet

    calls = []
    real = UNet.validate_labels
    monkeypatch.setattr(UNet, "validate_labels", lambda self, y: (calls.append(1), real(self, y))[1])
    assert _sample(nets, tmp_path / "s.npz", "--guidance", "cfg", "--scale", "1", respacing="6", batch=3) == 0
    assert len(calls) <= 2 * 2 + 1  # 2 batches x (labels, null labels), + the probe-free setup


def test_a_label_dropout_run_samples_with_cfg_end_to_end(tmp_path):
    # train-diffusion --label-dropout writes the null class into the checkpoint's JSON, and
    # `adm sample --guidance cfg` reads it from there (no preset, no flag naming the null index)
    from adm.data.datasets import save_npz

    rng = np.random.default_rng(0)
    save_npz(tmp_path / "d.npz", rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8), rng.integers(0, 10, 16))
    assert (
        cli.main(
            [
                "train-diffusion",
                "--data",
                str(tmp_path / "d.npz"),
                "--out-dir",
                str(tmp_path / "run"),
                "--model-preset",
                "tiny-test",
                "--steps",
                "2",
                "--label-dropout",
                "0.1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        cli.main(
            [
                "sample",
                "--model",
                str(tmp_path / "run" / "ema.pt"),
                "--guidance",
                "cfg",
                "--scale",
                "3",
                "--num-samples",
                "2",
                "--respacing",
                "3",
                "--no-progress",
                "--out",
                str(tmp_path / "s.npz"),
            ]
        )
        == 0
    )
    assert np.load(tmp_path / "s.npz")["arr_0"].shape == (2, 16, 16, 3)


def test_cfg_step_loop_reads_back_nothing_and_an_interval_one_timestep_per_step(demo_nets):
    # On an accelerator a read-back is a host-device sync (tests/unit/test_sampling_sync.py runs the
    # networks on the data-less "meta" device under a dispatch guard). Full-interval CFG must add
    # none per step; with an interval, the timestep is read once per step by design: it decides
    # whether the unconditional forward runs at all, which costs far more than the sync.
    import copy

    from test_sampling_sync import HostDeviceGuard

    from adm.sampling.guidance import step_sigmas
    from adm.sampling.precision import FastPath, sampling_model_fn
    from adm.sampling.samplers import ddpm_sample

    unet = copy.deepcopy(demo_nets[0]).to("meta")
    unet.validate_labels = lambda y: None  # the once-per-batch range check is not the step loop
    net_fn = sampling_model_fn(unet, FastPath(), "meta")
    schedule = respace(make_schedule("cosine", 1000), "4")
    sig = step_sigmas(schedule)
    y = torch.arange(3, device="meta")
    for interval, reads in ((None, 0), ((float(sig[1]), float(sig[-2])), len(schedule))):
        guided = classifier_free_guidance(net_fn, 1.5, 10, True, make_schedule("cosine", 1000), interval)
        noise = torch.randn(3, 3, 8, 8, device="meta")
        try:
            ddpm_sample(guided, noise, schedule, y, None, sample_generators(0, range(3)))  # caches filled
        except NotImplementedError:  # meta has no values: the interval's read-back cannot run there
            assert interval is not None
        with HostDeviceGuard() as guard:
            try:
                ddpm_sample(guided, noise, schedule, y, None, sample_generators(0, range(3)))
            except NotImplementedError:
                pass
        if interval is None:
            assert guard.events == [], sorted(set(guard.events))
        else:  # the first read-back is refused on meta: one per step would follow on a real device
            assert guard.events and all("meta -> cpu" in e for e in guard.events), guard.events
