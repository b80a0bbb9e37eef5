"""The reverse model p_theta(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2 I) with fixed variance.

Chapter 4 of the book. Code step ``t = 0..T-1`` is the paper's step ``t + 1``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ._tensor import check_choice, check_same_shape, check_t, extract
from .forward import _noise_like
from .posterior import predict_x0, q_posterior
from .schedules import NoiseSchedule

__all__ = ["VARIANCES", "p_mean", "p_variance", "p_sample_step", "ReverseStep"]

#: The two fixed choices of sigma_t^2 in DDPM (sec. 3.2): beta_t (the upper bound) and beta_tilde_t (the lower bound).
VARIANCES = ("beta", "beta_tilde")


def p_mean(schedule: NoiseSchedule, xt: torch.Tensor, t: torch.Tensor | int, eps_theta: torch.Tensor) -> torch.Tensor:
    """The epsilon-parameterised mean (Ho et al. eq. 11):

        mu_theta(x_t, t) = (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps_theta) / sqrt(alpha_t)

    It equals the posterior mean mu_tilde_t(x_t, x0_hat) with x0_hat = predict_x0(x_t, eps_theta).

    Args:
        xt: ``(B, ...)`` noisy data at code step ``t``.
        t: code step(s), int or int64 ``(B,)``.
        eps_theta: ``(B, ...)`` the network's noise estimate, same shape as ``xt``.

    Returns:
        ``(B, ...)`` tensor, same shape as ``xt``.
    """
    check_same_shape(xt, eps_theta, "xt", "eps_theta")
    t = check_t(t, schedule.T, batch=xt.shape[0])
    coef = extract(schedule.betas / (1.0 - schedule.alpha_bars).sqrt(), t, xt)
    return (xt - coef * eps_theta) / extract(schedule.alphas.sqrt(), t, xt)


def p_variance(schedule: NoiseSchedule, variance: str = "beta_tilde") -> torch.Tensor:
    """sigma_t^2 for every code step, shape ``(T,)`` float64.

    ``"beta"``: sigma_t^2 = beta_t.  ``"beta_tilde"``: sigma_t^2 = beta_tilde_t, which is 0 at
    code step 0. Sampling adds no noise at code step 0 whichever is chosen (Algorithm 2: z = 0).
    """
    check_choice(variance, VARIANCES, "variance")
    return schedule.betas if variance == "beta" else schedule.posterior_variance


class ReverseStep(NamedTuple):
    """What one reverse step produces."""

    x_prev: torch.Tensor  #: the sample x_{t-1}, ``(B, ...)``
    mean: torch.Tensor  #: mu_theta(x_t, t), ``(B, ...)``
    x0_hat: torch.Tensor  #: the model's guess of x_0 at this step, ``(B, ...)``


def p_sample_step(
    schedule: NoiseSchedule,
    eps_theta: torch.Tensor,
    xt: torch.Tensor,
    t: torch.Tensor | int,
    noise: torch.Tensor | None = None,
    variance: str = "beta_tilde",
    generator: torch.Generator | None = None,
    clip_x0: bool = False,
) -> ReverseStep:
    """One step of Algorithm 2 (Ho et al.): x_{t-1} = mu_theta(x_t, t) + sigma_t z, z ~ N(0, I), and z = 0 at code step 0.

    Args:
        schedule: the noise schedule.
        eps_theta: ``(B, ...)`` the network's noise estimate at (x_t, t).
        xt: ``(B, ...)`` the current sample.
        t: code step(s), int or int64 ``(B,)``.
        noise: optional ``(B, ...)`` z; ignored where t == 0.
        variance: ``"beta"`` or ``"beta_tilde"`` (sigma_t^2 in {beta_t, beta_tilde_t}).
        generator: optional generator for z when ``noise`` is None.
        clip_x0: if True, clip x0_hat to [-1, 1] and take the mean as mu_tilde(x_t, x0_hat)
            (what the reference DDPM implementation does when sampling). With
            ``clip_x0=False`` the mean is exactly eq. 11.

    Returns:
        :class:`ReverseStep` ``(x_prev, mean, x0_hat)``.
    """
    check_choice(variance, VARIANCES, "variance")
    check_same_shape(xt, eps_theta, "xt", "eps_theta")
    t = check_t(t, schedule.T, batch=xt.shape[0])
    x0_hat = predict_x0(schedule, xt, t, eps_theta)
    if clip_x0:
        x0_hat = x0_hat.clamp(-1.0, 1.0)
        mean, _ = q_posterior(schedule, x0_hat, xt, t)
    else:
        mean = p_mean(schedule, xt, t, eps_theta)
    z = _noise_like(xt, noise, generator)
    sigma = extract(p_variance(schedule, variance).sqrt(), t, xt)
    nonzero = (t != 0).to(xt.dtype).reshape(-1, *([1] * (xt.dim() - 1)))  # z = 0 at code step 0
    return ReverseStep(x_prev=mean + nonzero * sigma * z, mean=mean, x0_hat=x0_hat)
