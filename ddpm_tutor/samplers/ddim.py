"""DDIM (Song, Meng & Ermon 2021): a non-Markovian forward process with DDPM's marginals.

For a sub-sequence of steps s < t (consecutive in the sampler's sequence) DDIM's reverse step is
its eq. 12, with x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_theta) / sqrt(alpha_bar_t):

    x_s = sqrt(alpha_bar_s) x0_hat + sqrt(1 - alpha_bar_s - sigma_t^2) eps_theta + sigma_t z,

    sigma_t = eta sqrt((1 - alpha_bar_s) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_s)   (eq. 16).

eta = 0 is deterministic (an exact step of the probability-flow ODE with eps_theta held fixed:
DPM-Solver-1); eta = 1 is the DDPM posterior of the sub-sequence's chain, i.e. respaced ancestral
sampling with sigma_t^2 = beta_tilde_t. The proofs are in :mod:`ddpm_tutor.derivations.ddim`.
After the last evaluation the step goes to alpha_bar = 1 (x_0 = x0_hat).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..schedules import NoiseSchedule
from ._common import Callback, FiniteCheck, eps_model, randn_like

__all__ = ["ddim", "ddim_sigma"]


def ddim_sigma(alpha_bar_t: float, alpha_bar_s: float, eta: float) -> float:
    """sigma_t of DDIM's eq. 16 for a step from alpha_bar_t to alpha_bar_s (s before t)."""
    return eta * math.sqrt((1.0 - alpha_bar_s) / (1.0 - alpha_bar_t) * (1.0 - alpha_bar_t / alpha_bar_s))


def ddim(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    clip_x0: bool = False,
    eta: float = 0.0,
) -> torch.Tensor:
    """DDIM sampling (Song et al. 2021, eq. 12) on ``timesteps``, one network evaluation per step.

    Args:
        model: ``model(xt, t) -> eps_theta``, ``t`` int64 ``(B,)``.
        schedule: the schedule the model was trained with.
        x_T: ``(B, C, H, W)`` the starting noise.
        timesteps: code steps to visit, decreasing (see :func:`trailing_timesteps`).
        generator: source of z when ``eta > 0`` (unused at ``eta = 0``).
        callback: ``callback(t, xt, x0_hat)`` after each step.
        progress: show a progress bar.
        clip_x0: clip x0_hat to [-1, 1] and re-derive eps from it, so that x_t = sqrt(alpha_bar_t) x0_hat
            + sqrt(1 - alpha_bar_t) eps still holds (GLIDE's choice; diffusers' ``use_clipped_model_output``).
        eta: 0 (deterministic DDIM) to 1 (the DDPM posterior on the sub-sequence).

    Returns:
        x_0, same shape and dtype as ``x_T``.
    """
    alpha_bars = schedule.alpha_bars.cpu().tolist()  # Python floats: no device sync inside the loop
    steps = [int(s) for s in timesteps]
    finite = FiniteCheck("ddim", x_T.device)
    xt = x_T
    for i, step in enumerate(tqdm(steps, desc="sampling (ddim)", disable=not progress, leave=False)):
        last = i == len(steps) - 1
        a_t = alpha_bars[step]
        a_s = 1.0 if last else alpha_bars[steps[i + 1]]  # the step goes to s, the next one visited
        eps_theta = eps_model(model, xt, step)
        x0_hat = (xt - math.sqrt(1.0 - a_t) * eps_theta) / math.sqrt(a_t)
        if clip_x0:
            x0_hat = x0_hat.clamp(-1.0, 1.0)
            eps_theta = (xt - math.sqrt(a_t) * x0_hat) / math.sqrt(1.0 - a_t)
        sigma = ddim_sigma(a_t, a_s, eta)
        # eq. 12: "predicted x_0" + "direction pointing to x_t" + random noise
        xt = math.sqrt(a_s) * x0_hat + math.sqrt(max(1.0 - a_s - sigma**2, 0.0)) * eps_theta
        if sigma > 0:
            xt = xt + sigma * randn_like(xt, generator)
        finite(xt, step, last)
        if callback is not None:
            callback(step, xt, x0_hat)
    return xt
