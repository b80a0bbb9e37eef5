"""Sampling: Algorithm 2 of Ho et al. (2020), from pure noise to data.

Chapter 8 of the book. Every sampler here has the same signature and reports its
intermediate values through an optional ``callback``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from ._tensor import check_choice, check_finite, check_model_T, check_model_output
from .reverse import VARIANCES, p_sample_step
from .schedules import NoiseSchedule

__all__ = ["sample"]

#: ``callback(t, xt, x0_hat)``: code step ``t`` (T-1 down to 0), the sample after that step
#: (the paper's x_t; at ``t = 0`` it is the final x_0) and the model's x0_hat at that step.
Callback = Callable[[int, torch.Tensor, torch.Tensor], None]


def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


@torch.inference_mode()
def sample(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    schedule: NoiseSchedule,
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    variance: str = "beta_tilde",
    callback: Callback | None = None,
    progress: bool = True,
    clip_x0: bool = False,
    device: torch.device | str | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Algorithm 2 (Ho et al. 2020): x_T ~ N(0, I); for t = T..1: x_{t-1} = mu_theta(x_t, t) + sigma_t z.

    Args:
        model: ``model(xt, t) -> eps_hat`` with ``xt`` of shape ``shape`` and ``t`` int64 ``(B,)``.
        schedule: the noise schedule the model was trained with.
        shape: ``(B, C, H, W)`` of the samples.
        generator: optional ``torch.Generator``; all randomness (x_T and every z) comes from it.
        variance: sigma_t^2 = ``"beta"`` (beta_t) or ``"beta_tilde"`` (beta_tilde_t).
        callback: optional ``callback(t, xt, x0_hat)`` called after every step (see :data:`Callback`).
        progress: show a tqdm progress bar.
        clip_x0: clip the x_0 estimate to [-1, 1] at each step (see :func:`p_sample_step`).
        device: where to sample; defaults to the model's device.
        batch_size: draw the ``B`` samples this many at a time (default: all at once), one batch after the
            other from the same ``generator``; this bounds the memory, and other batch sizes draw other
            images from the same seed. ``callback`` and the progress bar then run once per batch.

    Returns:
        ``(B, C, H, W)`` float32 tensor x_0, in the model's data range (about [-1, 1]).

    Raises:
        ValueError: the model was built for another T than the schedule's.
        TypeError: the model returns no tensor shaped like its input.
        FloatingPointError: the sample becomes NaN or inf (the message names the code step).
    """
    check_choice(variance, VARIANCES, "variance")
    check_model_T(model, schedule.T)
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be (B, C, H, W) with positive sizes, got {shape}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if batch_size is not None and batch_size < shape[0]:
        return torch.cat([
            sample(model, schedule, (min(batch_size, shape[0] - i), *shape[1:]), generator=generator, variance=variance,
                   callback=callback, progress=progress, clip_x0=clip_x0, device=device)
            for i in range(0, shape[0], batch_size)
        ])
    device = torch.device(device) if device is not None else _model_device(model)
    schedule = schedule.to(device)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()

    def randn() -> torch.Tensor:
        gen_device = generator.device if generator is not None else device
        return torch.randn(shape, generator=generator, device=gen_device).to(device)

    try:
        xt = randn()  # x_T ~ N(0, I)
        for step in tqdm(range(schedule.T - 1, -1, -1), desc="sampling", disable=not progress, leave=False):
            t = torch.full((shape[0],), step, device=device, dtype=torch.long)
            eps_theta = check_model_output(model(xt, t), xt).float()
            z = randn() if step > 0 else None  # Algorithm 2, line 3: z = 0 on the last step
            out = p_sample_step(schedule, eps_theta, xt, t, noise=z, variance=variance, clip_x0=clip_x0)
            xt = check_finite(out.x_prev, "the sample", step)  # stop at the first NaN/inf step, not a black image
            if callback is not None:
                callback(step, xt, out.x0_hat)
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    return xt
