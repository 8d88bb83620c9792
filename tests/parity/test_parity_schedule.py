"""Schedules and respacing against OpenAI's reference (guided-diffusion-sdk): exact equality."""

import numpy as np
import pytest

from adm.diffusion.schedule import linear_schedule, make_schedule, respace, space_timesteps

gd = pytest.importorskip("guided_diffusion.gaussian_diffusion")
respace_ref = pytest.importorskip("guided_diffusion.respace")


@pytest.mark.parametrize("name,T", [("linear", 1000), ("cosine", 1000), ("linear", 37), ("cosine", 4000)])
def test_betas_equal_reference(name, T):
    assert np.array_equal(make_schedule(name, T).betas, gd.get_named_beta_schedule(name, T))


@pytest.mark.parametrize(
    "T,spec",
    [
        (1000, "250"),
        (1000, "25"),
        (1000, "ddim25"),
        (1000, "ddim50"),
        (300, "10,15,20"),
        (100, "10"),
        (4000, "100"),
        (1000, "7,3"),
    ],
)
def test_respacing_matches_reference(T, spec):
    assert space_timesteps(T, spec) == sorted(respace_ref.space_timesteps(T, spec))
    base = linear_schedule(T)
    ref = respace_ref.SpacedDiffusion(
        use_timesteps=respace_ref.space_timesteps(T, spec),
        betas=base.betas,
        model_mean_type=gd.ModelMeanType.EPSILON,
        model_var_type=gd.ModelVarType.LEARNED_RANGE,
        loss_type=gd.LossType.MSE,
    )
    ours = respace(base, spec)
    assert np.array_equal(ours.timesteps, ref.timestep_map)
    assert np.array_equal(ours.betas, ref.betas)
    for name in [
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "posterior_variance",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
    ]:
        assert np.array_equal(getattr(ours, name), getattr(ref, name)), name
    assert ours.num_timesteps_original == T
