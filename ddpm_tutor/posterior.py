"""The forward-process posterior q(x_{t-1} | x_t, x_0), and x_0 recovered from x_t and eps.

Chapter 3 of the book. Code step ``t = 0..T-1`` is the paper's step ``t + 1``.
"""

from __future__ import annotations

import torch

from ._tensor import check_same_shape, check_t, extract
from .schedules import NoiseSchedule

__all__ = ["q_posterior", "predict_x0"]


def q_posterior(
    schedule: NoiseSchedule, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor | int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of q(x_{t-1} | x_t, x_0) = N(mu_tilde_t, beta_tilde_t I)  (Ho et al. eqs. 6-7).

        mu_tilde_t   = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) * x_0
                     + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * x_t
        beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t

    At code step 0 (the paper's t = 1) the posterior is a point mass at x_0:
    the mean is x_0 and the variance is 0.

    Args:
        x0: ``(B, ...)`` clean data.
        xt: ``(B, ...)`` noisy data at code step ``t``, same shape as ``x0``.
        t: code step(s), int or int64 ``(B,)``.

    Returns:
        ``(mean, variance)``: ``mean`` has the shape of ``xt``; ``variance`` has shape
        ``(B, 1, ..., 1)`` and broadcasts against it.
    """
    check_same_shape(x0, xt, "x0", "xt")
    t = check_t(t, schedule.T, batch=xt.shape[0])
    mean = extract(schedule.posterior_mean_coef_x0, t, xt) * x0 + extract(schedule.posterior_mean_coef_xt, t, xt) * xt
    variance = extract(schedule.posterior_variance, t, xt)
    return mean, variance


def predict_x0(schedule: NoiseSchedule, xt: torch.Tensor, t: torch.Tensor | int, eps: torch.Tensor) -> torch.Tensor:
    """Invert the closed form: x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)  (from eq. 4).

    With the true eps this recovers x_0 exactly; with a network's estimate eps_theta it
    gives the model's current guess x0_hat.

    Args:
        xt: ``(B, ...)`` noisy data at code step ``t``.
        t: code step(s), int or int64 ``(B,)``.
        eps: ``(B, ...)`` noise (true or predicted), same shape as ``xt``.

    Returns:
        ``(B, ...)`` tensor, same shape as ``xt``.
    """
    check_same_shape(xt, eps, "xt", "eps")
    t = check_t(t, schedule.T, batch=xt.shape[0])
    return (xt - extract((1.0 - schedule.alpha_bars).sqrt(), t, xt) * eps) / extract(schedule.alpha_bars.sqrt(), t, xt)
