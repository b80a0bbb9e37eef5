"""Parity with an independent implementation: diffusers' DDPMScheduler (same betas, variance "fixed_small" = beta_tilde).

diffusers computes the posterior mean from the x_0 estimate (eq. 7 at x0_hat) and draws its noise from the same
generator in the same order as Algorithm 2, so one step and a whole seeded sampling loop must agree to float32
rounding. Skipped where diffusers is not installed (it is in the ``test`` extra).
"""

import pytest
import torch

import ddpm_tutor as dt

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e '.[test]'); "
                                "the parity tests compare the sampler with its DDPMScheduler")


def _scheduler(schedule):
    scheduler = diffusers.DDPMScheduler(
        num_train_timesteps=schedule.T, trained_betas=schedule.betas.numpy(), variance_type="fixed_small",
        clip_sample=False, prediction_type="epsilon",
    )
    # diffusers keeps alpha_bar in float32, where 1 - alpha_bar_1 = beta_1 = 1e-4 keeps only 3 or 4 digits (a 2e-4
    # error in x_{t-1} at paper t = 2); like ddpm_tutor's schedules, give it float64 (the coefficients then round
    # to float32 when they meet the float32 samples, on both sides)
    scheduler.betas = schedule.betas.clone()
    scheduler.alphas = 1.0 - scheduler.betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, dim=0)
    return scheduler


def _model(xt, t):
    """A smooth stand-in for eps_theta that depends on x_t and t (t: a scalar from diffusers, (B,) from dt.sample)."""
    t = t.float().reshape(-1, *([1] * (xt.dim() - 1))) if t.dim() else t.float()
    return 0.5 * torch.tanh(xt) + 1e-3 * t


def test_add_noise_is_q_sample():
    s = dt.linear_schedule(T=100)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(4, 1, 5, 5, generator=g) * 2 - 1, torch.randn(4, 1, 5, 5, generator=g)
    t = torch.tensor([0, 1, 50, 99])
    # diffusers forms alpha_bar in float32, the package in float64: up to 3e-6 apart over 300 seeds
    torch.testing.assert_close(dt.q_sample(s, x0, t, noise=eps), _scheduler(s).add_noise(x0, eps, t), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("step", [99, 42, 1, 0])
def test_one_reverse_step_matches_ddpm_scheduler(step):
    s = dt.linear_schedule(T=100)
    scheduler = _scheduler(s)
    scheduler.set_timesteps(s.T)
    xt = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    t = torch.full((3,), step, dtype=torch.long)
    eps_theta = _model(xt, t)
    ours = dt.p_sample_step(s, eps_theta, xt, t, noise=torch.randn(xt.shape, generator=torch.Generator().manual_seed(2)))
    theirs = scheduler.step(eps_theta, step, xt, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(ours.x0_hat, theirs.pred_original_sample, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.x_prev, theirs.prev_sample, atol=1e-5, rtol=1e-5)


def test_seeded_sampling_loop_matches_ddpm_scheduler():
    s = dt.linear_schedule(T=100)
    shape = (4, 1, 6, 6)
    ours = dt.sample(_model, s, shape, generator=torch.Generator().manual_seed(0), variance="beta_tilde", progress=False)

    scheduler = _scheduler(s)
    scheduler.set_timesteps(s.T)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)  # x_T, from the generator first, as in Algorithm 2
    for t in scheduler.timesteps:
        x = scheduler.step(_model(x, t), t, x, generator=g).prev_sample
    torch.testing.assert_close(ours, x, atol=1e-4, rtol=1e-4)
    # and the comparison has teeth: sigma^2 = beta instead of beta_tilde lands elsewhere
    other = dt.sample(_model, s, shape, generator=torch.Generator().manual_seed(0), variance="beta", progress=False)
    assert (other - x).abs().max() > 1e-2
