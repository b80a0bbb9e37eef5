"""What every sampler shares: the time steps it visits, the model call, its noise, and a finite check."""

from __future__ import annotations

from fractions import Fraction
from typing import Callable

import torch

from .._tensor import check_model_output

__all__ = ["Callback", "trailing_timesteps", "eps_model", "randn_like", "FiniteCheck"]

#: ``callback(t, xt, x0_hat)``: the code step ``t`` at which the network was evaluated, the sample
#: after that step (on the last step: the final x_0) and the x_0 estimate made at ``t``.
Callback = Callable[[int, torch.Tensor, torch.Tensor], None]


def trailing_timesteps(T: int, steps: int) -> torch.Tensor:
    """The code steps a ``steps``-evaluation sampler visits: "trailing" spacing (Lin et al. 2024, table 2).

    tau_i = round(T (steps - i) / steps) - 1 for i = 0..steps-1, so the first evaluation is at the
    last code step T-1 (the paper's t = T, where x_T ~ N(0, I) is the distribution sampling starts
    from) and the others follow at even strides. The "leading" spacing of the DDIM code
    (0, T/steps, 2T/steps, ...) starts at T - T/steps instead, where x_t is not yet pure noise:
    Lin et al. show that this mismatch between training and sampling costs quality at few steps.
    With ``steps = T`` the result is every code step T-1..0, Algorithm 2's loop.

    The values are computed in exact rational arithmetic (round half to even). diffusers computes
    the same spacing with a floating-point ``arange``, which for some (T, steps) pairs (e.g. T = 100,
    steps = 29) returns one step too many; where it returns ``steps`` steps they agree.

    Returns:
        int64 tensor ``(steps,)``, strictly decreasing, from T-1.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(
            f"steps must be an int between 1 and T = {T} (the number of network evaluations), got {steps!r}"
        )
    return torch.tensor([round(Fraction(T * (steps - i), steps)) - 1 for i in range(steps)], dtype=torch.long)


def eps_model(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], xt: torch.Tensor, step: int) -> torch.Tensor:
    """eps_theta(x_t, t) at code step ``step`` for the whole batch, in ``xt``'s dtype (a model that returns no
    tensor shaped like ``xt`` is named by :func:`~ddpm_tutor._tensor.check_model_output`; no host sync)."""
    t = torch.full((xt.shape[0],), step, device=xt.device, dtype=torch.long)
    return check_model_output(model(xt, t), xt).to(xt.dtype)


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """z ~ N(0, I) of ``x``'s shape and dtype, drawn on the generator's device and moved to ``x``'s."""
    gen_device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=gen_device, dtype=x.dtype).to(x.device)


class FiniteCheck:
    """Stop sampling at the first non-finite x_t, with a message that says where.

    On the CPU every step is checked (``isfinite`` costs far less than a network evaluation). On an
    accelerator a check forces the host to wait for the device, so the samples are checked every
    ``every`` steps and after the last one; the message then names the interval.
    """

    def __init__(self, sampler: str, device: torch.device, every: int = 25):
        self.sampler = sampler
        self.every = 1 if device.type == "cpu" else every
        self.calls = 0
        self.last_good = None  # the last code step after which x_t was checked and finite

    def __call__(self, xt: torch.Tensor, step: int, last: bool) -> None:
        self.calls += 1
        if not (last or self.calls % self.every == 0):
            return
        if not bool(torch.isfinite(xt).all()):
            where = f"after code step {step}" if self.every == 1 else (
                f"between code steps {self.last_good} and {step}" if self.last_good is not None else f"by code step {step}"
            )
            raise FloatingPointError(
                f"sampling ({self.sampler}) produced a non-finite x_t {where} (network evaluation {self.calls}): "
                "the model returned NaN or inf, or the schedule does not match the model's. "
                "Check the checkpoint (does its training loss look finite?) and sample with its own schedule."
            )
        self.last_good = step
