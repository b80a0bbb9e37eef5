"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2) and its SDE variant.

Write x_t = alpha_t x_0 + sigma_t eps with alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t),
and lambda_t = log(alpha_t / sigma_t) (half the log-SNR). The probability-flow ODE in data-prediction
form has the exact solution, from step s to step t (lambda_t > lambda_s),

    x_t = (sigma_t / sigma_s) x_s + sigma_t  int_{lambda_s}^{lambda_t} e^{lambda} x0_hat(lambda) d lambda.

Holding x0_hat fixed over the step gives the first-order update (= DDIM with eta = 0), with h = lambda_t - lambda_s:

    x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) D,          D = x0_hat_s.

The multistep second-order method (2M) keeps the previous estimate x0_hat_{s'} (one step earlier,
h' = lambda_s - lambda_{s'}, r = h' / h) and extrapolates x0_hat linearly in lambda to the step's midpoint:

    D = (1 + 1 / (2 r)) x0_hat_s - (1 / (2 r)) x0_hat_{s'}.

It costs no extra network evaluation. The first step (no previous estimate) and the last step,
to sigma = 0 where the first-order update gives x_0 = x0_hat exactly, are first order
(diffusers: ``lower_order_final``, ``final_sigmas_type="zero"``).

The SDE variant (diffusers' ``algorithm_type="sde-dpmsolver++"``) solves the reverse SDE instead of
the ODE: with the same D, exactly integrating the linear part and the noise,

    x_t = (sigma_t / sigma_s) e^{-h} x_s + alpha_t (1 - e^{-2h}) D + sigma_t sqrt(1 - e^{-2h}) z.

Its first-order step is the DDPM posterior step (DDIM with eta = 1). The coefficients are proved
in :mod:`ddpm_tutor.derivations.ddim`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..schedules import NoiseSchedule
from ._common import Callback, FiniteCheck, eps_model, randn_like

__all__ = ["dpm_solver_pp", "dpm_solver_pp_sde", "second_order_weights"]


def second_order_weights(h: float, h_prev: float) -> tuple[float, float]:
    """The weights (w_s, w_prev) of D = w_s x0_hat_s + w_prev x0_hat_{s'} in DPM-Solver++(2M), r = h_prev / h."""
    r = h_prev / h
    return 1.0 + 1.0 / (2.0 * r), -1.0 / (2.0 * r)


def _solve(model, schedule, x_T, timesteps, *, stochastic, generator, callback, progress, clip_x0):
    name = "dpm_solver++_sde" if stochastic else "dpm_solver++"
    alpha_bars = schedule.alpha_bars.cpu().tolist()  # Python floats: no device sync inside the loop
    steps = [int(s) for s in timesteps]
    alpha = [math.sqrt(alpha_bars[s]) for s in steps]
    sigma = [math.sqrt(1.0 - alpha_bars[s]) for s in steps]
    lam = [math.log(a / s) for a, s in zip(alpha, sigma)]  # lambda = log(alpha / sigma)
    finite = FiniteCheck(name, x_T.device)
    xt, x0_prev = x_T, None
    for i, step in enumerate(tqdm(steps, desc=f"sampling ({name})", disable=not progress, leave=False)):
        last = i == len(steps) - 1
        eps_theta = eps_model(model, xt, step)
        x0_hat = (xt - sigma[i] * eps_theta) / alpha[i]  # data prediction
        if clip_x0:
            x0_hat = x0_hat.clamp(-1.0, 1.0)
        if last:
            xt = x0_hat  # to sigma = 0: the first-order step (either variant) lands on x0_hat
        else:
            h = lam[i + 1] - lam[i]
            if x0_prev is None:
                D = x0_hat  # first order on the first step
            else:
                w_s, w_prev = second_order_weights(h, lam[i] - lam[i - 1])
                D = w_s * x0_hat + w_prev * x0_prev
            if stochastic:
                xt = (sigma[i + 1] / sigma[i] * math.exp(-h)) * xt + (alpha[i + 1] * -math.expm1(-2.0 * h)) * D
                xt = xt + sigma[i + 1] * math.sqrt(-math.expm1(-2.0 * h)) * randn_like(xt, generator)
            else:
                xt = (sigma[i + 1] / sigma[i]) * xt + (alpha[i + 1] * -math.expm1(-h)) * D
        x0_prev = x0_hat
        finite(xt, step, last)
        if callback is not None:
            callback(step, xt, x0_hat)
    return xt


def dpm_solver_pp(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    clip_x0: bool = False,
) -> torch.Tensor:
    """DPM-Solver++(2M): the probability-flow ODE, second order, one network evaluation per step.

    Args:
        model: ``model(xt, t) -> eps_theta``, ``t`` int64 ``(B,)``.
        schedule: the schedule the model was trained with.
        x_T: ``(B, C, H, W)`` the starting noise.
        timesteps: code steps to visit, decreasing (see :func:`trailing_timesteps`).
        generator: unused (the solver is deterministic); accepted for the shared signature.
        callback: ``callback(t, xt, x0_hat)`` after each step.
        progress: show a progress bar.
        clip_x0: clip each x0_hat to [-1, 1] before it enters the update.

    Returns:
        x_0, same shape and dtype as ``x_T``.
    """
    return _solve(model, schedule, x_T, timesteps, stochastic=False, generator=generator, callback=callback,
                  progress=progress, clip_x0=clip_x0)


def dpm_solver_pp_sde(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    clip_x0: bool = False,
) -> torch.Tensor:
    """DPM-Solver++(2M) SDE: the reverse SDE, second order in x0_hat, fresh noise on every step but the last.

    Same arguments as :func:`dpm_solver_pp`; ``generator`` is the source of every z.
    """
    return _solve(model, schedule, x_T, timesteps, stochastic=True, generator=generator, callback=callback,
                  progress=progress, clip_x0=clip_x0)
