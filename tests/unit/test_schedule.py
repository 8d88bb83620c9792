"""Schedules as data and respacing: closed forms and exact index sets (parity: test_parity_schedule.py)."""

import numpy as np
import pytest

from adm.diffusion.schedule import cosine_schedule, linear_schedule, make_schedule, respace, space_timesteps


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
    def f(u):
        return np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2

    t = np.arange(1, 900)
    assert np.allclose(s.alphas_cumprod[t - 1], f(t / 1000) / f(0), rtol=1e-10)


def test_variance_endpoints_at_t0():
    """beta_tilde_0 = 0, so log-variance index 0 borrows beta_tilde_1; "fixedlarge" uses it at t = 0 too."""
    s = linear_schedule(100)
    assert s.posterior_variance[0] == 0.0
    assert np.array_equal(
        s.posterior_log_variance_clipped, np.log(np.append(s.posterior_variance[1], s.posterior_variance[1:]))
    )
    assert np.array_equal(s.fixed_large_variance, np.append(s.posterior_variance[1], s.betas[1:]))


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


def test_a_respacing_that_keeps_only_t0_is_refused():
    """DDPM "1" of 1000 keeps t = 0 alone: posterior variance 0 there (log -inf in the learned
    range), the sampler would return its starting noise; found in the upsampling rehearsal as NaN
    images. Two steps keep t = 0 and t = T - 1."""
    with pytest.raises(ValueError, match="keeps only t = 0"):
        space_timesteps(1000, "1")
    assert space_timesteps(1000, "2") == [0, 999]
    assert space_timesteps(1, "1") == [0]  # a one-step diffusion is its own full schedule
