"""p_sample_step's clipped mean: with clip_x0=True the mean is mu_tilde(x_t, clip(x0_hat)), the posterior
mean at the clipped guess (the reference implementation's sampler), computed here from eq. (7)."""

from __future__ import annotations

import torch

import ddpm_tutor as dt


def test_clipped_mean_is_the_posterior_mean_at_the_clipped_x0_hat():
    s = dt.linear_schedule(T=10, beta_1=0.05, beta_T=0.5)
    g = torch.Generator().manual_seed(0)
    xt = 2.5 * torch.randn(4, 1, 3, 3, generator=g, dtype=torch.float64)
    eps_theta = torch.randn(4, 1, 3, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([1, 3, 6, 9])
    ab, abp, beta = s.alpha_bars[t].view(-1, 1, 1, 1), s.alpha_bars_prev[t].view(-1, 1, 1, 1), s.betas[t].view(-1, 1, 1, 1)
    x0_hat = ((xt - (1 - ab).sqrt() * eps_theta) / ab.sqrt()).clamp(-1, 1)
    assert bool(((xt - (1 - ab).sqrt() * eps_theta) / ab.sqrt()).abs().gt(1).any()), "some guesses must be clipped"
    want = abp.sqrt() * beta / (1 - ab) * x0_hat + (1 - beta).sqrt() * (1 - abp) / (1 - ab) * xt  # eq. (7)
    out = dt.p_sample_step(s, eps_theta, xt, t, noise=torch.zeros_like(xt), clip_x0=True)
    torch.testing.assert_close(out.mean, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.x0_hat, x0_hat)
    unclipped = dt.p_sample_step(s, eps_theta, xt, t, noise=torch.zeros_like(xt), clip_x0=False)
    assert not torch.allclose(unclipped.mean, out.mean)
