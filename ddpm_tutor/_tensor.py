"""The one broadcasting helper and the argument checks every module shares."""

from __future__ import annotations

import torch

__all__ = ["extract", "check_t", "check_same_shape", "check_choice"]


def check_t(t: torch.Tensor | int, T: int, batch: int | None = None, name: str = "t") -> torch.Tensor:
    """Validate a timestep argument and return it as a 1-D ``int64`` tensor.

    Code steps run ``t = 0..T-1``; code step ``t`` is the paper's step ``t + 1``
    (so ``t = 0`` is the paper's first noising step ``x_0 -> x_1``).

    ``t`` may be a Python ``int`` (broadcast to ``batch``), a 0-d integer tensor,
    or a 1-D integer tensor of length ``batch``.
    """
    if isinstance(t, bool):
        raise TypeError(f"{name} must be an int or an integer tensor, got bool")
    if isinstance(t, int):
        _check_range(t, t, T, name)
        return torch.full((batch if batch is not None else 1,), t, dtype=torch.long)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be an int or an integer tensor, got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(
            f"{name} must hold integer timesteps (torch.long), got dtype {t.dtype}; "
            f"use {name}.long() or torch.randint(...)"
        )
    if t.dim() == 0:
        t = t.reshape(1).expand(batch if batch is not None else 1)
    elif t.dim() != 1:
        raise ValueError(f"{name} must be 0-d or 1-D of shape (B,), got shape {tuple(t.shape)}")
    elif batch is not None and t.shape[0] not in (1, batch):
        raise ValueError(f"{name} has shape {tuple(t.shape)} but the batch size is {batch}; pass one timestep per sample")
    elif batch is not None and t.shape[0] == 1 and batch != 1:
        t = t.expand(batch)
    t = t.long()
    # Reading values back from a GPU makes the CPU wait for it (a sync at every training and sampling step),
    # so the range is read only from CPU tensors. On CUDA an asynchronous device-side assertion stands in:
    # it fails the run (at a later kernel launch) instead of letting a negative t wrap around to a[T + t].
    if t.numel():
        if t.device.type == "cpu":
            _check_range(int(t.min()), int(t.max()), T, name)
        elif t.device.type == "cuda":
            torch._assert_async(((t >= 0) & (t < T)).all(), f"{name} must lie in 0..T-1 = 0..{T - 1}")
    return t


def _check_range(lo: int, hi: int, T: int, name: str) -> None:
    if lo < 0 or hi > T - 1:
        raise ValueError(
            f"{name} must lie in 0..T-1 = 0..{T - 1} (code step t is the paper's step t+1), got values in [{lo}, {hi}]"
        )


def extract(a: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Gather ``a[t]`` and shape it to broadcast against ``x``.

    Args:
        a: per-step coefficients, shape ``(T,)`` (any float dtype).
        t: integer timesteps, shape ``(B,)`` with ``B == x.shape[0]``.
        x: the tensor the result will multiply, shape ``(B, *rest)``.

    Returns:
        ``a[t]`` as ``x.dtype`` on ``x.device`` with shape ``(B, 1, ..., 1)``
        (one trailing 1 per dimension of ``rest``).
    """
    if a.dim() != 1:
        raise ValueError(f"coefficients must be 1-D of shape (T,), got shape {tuple(a.shape)}")
    if t.dim() != 1:
        raise ValueError(f"t must be 1-D of shape (B,), got shape {tuple(t.shape)}")
    if x.dim() < 1 or t.shape[0] != x.shape[0]:
        raise ValueError(
            f"rank/batch mismatch: t has shape {tuple(t.shape)} but x has shape {tuple(x.shape)}; "
            "t needs one entry per sample along x's first dimension"
        )
    out = a.to(device=x.device)[t.to(a.device if a.device == x.device else x.device)]
    out = out.to(dtype=x.dtype) if x.is_floating_point() else out
    return out.reshape(t.shape[0], *([1] * (x.dim() - 1)))


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have the same shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_choice(value: str, choices: tuple[str, ...], name: str) -> str:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value
