"""Classifier-free guidance (Ho & Salimans 2022): steer a class-conditional eps_theta towards its label.

Chapter 12 of the book. A conditional network trained with label dropout predicts both
eps_theta(x_t, c) (a label) and eps_theta(x_t, no label) (the "no label" index). Guidance with
scale ``s`` replaces the noise prediction by

    eps_hat = eps_theta(x_t, no label) + s * (eps_theta(x_t, c) - eps_theta(x_t, no label))

s = 0 is the unconditional model, s = 1 the plain conditional one, s > 1 pushes past it. Since
eps = -sqrt(1 - alpha_bar_t) * score (``derivations.guidance``), eps_hat follows the score of
p_t(x) p_t(c | x)^s: the label's likelihood raised to the power s.

:func:`guided` wraps the network into a plain ``eps(xt, t)`` function, so every sampler (which
only ever calls ``model(xt, t)``) samples with guidance unchanged. :func:`sweep` measures what the scale
does: how often the requested digit is drawn, how confidently, and how varied the drawings of one digit are.
"""

from __future__ import annotations

from typing import Callable

import math

import torch

__all__ = [
    "guided", "Guided", "with_guidance", "combine", "check_labels",
    "sweep", "class_diversity", "classifier_outputs", "SWEEP_SCALES",
]


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


# ----------------------------------------------------------------------------- measuring guidance

#: The guidance scales of chapter 12's sweep (s = 0: unconditional, s = 1: conditional).
SWEEP_SCALES = (0.0, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0)


@torch.no_grad()
def classifier_outputs(images: torch.Tensor, classifier=None, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """``(probs, features)`` of the shipped MNIST classifier: softmax ``(N, 10)`` and the penultimate layer
    ``relu(fc1(...))``, ``(N, hidden)``, the feature space in which within-class diversity is measured."""
    import torch.nn.functional as F

    from .metrics import load_classifier

    if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.dim() != 4:
        raise TypeError(f"images must be float model-range images (N, 1, 28, 28), got {getattr(images, 'shape', images)}")
    classifier = load_classifier(images.device) if classifier is None else classifier
    classifier.eval()
    device = next(classifier.parameters()).device
    probs, feats = [], []
    for chunk in images.split(batch_size):
        x = chunk.to(device=device, dtype=torch.float32).clamp(-1.0, 1.0)
        h = F.max_pool2d(F.relu(classifier.conv1(x)), 2)
        h = F.max_pool2d(F.relu(classifier.conv2(h)), 2)
        f = F.relu(classifier.fc1(h.flatten(1)))  # (b, hidden)
        feats.append(f.cpu())
        probs.append(F.softmax(classifier.fc2(f), dim=1).cpu())  # (b, 10)
    return torch.cat(probs), torch.cat(feats)


def class_diversity(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Within-class diversity: the mean Euclidean distance between two different samples of one class,
    averaged over the classes that hold at least two samples (NaN if none does).

    Guidance that is too strong draws the same few prototypes of each digit: this number falls.
    """
    if features.dim() != 2 or labels.shape != (features.shape[0],):
        raise ValueError(f"features must be (N, d) and labels (N,), got {tuple(features.shape)} and {tuple(labels.shape)}")
    means = [torch.pdist(features[labels == c].double()).mean() for c in labels.unique() if (labels == c).sum() >= 2]
    return float(torch.stack(means).mean()) if means else float("nan")


def _fid(images: torch.Tensor) -> float | None:
    """FID of ``images`` against the MNIST test set, in the feature space of chapter 10 (the classifier's
    ``fc1`` output before its ReLU, where the test set's statistics were taken); None where the
    evaluation module's dependencies (torchmetrics) are missing."""
    try:
        from .evaluation import ClassifierFeatures, fid_from_features
    except ImportError:
        return None
    return float(fid_from_features(ClassifierFeatures()(images)))


def sweep(
    model: torch.nn.Module,
    schedule,
    scales=SWEEP_SCALES,
    per_class: int = 100,
    seed: int = 0,
    threshold: float = 0.9,
    progress: bool = True,
    **sample_kwargs,
) -> list[dict]:
    """Sample ``per_class`` images of every class at each guidance scale and measure them.

    Every scale starts from the same noise (a generator seeded with ``seed``), so the scales differ only by
    s. Labels are 0, 1, ..., K-1, 0, 1, ... (K = ``model.config.num_classes``). ``sample_kwargs`` go to
    :func:`ddpm_tutor.sample` (``device``, ``batch_size``, and ``sampler``/``steps`` where it has them).

    Returns one dict per scale: ``scale``, ``n``, ``requested_fraction`` (classified as the requested digit),
    ``confident_fraction`` (max softmax > ``threshold``), ``confident_requested_fraction`` (both),
    ``diversity`` (:func:`class_diversity` of the classifier's features, grouped by requested digit),
    ``per_digit`` (requested fraction per digit) and ``fid`` (None where unavailable).
    """
    from .sampling import sample

    k = _num_classes(model)
    n = k * per_class
    labels = torch.arange(n) % k
    cfg = model.config
    device = sample_kwargs.get("device") or next(model.parameters()).device
    records = []
    for s in scales:
        g = torch.Generator(device=device).manual_seed(seed)
        x = sample(model, schedule, (n, cfg.in_channels, cfg.image_size, cfg.image_size), generator=g,
                   labels=labels, guidance=float(s), progress=progress, **sample_kwargs).cpu()
        probs, feats = classifier_outputs(x)
        max_probs, pred = probs.max(dim=1)
        hit, confident = pred == labels, max_probs > threshold
        records.append({
            "scale": float(s),
            "n": n,
            "requested_fraction": hit.double().mean().item(),
            "confident_fraction": confident.double().mean().item(),
            "confident_requested_fraction": (hit & confident).double().mean().item(),
            "diversity": class_diversity(feats, labels),
            "per_digit": [hit[labels == c].double().mean().item() for c in range(k)],
            "fid": _fid(x),
        })
    return records
