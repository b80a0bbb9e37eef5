"""Sample-quality measures: does a batch of generated images look like MNIST digits?

A small CNN trained on MNIST (``scripts/train_classifier.py``; the weights ship in
``ddpm_tutor/weights/``) judges each image. Two numbers summarise a batch:

* the **confident fraction**: the share of images whose largest softmax probability
  exceeds ``threshold`` (a sharp, recognisable digit scores high; blobs and noise do
  not), and
* the **class histogram** of the predicted digits: a model that draws only 1s and 7s
  has collapsed onto a few modes even if every image is sharp, which shows up as a
  small ``min_class_fraction`` (the ideal is about 0.1 for every digit).

These are cheap stand-ins for FID, which Ho et al. (2020) report (Table 1) but which
needs an Inception network and tens of thousands of samples.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F

from .files import load_verified

__all__ = [
    "WEIGHTS_PATH",
    "META_PATH",
    "CLASSIFIER_DATASETS",
    "classifier_path",
    "MNISTClassifier",
    "load_classifier",
    "SampleQuality",
    "sample_quality",
    "plot_class_histogram",
]

WEIGHTS_PATH = Path(__file__).resolve().parent / "weights" / "mnist_classifier.pt"
META_PATH = WEIGHTS_PATH.with_suffix(".json")

#: The datasets a classifier ships for (the same small CNN, trained by scripts/train_classifier.py --dataset).
CLASSIFIER_DATASETS = ("mnist", "fashion-mnist")


def classifier_path(dataset: str = "mnist") -> Path:
    """The shipped classifier's weights for ``dataset``: ``weights/mnist_classifier.pt`` or
    ``weights/fashion_mnist_classifier.pt`` (its JSON record beside it)."""
    if dataset not in CLASSIFIER_DATASETS:
        raise ValueError(
            f"dataset={dataset!r} has no shipped classifier; choose one of {', '.join(CLASSIFIER_DATASETS)}. "
            "For other data, judge samples with features of a network trained on that data (FID in its feature "
            "space) or with evaluate's Inception FID"
        )
    return WEIGHTS_PATH.with_name(f"{dataset.replace('-', '_')}_classifier.pt")


class MNISTClassifier(nn.Module):
    """A small CNN for 28 x 28 digits: two conv blocks, then a one-hidden-layer MLP.

    ``(B, 1, 28, 28) -conv3x3,ReLU,pool-> (B, c1, 14, 14) -conv3x3,ReLU,pool-> (B, c2, 7, 7)
    -flatten,linear,ReLU,dropout-> (B, hidden) -linear-> (B, 10)`` logits.
    With the defaults it has 206,922 parameters (0.8 MB as float32).

    Args:
        channels: output channels of the two conv layers ``(c1, c2)``.
        hidden: width of the hidden linear layer.
        dropout: dropout probability before the last layer (active in ``train()`` only).

    Input: ``torch.float32`` images in model range ``[-1, 1]`` (see
    :func:`ddpm_tutor.data.to_model_range`), shape ``(B, 1, 28, 28)``.
    Output: logits of shape ``(B, 10)``.
    """

    def __init__(self, channels: tuple[int, int] = (16, 32), hidden: int = 128, dropout: float = 0.1):
        super().__init__()
        c1, c2 = channels
        self.config = {"channels": [c1, c2], "hidden": hidden, "dropout": dropout}
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.fc1 = nn.Linear(c2 * 7 * 7, hidden)
        self.fc2 = nn.Linear(hidden, 10)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"x must have shape (B, 1, 28, 28), got {tuple(x.shape)}")
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (B, c1, 14, 14)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # (B, c2, 7, 7)
        h = self.dropout(F.relu(self.fc1(h.flatten(1))))  # (B, hidden)
        return self.fc2(h)  # (B, 10)


def load_classifier(
    device: str | torch.device = "cpu",
    path: str | os.PathLike | None = None,
    meta_path: str | os.PathLike | None = None,
    dataset: str = "mnist",
) -> MNISTClassifier:
    """Load the shipped MNIST (or Fashion-MNIST) classifier, in ``eval()`` mode, after checking its sha256.

    Args:
        device: where to put the model.
        path: the ``state_dict`` file; default :func:`classifier_path` of ``dataset``
            (``ddpm_tutor/weights/mnist_classifier.pt`` for MNIST).
        meta_path: its JSON record (sha256, architecture, test accuracy, the command that
            trained it); default the ``.json`` next to ``path``.
        dataset: ``"mnist"`` or ``"fashion-mnist"``: which shipped classifier (when ``path`` is None).

    Raises:
        ValueError: if a file is missing or the weights' sha256 differs from the one
            recorded in the JSON (a modified or damaged file).
    """
    path = classifier_path(dataset) if path is None else Path(path)
    meta_path = path.with_suffix(".json") if meta_path is None else Path(meta_path)
    for p in (path, meta_path):
        if not p.is_file():
            raise ValueError(
                f"classifier file {p} not found; reinstall ddpm-tutor or re-create it with "
                f"python scripts/train_classifier.py --dataset {dataset}"
            )
    state = load_verified(path, meta_path, lambda p: torch.load(p, map_location="cpu", weights_only=True),
                          fix="reinstall ddpm-tutor or re-create both files with python scripts/train_classifier.py")
    arch = json.loads(meta_path.read_text())["architecture"]
    model = MNISTClassifier(channels=tuple(arch["channels"]), hidden=arch["hidden"], dropout=arch["dropout"])
    model.load_state_dict(state)
    return model.to(device).eval()


@dataclass(frozen=True)
class SampleQuality:
    """What :func:`sample_quality` measured on ``n`` images."""

    n: int  # number of images judged
    threshold: float  # an image is "confident" if its max softmax probability exceeds this
    confident_fraction: float  # share of images with max softmax probability > threshold
    counts: tuple[int, ...]  # predicted (argmax) class counts for digits 0..9, sum n
    fractions: tuple[float, ...]  # counts / n
    min_class_fraction: float  # min(fractions): near 0.1 when every digit is drawn equally
    predictions: torch.Tensor  # (n,) int64 argmax class per image
    max_probs: torch.Tensor  # (n,) float32 largest softmax probability per image

    def passes(self, target_confident: float = 0.9, min_class_fraction: float = 0.05) -> bool:
        """True if ``confident_fraction >= target_confident`` and every digit makes up at
        least ``min_class_fraction`` of the predictions."""
        return self.confident_fraction >= target_confident and self.min_class_fraction >= min_class_fraction

    def to_dict(self) -> dict:
        """The summary numbers as plain Python values (for JSON): no per-image tensors."""
        return {
            "n": self.n,
            "threshold": self.threshold,
            "confident_fraction": self.confident_fraction,
            "min_class_fraction": self.min_class_fraction,
            "counts": list(self.counts),
            "passes_target": self.passes(),
        }

    def __str__(self) -> str:
        hist = " ".join(f"{d}:{c}" for d, c in enumerate(self.counts))
        return (
            f"SampleQuality(n={self.n}, confident(>{self.threshold:g})={self.confident_fraction:.3f}, "
            f"min_class_fraction={self.min_class_fraction:.3f}, counts=[{hist}])"
        )


@torch.no_grad()
def sample_quality(
    images: torch.Tensor,
    classifier: MNISTClassifier | None = None,
    threshold: float = 0.9,
    batch_size: int = 1000,
    dataset: str = "mnist",
) -> SampleQuality:
    """Judge a batch of images with the MNIST classifier (or the Fashion-MNIST one).

    Args:
        images: either model-range floats in ``[-1, 1]`` of shape ``(N, 1, 28, 28)``
            (values outside are clipped, as samplers may overshoot) or ``torch.uint8``
            pixels of shape ``(N, 28, 28)`` / ``(N, 1, 28, 28)``.
        classifier: default :func:`load_classifier` of ``dataset`` on the images' device.
        threshold: confidence threshold in ``[0, 1)`` on the max softmax probability.
        batch_size: images per forward pass.
        dataset: ``"mnist"`` or ``"fashion-mnist"``: the shipped classifier used when ``classifier`` is None
            (the classes are then 0..9 of that dataset: digits, or Fashion-MNIST's ten kinds of clothing).

    Returns:
        A :class:`SampleQuality` with ``confident_fraction = mean(max_k softmax(f(x))_k >
        threshold)``, the argmax class ``counts`` and ``fractions`` for digits 0..9, and
        ``min_class_fraction``.
    """
    from ddpm_tutor.data import to_model_range

    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype == torch.uint8:
        images = to_model_range(images)
    elif not images.is_floating_point():
        raise TypeError(f"images must be float in [-1, 1] or uint8 pixels, got dtype {images.dtype}")
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28) or images.shape[0] == 0:
        raise ValueError(f"images must have shape (N, 1, 28, 28) with N >= 1, got {tuple(images.shape)}")
    if not 0.0 <= float(threshold) < 1.0:
        raise ValueError(f"threshold must lie in [0, 1), got {threshold}")
    if classifier is None:
        classifier = load_classifier(images.device, dataset=dataset)
    was_training = classifier.training
    classifier.eval()
    device = next(classifier.parameters()).device
    probs = []
    for chunk in images.split(batch_size):
        x = chunk.to(device=device, dtype=torch.float32).clamp(-1.0, 1.0)
        probs.append(F.softmax(classifier(x), dim=1).cpu())  # (b, 10)
    classifier.train(was_training)
    probs = torch.cat(probs)  # (N, 10)
    max_probs, predictions = probs.max(dim=1)
    n = predictions.numel()
    counts = torch.bincount(predictions, minlength=10)
    fractions = counts.double() / n
    return SampleQuality(
        n=n,
        threshold=float(threshold),
        confident_fraction=float((max_probs > threshold).double().mean()),
        counts=tuple(int(c) for c in counts),
        fractions=tuple(float(f) for f in fractions),
        min_class_fraction=float(fractions.min()),
        predictions=predictions,
        max_probs=max_probs,
    )


def plot_class_histogram(result: SampleQuality, ax=None, min_class_fraction: float | None = None):
    """Bar chart of the predicted-digit fractions, with the uniform share 0.1 as a dashed line; with
    ``min_class_fraction``, also that bar as a dotted line, and the digits below it in red. Returns the axes."""
    import matplotlib.pyplot as plt

    if not isinstance(result, SampleQuality):
        raise TypeError(f"result must be a SampleQuality from sample_quality(), got {type(result).__name__}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    low = min_class_fraction if min_class_fraction is not None else 0.0
    colors = ["tab:red" if f < low else "tab:blue" for f in result.fractions]
    ax.bar(range(10), result.fractions, color=colors)
    ax.axhline(0.1, color="gray", linestyle="--", linewidth=1, label="uniform (0.1)")
    if min_class_fraction is not None:
        ax.axhline(min_class_fraction, color="tab:red", linestyle=":", linewidth=1, label=f"minimum ({min_class_fraction:g})")
    ax.set_xticks(range(10))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("fraction of samples")
    ax.set_title(f"n={result.n}, confident (p>{result.threshold:g}): {result.confident_fraction:.1%}")
    ax.legend(loc="upper right", fontsize="small")
    return ax
