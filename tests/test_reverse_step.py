"""The reverse step and the sampler: p_sample_step's clipped mean is mu_tilde(x_t, clip(x0_hat)), the posterior
mean at the clipped guess (the reference implementation's sampler), computed here from eq. (7); and
dt.sample's output variance follows the sigma_t^2 it is asked for."""

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


def test_sample_uses_the_variance_it_is_given():
    """With eps_theta = 0 each step is x_{t-1} = x_t / sqrt(alpha_t) + sigma_t z (z = 0 on the last step), so
    Var(x_0) follows v_{t-1} = v_t / alpha_t + sigma_t^2 from v_T = 1; beta and beta_tilde give different values."""
    s = dt.linear_schedule(T=6, beta_1=0.05, beta_T=0.4)
    zero = lambda xt, t: torch.zeros_like(xt)  # noqa: E731
    for variance, sigma2 in (("beta", s.betas), ("beta_tilde", s.posterior_variance)):
        v = 1.0
        for k in range(s.T - 1, -1, -1):  # code steps T-1..0
            v = v / s.alphas[k].item() + (sigma2[k].item() if k > 0 else 0.0)
        x = dt.sample(zero, s, (40_000, 1, 1, 1), generator=torch.Generator().manual_seed(1), variance=variance, progress=False)
        assert abs(x.double().var().item() / v - 1) < 0.04, (variance, x.var().item(), v)
