"""Ancestral sampling: Algorithm 2 of Ho et al. (2020), on every step or on a sub-sequence.

On a sub-sequence tau_1 < ... < tau_S of the T steps (Nichol & Dhariwal 2021, sec. 4 "Improving
sampling speed") the forward process restricted to those steps is again a Markov chain, with

    alpha_bar'_i = alpha_bar_{tau_i},    beta'_i = 1 - alpha_bar_{tau_i} / alpha_bar_{tau_{i-1}}   (alpha_bar_{tau_0} = 1),

so Algorithm 2 runs unchanged on the schedule built from the betas beta'_i, calling the network
at the original step tau_i. With S = T the sub-sequence is every step and nothing is respaced.
"""

from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from ..reverse import VARIANCES, p_sample_step
from .._tensor import check_choice
from ..schedules import NoiseSchedule, schedule_from_betas
from ._common import Callback, FiniteCheck, eps_model, randn_like

__all__ = ["ddpm", "respaced_schedule"]


def respaced_schedule(schedule: NoiseSchedule, timesteps: torch.Tensor) -> NoiseSchedule:
    """The schedule of the forward process seen only at ``timesteps`` (Nichol & Dhariwal's respacing).

    Args:
        schedule: the full schedule of T steps.
        timesteps: the code steps kept, int64 ``(S,)`` in any order, distinct.

    Returns:
        A :class:`NoiseSchedule` of S steps whose code step i has alpha_bar = alpha_bar_{tau_i},
        tau_i the i-th kept step in increasing order.
    """
    kept = torch.sort(timesteps.cpu()).values
    alpha_bars = schedule.alpha_bars.cpu()[kept]
    alpha_bars_prev = torch.cat([torch.ones(1, dtype=alpha_bars.dtype), alpha_bars[:-1]])
    return schedule_from_betas(1.0 - alpha_bars / alpha_bars_prev).to(schedule.device)


def ddpm(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    clip_x0: bool = False,
    variance: str = "beta_tilde",
) -> torch.Tensor:
    """Algorithm 2 (Ho et al.): x_{t-1} = mu_theta(x_t, t) + sigma_t z, with z = 0 on the last step.

    Args:
        model: ``model(xt, t) -> eps_theta``, ``t`` int64 ``(B,)``.
        schedule: the schedule the model was trained with (T steps).
        x_T: ``(B, C, H, W)`` the starting noise.
        timesteps: the code steps to visit, decreasing from T-1; all T of them is the plain
            Algorithm 2, fewer is ancestral sampling on the respaced chain.
        generator: source of every z.
        callback: ``callback(t, xt, x0_hat)`` after each step.
        progress: show a progress bar.
        clip_x0: clip x0_hat to [-1, 1] and take the mean as mu_tilde(x_t, x0_hat) (see :func:`p_sample_step`).
        variance: sigma_t^2 = ``"beta"`` (beta'_t) or ``"beta_tilde"`` (the posterior variance of the chain sampled).

    Returns:
        x_0, same shape and dtype as ``x_T``.
    """
    check_choice(variance, VARIANCES, "variance")
    steps = [int(s) for s in timesteps]
    full = steps == list(range(schedule.T - 1, -1, -1))
    chain = schedule if full else respaced_schedule(schedule, timesteps).to(x_T.device)
    finite = FiniteCheck("ddpm", x_T.device)
    xt = x_T
    for i, step in enumerate(tqdm(steps, desc="sampling (ddpm)", disable=not progress, leave=False)):
        eps_theta = eps_model(model, xt, step)
        last = i == len(steps) - 1
        z = None if last else randn_like(xt, generator)  # Algorithm 2, line 3: z = 0 on the last step
        t = torch.full((xt.shape[0],), len(steps) - 1 - i, device=xt.device, dtype=torch.long)  # step of `chain`
        out = p_sample_step(chain, eps_theta, xt, t, noise=z, variance=variance, clip_x0=clip_x0)
        xt = out.x_prev
        finite(xt, step, last)
        if callback is not None:
            callback(step, xt, out.x0_hat)
    return xt
