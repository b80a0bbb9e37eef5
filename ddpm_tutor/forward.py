"""The forward (noising) process q: one Markov step and the closed form.

Chapters 1-2 of the book. Code step ``t = 0..T-1`` is the paper's step ``t + 1``.
"""

from __future__ import annotations

import torch

from ._tensor import check_float_data, check_same_shape, check_t, extract
from .schedules import NoiseSchedule

__all__ = ["q_step", "q_sample"]


def _noise_like(x: torch.Tensor, noise: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
    """Return ``noise`` (checked against ``x``, cast to ``x``'s dtype) or fresh N(0, I) noise shaped like ``x``."""
    if noise is not None:
        check_same_shape(x, noise, "the input", "noise")
        if not noise.is_floating_point():
            raise TypeError(f"noise must be a real floating-point tensor of N(0, I) draws, got dtype {noise.dtype}")
        return noise.to(x.dtype)
    if generator is not None and generator.device != x.device:
        return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def q_step(
    schedule: NoiseSchedule,
    x_prev: torch.Tensor,
    t: torch.Tensor | int,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One Markov step of the forward process, q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)  (Ho et al. eq. 2).

        x_t = sqrt(alpha_t) * x_{t-1} + sqrt(beta_t) * eps,   eps ~ N(0, I)

    Code step ``t`` uses ``betas[t]`` (the paper's beta_{t+1}): it maps the paper's
    x_t to x_{t+1}. Starting from x_0 and applying code steps 0, 1, ..., k-1 gives
    the paper's x_k, which has the law of ``q_sample(schedule, x0, k - 1)``.

    Args:
        schedule: the noise schedule.
        x_prev: ``(B, ...)`` float tensor, the previous state.
        t: code step(s), int or int64 ``(B,)`` in ``0..T-1``.
        noise: optional ``(B, ...)`` standard normal noise, same shape as ``x_prev`` (cast to its dtype).
        generator: optional ``torch.Generator`` used when ``noise`` is None.

    Returns:
        ``(B, ...)`` tensor, same shape and dtype as ``x_prev``.

    Raises:
        TypeError: ``x_prev`` is not a real floating-point tensor (convert pixels with ``data.to_model_range``).
    """
    check_float_data(x_prev, "x_prev", values=False)  # a step in a loop: the dtype only, the values cost a pass
    t = check_t(t, schedule.T, batch=x_prev.shape[0])
    eps = _noise_like(x_prev, noise, generator)
    return extract(schedule.alphas.sqrt(), t, x_prev) * x_prev + extract(schedule.betas.sqrt(), t, x_prev) * eps


def q_sample(
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    t: torch.Tensor | int,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Jump straight from x_0 to x_t with the closed form q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)  (eq. 4).

        x_t = sqrt(alpha_bar_t) * x_0 + sqrt(1 - alpha_bar_t) * eps,   eps ~ N(0, I)

    ``eps`` is the *accumulated* noise from x_0, the target that epsilon-prediction regresses
    (not the single-step noise of :func:`q_step`).

    Args:
        schedule: the noise schedule.
        x0: ``(B, ...)`` float tensor of clean data (images in [-1, 1]).
        t: code step(s), int or int64 ``(B,)`` in ``0..T-1``.
        noise: optional ``(B, ...)`` standard normal eps, same shape as ``x0`` (cast to its dtype).
        generator: optional ``torch.Generator`` used when ``noise`` is None.

    Returns:
        ``(B, ...)`` tensor x_t, same shape and dtype as ``x0``.

    Raises:
        TypeError: ``x0`` is not a real floating-point tensor, e.g. ``uint8`` pixels.
        ValueError: a CPU ``x0`` holds values beyond +-10, i.e. pixels 0..255 as floats (see
            :func:`ddpm_tutor._tensor.check_float_data`). Convert either with ``data.to_model_range``.
    """
    check_float_data(x0, "x0")
    t = check_t(t, schedule.T, batch=x0.shape[0])
    eps = _noise_like(x0, noise, generator)
    return extract(schedule.alpha_bars.sqrt(), t, x0) * x0 + extract((1.0 - schedule.alpha_bars).sqrt(), t, x0) * eps
