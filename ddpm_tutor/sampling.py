"""Sampling: draw x_T ~ N(0, I) and run a sampler down to x_0.

Chapter 8 (Algorithm 2) and chapter 11 (fewer steps) of the book. The samplers themselves live
in :mod:`ddpm_tutor.samplers`, one file each, beside their equations; :func:`sample` is the front door.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ._tensor import check_choice, check_model_T
from .guidance import with_guidance
from .reverse import VARIANCES
from .samplers import SAMPLER_FUNCTIONS, SAMPLERS, Callback, trailing_timesteps
from .schedules import NoiseSchedule

__all__ = ["sample", "SAMPLERS"]


def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def _check_options(schedule: NoiseSchedule, sampler: str, steps, eta, variance) -> dict:
    """Validate the sampler's name and options; return the options its function takes."""
    check_choice(sampler, SAMPLERS, "sampler")
    if steps is not None:
        trailing_timesteps(schedule.T, steps)  # raises with the allowed range
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta must be a number in [0, 1] (0: deterministic DDIM, 1: DDPM's posterior), got {eta!r}")
    if float(eta) != 0.0 and sampler != "ddim":
        raise ValueError(f"eta applies only to sampler='ddim', got eta={eta} with sampler={sampler!r}")
    if variance is not None and sampler != "ddpm":
        raise ValueError(f"variance applies only to sampler='ddpm', got variance={variance!r} with sampler={sampler!r}")
    if sampler == "ddpm":
        return {"variance": check_choice("beta_tilde" if variance is None else variance, VARIANCES, "variance")}
    if sampler == "ddim":
        return {"eta": float(eta)}
    return {}


@torch.inference_mode()
def sample(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    schedule: NoiseSchedule,
    shape: Sequence[int],
    *,
    sampler: str = "ddpm",
    steps: int | None = None,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    variance: str | None = None,
    clip_x0: bool = False,
    device: torch.device | str | None = None,
    batch_size: int | None = None,
    labels: torch.Tensor | None = None,
    guidance: float = 1.0,
) -> torch.Tensor:
    """Draw x_T ~ N(0, I) and denoise it with ``sampler`` in ``steps`` network evaluations.

    ``sampler="ddpm"`` with ``steps=None`` is Algorithm 2 of Ho et al. (2020) over all T steps.

    Args:
        model: ``model(xt, t) -> eps_theta`` with ``xt`` of shape ``shape`` and ``t`` int64 ``(B,)``.
        schedule: the noise schedule the model was trained with.
        shape: ``(B, C, H, W)`` of the samples.
        sampler: one of :data:`SAMPLERS`: ``"ddpm"`` (ancestral; respaced when ``steps < T``),
            ``"ddim"``, ``"dpm_solver++"`` (DPM-Solver++(2M)) or ``"dpm_solver++_sde"`` (its SDE variant).
        steps: network evaluations, 1..T, at the "trailing" time steps (see
            :func:`ddpm_tutor.samplers.trailing_timesteps`); ``None`` means all T.
        eta: DDIM's noise scale in [0, 1] (``sampler="ddim"`` only): 0 deterministic, 1 the DDPM posterior.
        generator: optional ``torch.Generator``; all randomness (x_T and every z) comes from it.
        callback: optional ``callback(t, xt, x0_hat)`` after every step: ``t`` the code step of that
            evaluation (T-1 first), ``xt`` the sample after the step (the final x_0 after the last).
        progress: show a tqdm progress bar.
        variance: ``sampler="ddpm"`` only: sigma_t^2 = ``"beta"`` or ``"beta_tilde"`` (default).
        clip_x0: clip the x_0 estimate to [-1, 1] at each step.
        device: where to sample; defaults to the model's device.
        batch_size: draw the ``B`` samples this many at a time (default: all at once), one batch after the
            other from the same ``generator``; this bounds the memory, and other batch sizes draw other
            images from the same seed. ``callback`` and the progress bar then run once per batch.
        labels: for a class-conditional model: int64 ``(B,)``, the class each sample should show (None: no label).
        guidance: classifier-free guidance scale s (chapter 12): eps_u + s (eps_c - eps_u); 1 is plain conditional.

    Returns:
        ``(B, C, H, W)`` float32 tensor x_0, in the model's data range (about [-1, 1]).

    Raises:
        ValueError: an unknown sampler, ``steps`` outside 1..T, ``eta`` outside [0, 1] or given to another
            sampler than DDIM, ``variance`` given to another sampler than DDPM; the model was built for
            another T than the schedule's.
        TypeError: the model returns no tensor shaped like its input.
        FloatingPointError: x_t became NaN or inf (the message names the step).
    """
    options = _check_options(schedule, sampler, steps, eta, variance)
    check_model_T(model, schedule.T)
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be (B, C, H, W) with positive sizes, got {shape}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    eps_model = with_guidance(model, labels, guidance, shape[0])  # classifier-free guidance (chapter 12)
    if batch_size is not None and batch_size < shape[0]:
        return torch.cat([
            sample(model, schedule, (min(batch_size, shape[0] - i), *shape[1:]), sampler=sampler, steps=steps, eta=eta,
                   generator=generator, callback=callback, progress=progress, variance=variance, clip_x0=clip_x0,
                   device=device, labels=None if labels is None else labels[i : i + batch_size], guidance=guidance)
            for i in range(0, shape[0], batch_size)
        ])
    model = eps_model  # from here on the sampler only calls model(xt, t)
    device = torch.device(device) if device is not None else _model_device(model)
    schedule = schedule.to(device)
    timesteps = trailing_timesteps(schedule.T, schedule.T if steps is None else steps)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        gen_device = generator.device if generator is not None else device
        x_T = torch.randn(shape, generator=generator, device=gen_device).to(device)  # x_T ~ N(0, I)
        return SAMPLER_FUNCTIONS[sampler](model, schedule, x_T, timesteps, generator=generator, callback=callback,
                                          progress=progress, clip_x0=clip_x0, **options)
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
