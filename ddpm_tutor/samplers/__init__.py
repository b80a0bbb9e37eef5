"""The samplers: from x_T ~ N(0, I) to x_0 in S network evaluations. Chapters 8 and 11 of the book.

Every sampler is a plain function with one signature,

    sampler(model, schedule, x_T, timesteps, *, generator=None, callback=None, progress=True, clip_x0=False, **options)

that visits the code steps ``timesteps`` (decreasing, one network evaluation each), reports through
``callback(t, xt, x0_hat)`` and returns x_0. :func:`ddpm_tutor.sample` draws x_T, picks the steps
(:func:`trailing_timesteps`) and calls one of them by name:

======================  =======================================================  ============
name                    algorithm                                                options
======================  =======================================================  ============
``"ddpm"``              Algorithm 2 of Ho et al. 2020; on fewer steps, respaced  ``variance``
``"ddim"``              DDIM, Song et al. 2021, eq. 12                           ``eta``
``"dpm_solver++"``      DPM-Solver++(2M), Lu et al. 2022 (probability-flow ODE)
``"dpm_solver++_sde"``  DPM-Solver++(2M) SDE (diffusers' "sde-dpmsolver++")
======================  =======================================================  ============
"""

from ._common import Callback, FiniteCheck, trailing_timesteps
from .ddim import ddim, ddim_sigma
from .ddpm import ddpm, respaced_schedule
from .dpm_solver import dpm_solver_pp, dpm_solver_pp_sde, second_order_weights

#: name -> sampler function (see the module docstring for the shared signature).
SAMPLER_FUNCTIONS = {
    "ddpm": ddpm,
    "ddim": ddim,
    "dpm_solver++": dpm_solver_pp,
    "dpm_solver++_sde": dpm_solver_pp_sde,
}

#: The names :func:`ddpm_tutor.sample` accepts as ``sampler``.
SAMPLERS = tuple(SAMPLER_FUNCTIONS)

__all__ = [
    "SAMPLERS",
    "SAMPLER_FUNCTIONS",
    "Callback",
    "FiniteCheck",
    "trailing_timesteps",
    "ddpm",
    "respaced_schedule",
    "ddim",
    "ddim_sigma",
    "dpm_solver_pp",
    "dpm_solver_pp_sde",
    "second_order_weights",
]
