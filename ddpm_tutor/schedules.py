"""Variance schedules beta_1..beta_T and every coefficient derived from them.

Index convention (stated once, used everywhere): code step ``t = 0..T-1`` is the
paper's step ``t + 1 = 1..T``. So ``betas[0]`` is the paper's beta_1 and
``alpha_bars[T-1]`` is the paper's alpha_bar_T.

All tensors are computed and stored in float64; :func:`ddpm_tutor._tensor.extract`
casts the gathered values to the dtype of the tensor they multiply.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields

import torch

__all__ = ["NoiseSchedule", "linear_schedule", "cosine_schedule", "schedule_from_betas"]


@dataclass(frozen=True)
class NoiseSchedule:
    """Per-step coefficients of the forward process, all of shape ``(T,)``, float64.

    Attributes (paper symbol for code step ``t``, i.e. paper step ``t+1``):
        betas: beta_t, the variance added by step t (Ho et al. 2020, eq. 2).
        alphas: alpha_t = 1 - beta_t.
        alpha_bars: alpha_bar_t = prod_{s<=t} alpha_s (diffusers calls it ``alphas_cumprod``).
        alpha_bars_prev: alpha_bar_{t-1}, with alpha_bar_0 = 1 (padded with 1).
        posterior_variance: beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t (eq. 7);
            zero at code step 0.
        posterior_mean_coef_x0: sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t), multiplies x_0 in mu_tilde (eq. 7).
        posterior_mean_coef_xt: sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t), multiplies x_t in mu_tilde.
    """

    betas: torch.Tensor
    alphas: torch.Tensor
    alpha_bars: torch.Tensor
    alpha_bars_prev: torch.Tensor
    posterior_variance: torch.Tensor
    posterior_mean_coef_x0: torch.Tensor
    posterior_mean_coef_xt: torch.Tensor

    @property
    def T(self) -> int:
        """Number of diffusion steps."""
        return int(self.betas.shape[0])

    @property
    def device(self) -> torch.device:
        return self.betas.device

    def to(self, device: torch.device | str) -> "NoiseSchedule":
        """Return a copy with every tensor on ``device`` (dtype stays float64; no mutation)."""
        return NoiseSchedule(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio of x_t given x_0: alpha_bar_t / (1 - alpha_bar_t), shape ``(T,)``."""
        return self.alpha_bars / (1.0 - self.alpha_bars)

    def __repr__(self) -> str:
        return (
            f"NoiseSchedule(T={self.T}, beta_1={self.betas[0].item():.3g}, beta_T={self.betas[-1].item():.3g}, "
            f"alpha_bar_T={self.alpha_bars[-1].item():.3g})"
        )


def schedule_from_betas(betas: torch.Tensor) -> NoiseSchedule:
    """Build a :class:`NoiseSchedule` from ``betas`` of shape ``(T,)`` with every value in (0, 1)."""
    if not isinstance(betas, torch.Tensor):
        betas = torch.as_tensor(betas)
    betas = betas.detach().to(torch.float64)
    if betas.dim() != 1 or betas.numel() < 1:
        raise ValueError(f"betas must be 1-D with T >= 1 entries, got shape {tuple(betas.shape)}")
    if not torch.isfinite(betas).all() or (betas <= 0).any() or (betas >= 1).any():
        raise ValueError(
            f"betas must lie strictly inside (0, 1), got min {betas.min().item():.3g} and max {betas.max().item():.3g}"
        )
    alphas = 1.0 - betas
    alpha_bars = torch.cumprod(alphas, dim=0)
    alpha_bars_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])
    posterior_variance = betas * (1.0 - alpha_bars_prev) / (1.0 - alpha_bars)
    return NoiseSchedule(
        betas=betas,
        alphas=alphas,
        alpha_bars=alpha_bars,
        alpha_bars_prev=alpha_bars_prev,
        posterior_variance=posterior_variance,
        posterior_mean_coef_x0=alpha_bars_prev.sqrt() * betas / (1.0 - alpha_bars),
        posterior_mean_coef_xt=alphas.sqrt() * (1.0 - alpha_bars_prev) / (1.0 - alpha_bars),
    )


def _check_T(T: int) -> int:
    if isinstance(T, bool) or not isinstance(T, int):
        raise TypeError(f"T must be an int (the number of diffusion steps), got {type(T).__name__}")
    if T < 1:
        raise ValueError(f"T must be >= 1 (the number of diffusion steps), got {T}")
    return T


def _check_real(value: object, name: str, fix: str) -> float:
    """``value`` as a float; a ``ValueError`` naming ``name`` unless it is a finite real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {type(value).__name__} {value!r}; {fix}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}; {fix}")
    return value


def linear_schedule(T: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02) -> NoiseSchedule:
    """Linear betas from ``beta_1`` to ``beta_T`` (Ho et al. 2020, sec. 4: 1e-4 to 0.02 over T = 1000).

    The schedule must not decrease (``beta_1 <= beta_T``): the forward process adds more noise at each
    step. A schedule of another shape, a decreasing one included, is built on purpose with
    :func:`schedule_from_betas`. With ``T = 1`` there is a single beta, so ``beta_1`` must equal ``beta_T``.
    """
    _check_T(T)
    values = {}
    for name, value in (("beta_1", beta_1), ("beta_T", beta_T)):
        value = _check_real(value, name, "pass a float such as 1e-4")
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must lie strictly inside (0, 1), got {value}")
        values[name] = value
    beta_1, beta_T = values["beta_1"], values["beta_T"]
    if beta_1 > beta_T:
        raise ValueError(
            f"beta_1={beta_1:g} > beta_T={beta_T:g}: a linear schedule adds more noise at each step, so beta_1 <= beta_T; "
            "swap them, or build a decreasing schedule on purpose with schedule_from_betas(torch.linspace(beta_1, beta_T, T))"
        )
    if T == 1 and beta_1 != beta_T:
        raise ValueError(
            f"T=1 has a single step, so it cannot run from beta_1={beta_1:g} to beta_T={beta_T:g}; "
            "use T >= 2, or give beta_1 == beta_T"
        )
    return schedule_from_betas(torch.linspace(beta_1, beta_T, T, dtype=torch.float64))


def cosine_schedule(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
    """Cosine schedule (Nichol & Dhariwal 2021, eq. 17).

    alpha_bar(t) = f(t) / f(0) with f(t) = cos(((t/T + s) / (1 + s)) * pi/2)^2, and
    beta_t = 1 - alpha_bar(t) / alpha_bar(t-1), clipped to ``max_beta``.
    """
    _check_T(T)
    s = _check_real(s, "s", "the small offset of the cosine schedule, e.g. 0.008")
    if not s >= 0:
        raise ValueError(f"s must be >= 0 (the small offset of the cosine schedule, e.g. 0.008), got {s}")
    max_beta = _check_real(max_beta, "max_beta", "pass a float such as 0.999")
    if not 0.0 < max_beta < 1.0:
        raise ValueError(f"max_beta must lie strictly inside (0, 1), got {max_beta}")
    steps = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos(((steps / T) + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = (1.0 - alpha_bar[1:] / alpha_bar[:-1]).clamp(min=1e-12, max=max_beta)
    return schedule_from_betas(betas)
