"""Classifier-free guidance (Ho & Salimans 2022): steer a class-conditional eps_theta towards its label.

Chapter 12 of the book. A conditional network trained with label dropout predicts both
eps_theta(x_t, c) (a label) and eps_theta(x_t, no label) (the "no label" index). Guidance with
scale ``s`` replaces the noise prediction by

    eps_hat = eps_theta(x_t, no label) + s * (eps_theta(x_t, c) - eps_theta(x_t, no label))

s = 0 is the unconditional model, s = 1 the plain conditional one, s > 1 pushes past it. Since
eps = -sqrt(1 - alpha_bar_t) * score (``derivations.guidance``), eps_hat follows the score of
p_t(x) p_t(c | x)^s: the label's likelihood raised to the power s.

:func:`guided` wraps the network into a plain ``eps(xt, t)`` function, so every sampler (which
only ever calls ``model(xt, t)``) samples with guidance unchanged.
"""

from __future__ import annotations

from typing import Callable

import math

import torch

__all__ = ["guided", "Guided", "with_guidance", "combine", "check_labels"]


def combine(eps_c: torch.Tensor, eps_u: torch.Tensor, scale: float) -> torch.Tensor:
    """The guided prediction eps_u + s (eps_c - eps_u) (Ho & Salimans 2022, eq. 6 with s = 1 + w)."""
    return eps_u + scale * (eps_c - eps_u)


def _num_classes(model: torch.nn.Module) -> int:
    k = getattr(getattr(model, "config", None), "num_classes", None)
    if k is None:
        raise ValueError(
            "guidance needs a class-conditional model (UNetConfig.num_classes set, trained with "
            "`python -m ddpm_tutor train --conditional`); this model is unconditional: pass labels=None and guidance=1"
        )
    return int(k)


def check_labels(labels: torch.Tensor, num_classes: int, name: str = "labels") -> torch.Tensor:
    """Check that ``labels`` is an int64 ``(B,)`` tensor of classes in ``0..num_classes-1``; return it."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.long tensor of shape (B,), got {type(labels).__name__}; "
            f"use torch.tensor([...], dtype=torch.long)"
        )
    if labels.dtype != torch.long:
        raise TypeError(f"{name} must hold class indices as torch.long (int64), got dtype {labels.dtype}; use {name}.long()")
    if labels.dim() != 1 or labels.numel() == 0:
        raise ValueError(f"{name} must have shape (B,), one class per sample, got {tuple(labels.shape)}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"{name} must lie in 0..{num_classes - 1} (the classes the model was trained on), got values in "
            f"[{low}, {high}]; for unconditional samples pass labels=None"
        )
    return labels


class Guided(torch.nn.Module):
    """``eps(xt, t)`` with classifier-free guidance; a module, so samplers find the network's device and
    switch it to eval mode (and back) as they do for the bare network. Build it with :func:`guided`."""

    def __init__(self, model: torch.nn.Module, labels: torch.Tensor, scale: float, num_classes: int):
        super().__init__()
        self.model, self.labels, self.scale, self.num_classes = model, labels, scale, num_classes

    def forward(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        labels, s = self.labels, self.scale
        if xt.shape[0] != labels.shape[0]:
            raise ValueError(
                f"labels hold {labels.shape[0]} classes but xt holds {xt.shape[0]} images; give one label per sample"
            )
        c = labels.to(xt.device)
        if s == 1.0:
            return self.model(xt, t, c)  # eps_theta(x_t, c)
        null = torch.full_like(c, self.num_classes)  # the "no label" index
        if s == 0.0:
            return self.model(xt, t, null)  # eps_theta(x_t, no label)
        # one call on the doubled batch: [x_t, x_t] with labels [c, no label]
        eps_c, eps_u = self.model(torch.cat([xt, xt]), torch.cat([t, t]), torch.cat([c, null])).chunk(2)
        return combine(eps_c, eps_u, s)


def guided(model: torch.nn.Module, labels: torch.Tensor, scale: float = 1.0) -> Guided:
    """``eps(xt, t)``: the classifier-free guided noise prediction of a conditional ``model`` for ``labels``.

    Args:
        model: ``model(xt, t, labels) -> eps`` with ``model.config.num_classes`` set (a conditional
            :class:`~ddpm_tutor.unet.UNet`); index ``num_classes`` is "no label".
        labels: int64 ``(B,)``, the requested class of every sample, in ``0..num_classes-1``.
        scale: guidance scale s >= 0 (a float): 0 unconditional, 1 conditional, > 1 guided.

    Returns:
        A module ``eps(xt, t)`` for ``xt`` of batch ``B``: eps_u + s (eps_c - eps_u), where both terms come
        from ONE network call on the batch doubled (``[xt, xt]`` with labels ``[labels, no label]``). At
        s = 1 and s = 0 only the term that survives is computed (half the work).
    """
    num_classes = _num_classes(model)
    check_labels(labels, num_classes)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise TypeError(f"guidance scale must be a finite float (0: unconditional, 1: conditional), got {scale!r}")
    if scale < 0:
        raise ValueError(f"guidance scale must be >= 0 (0: unconditional, 1: conditional, > 1: guided), got {scale}")
    return Guided(model, labels, float(scale), num_classes)


def with_guidance(model: Callable[..., torch.Tensor], labels: torch.Tensor | None, scale: float, batch: int):
    """What a sampler should call: ``model`` itself when there is nothing to guide (``labels=None``,
    ``scale=1``), else :func:`guided` after checking that ``labels`` holds one class per sample."""
    if labels is None:
        if scale != 1.0:
            raise ValueError(f"guidance={scale} needs labels (the requested class of every sample); pass labels=...")
        return model
    if isinstance(labels, torch.Tensor) and labels.dim() == 1 and labels.shape[0] != batch:
        raise ValueError(f"labels must hold one class per sample: shape ({batch},), got {tuple(labels.shape)}")
    return guided(model, labels, scale)
