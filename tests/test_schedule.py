"""Schedules as data and respacing: closed forms, exact index sets, parity with the reference."""

import numpy as np
import pytest

from adm.schedule import cosine_schedule, linear_schedule, make_schedule, respace, space_timesteps

gd = pytest.importorskip("guided_diffusion.gaussian_diffusion")
respace_ref = pytest.importorskip("guided_diffusion.respace")


def test_linear_closed_form():
    s = linear_schedule(1000)
    assert s.betas.dtype == np.float64 and s.betas[0] == 1e-4 and s.betas[-1] == 0.02
    # alpha_bar_T = prod(1 - beta_t) ~= 4.04e-5 (Ho et al.'s linear schedule)
    assert s.alphas_cumprod[-1] == pytest.approx(4.04e-5, rel=2e-3)
    # T = 100: scale = 10, so the same endpoints as T = 1000 times 10
    assert linear_schedule(100).betas[[0, -1]] == pytest.approx([1e-3, 0.2])


def test_cosine_closed_form():
    s = cosine_schedule(1000)
    assert s.betas.max() <= 0.999 and s.betas[-1] == 0.999  # the cap bites at t = T
    assert s.alphas_cumprod[-1] == pytest.approx(2.4e-9, rel=0.05)
    # alpha_bar(t) = f(t)/f(0) away from the cap (IDDPM Eq. 17)
    f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
    t = np.arange(1, 900)
    assert np.allclose(s.alphas_cumprod[t - 1], f(t / 1000) / f(0), rtol=1e-10)


@pytest.mark.parametrize("name,T", [("linear", 1000), ("cosine", 1000), ("linear", 37), ("cosine", 4000)])
def test_betas_equal_reference(name, T):
    assert np.array_equal(make_schedule(name, T).betas, gd.get_named_beta_schedule(name, T))


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown noise schedule"):
        make_schedule("quadratic", 10)


def test_respacing_index_sets():
    s250 = space_timesteps(1000, "250")
    assert len(s250) == 250 and s250[:3] == [0, 4, 8] and s250[-4:] == [987, 991, 995, 999]
    assert space_timesteps(1000, "ddim25") == list(range(0, 1000, 40))
    assert space_timesteps(1000, "ddim25")[-1] == 960
    assert space_timesteps(300, "10,15,20")[:10] == [0, 11, 22, 33, 44, 55, 66, 77, 88, 99]
    assert space_timesteps(1000, "1000") == list(range(1000))
    assert space_timesteps(1000, 25) == space_timesteps(1000, "25")


@pytest.mark.parametrize("T,spec", [(1000, "250"), (1000, "25"), (1000, "ddim25"), (1000, "ddim50"),
                                    (300, "10,15,20"), (100, "10"), (4000, "100"), (1000, "7,3")])
def test_respacing_matches_reference(T, spec):
    assert space_timesteps(T, spec) == sorted(respace_ref.space_timesteps(T, spec))
    base = linear_schedule(T)
    ref = respace_ref.SpacedDiffusion(
        use_timesteps=respace_ref.space_timesteps(T, spec), betas=base.betas,
        model_mean_type=gd.ModelMeanType.EPSILON, model_var_type=gd.ModelVarType.LEARNED_RANGE,
        loss_type=gd.LossType.MSE)
    ours = respace(base, spec)
    assert np.array_equal(ours.timesteps, ref.timestep_map)
    assert np.array_equal(ours.betas, ref.betas)
    for name in ["alphas_cumprod", "alphas_cumprod_prev", "posterior_variance",
                 "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
                 "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod"]:
        assert np.array_equal(getattr(ours, name), getattr(ref, name)), name
    assert ours.num_timesteps_original == T


def test_respacing_preserves_alpha_bar():
    base = cosine_schedule(1000)
    s = respace(base, "25")
    # q(x_t | x_0) at the kept t is unchanged: alpha_bar'_k = alpha_bar(t_k)
    assert np.allclose(s.alphas_cumprod, base.alphas_cumprod[s.timesteps], rtol=1e-12)
    assert respace(base, "") is base


def test_respacing_errors():
    with pytest.raises(ValueError):
        space_timesteps(1000, "ddim999")
    with pytest.raises(ValueError):
        space_timesteps(10, "20")
