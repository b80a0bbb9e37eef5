"""Measuring samples the way the field does: FID, KID, precision/recall and memorisation.

Chapter 10 of the book. Every measure compares a set of generated images with real MNIST digits
in one feature space: the **penultimate layer of the shipped MNIST classifier**
(:mod:`ddpm_tutor.metrics`), i.e. the output of its hidden linear layer ``fc1``, a 128-dimensional
vector per image, taken *before* that layer's ReLU. (After the ReLU, every image the classifier
rejects, noise and blobs, maps to the zero vector: one point, which the k-nearest-neighbour balls of a
few real outliers cover, so that pure noise scored a precision of 1. Before the ReLU such images keep
distinct features.) The field's FID uses Inception-v3 features of ImageNet photographs (Heusel et al.
2017); on 28 x 28 grey digits a network trained on digits sees what matters, so numbers here are
comparable with each other, **not** with published Inception FIDs (for those, see ``inception=True``
of :func:`evaluate_images`).

* **FID** (Heusel et al. 2017): fit a Gaussian to each set's features and take the Frechet
  distance ``||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))``, computed by torchmetrics'
  ``FrechetInceptionDistance`` with :class:`ClassifierFeatures` as its ``feature`` module.
* **KID** (Binkowski et al. 2018): the unbiased squared MMD with the cubic polynomial kernel
  ``k(x, y) = (x.y / d + 1)^3``, by torchmetrics' ``KernelInceptionDistance``, averaged over subsets.
* The **real-data floor**: FID is biased upwards by a finite sample (the Gaussian fitted to N
  points is not the true one), so a score means little alone. Each score is reported beside the
  same score of N *real training digits* against the same test reference (several draws, mean
  and standard deviation): a model cannot be expected to beat real data.
* **Precision and recall** (Kynkaanniemi et al. 2019): each set's manifold is the union of balls
  around its points reaching their k-th nearest neighbour (k = 3); precision is the share of
  generated points inside the real manifold (are samples realistic?), recall the share of real
  points inside the generated one (is all of the data covered?).
* **Memorisation**: the pixel distance from each sample to its nearest *training* digit, against
  the same distance for held-out test digits. A model that copies its training set draws samples
  much closer to training digits than new real digits are.

The real reference is the MNIST test set: its features, their mean and covariance ship in
``ddpm_tutor/weights/mnist_test_features.pt`` (sha256 checked before use; regenerate with
``python scripts/mnist_feature_stats.py``), so a score needs no pass over the test set. The
training set is loaded (:func:`ddpm_tutor.data.load_mnist`) for the floor and the memorisation check.

Fashion-MNIST is measured the same way with its own classifier and test-set features
(``fashion_mnist_classifier.pt``, ``fashion_mnist_test_features.pt``): pass ``dataset="fashion-mnist"``.

torchmetrics is imported here only, so ``import ddpm_tutor`` stays light.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
import torch.nn.functional as F

from .metrics import META_PATH as CLASSIFIER_META_PATH
from .metrics import MNISTClassifier, classifier_path, load_classifier, sample_quality

__all__ = [
    "STATS_PATH",
    "STATS_META_PATH",
    "ClassifierFeatures",
    "ReferenceStats",
    "load_reference_stats",
    "features",
    "fid_from_features",
    "frechet_distance",
    "fid",
    "kid",
    "precision_recall",
    "Memorisation",
    "memorisation",
    "Floor",
    "real_data_floor",
    "Evaluation",
    "evaluate_images",
    "evaluate",
    "inception_fid",
]

STATS_PATH = Path(__file__).resolve().parent / "weights" / "mnist_test_features.pt"
STATS_META_PATH = STATS_PATH.with_suffix(".json")
_REGENERATE = "python scripts/mnist_feature_stats.py"


def _stats_path(dataset: str) -> Path:
    """The shipped test-set features of ``dataset``: ``weights/mnist_test_features.pt`` or ``fashion_mnist_...``."""
    classifier_path(dataset)  # an unknown dataset: the message lists the known ones
    return STATS_PATH.with_name(f"{dataset.replace('-', '_')}_test_features.pt")

#: KID's settings: torchmetrics' kernel; subsets of min(1000, N) images. With N = 1000 samples every
#: subset holds all of them and the subsets differ only in the 1000 of the 10,000 test digits they
#: take, so 10 subsets already cover the reference (torchmetrics' default of 100 costs 10x the time).
KID_SUBSETS = 10
KID_MAX_SUBSET_SIZE = 1000


# ----------------------------------------------------------------------------- features


class ClassifierFeatures(nn.Module):
    """The feature map of every measure here: the MNIST classifier's penultimate layer.

    ``(B, 1, 28, 28) -> conv, ReLU, pool, conv, ReLU, pool, flatten, fc1 -> (B, hidden)``: the
    classifier's forward pass up to its hidden linear layer, before that layer's ReLU, its dropout
    and the last linear layer (``hidden = 128`` for the shipped classifier; the classifier's logits
    are ``fc2(relu(features))``). It is the ``feature`` module given to torchmetrics, which reads
    ``num_features`` and calls it on whatever ``update`` receives.

    Input: float images in model range ``[-1, 1]`` (clipped, as samplers may overshoot), or
    ``torch.uint8`` pixels 0..255, shape ``(B, 1, 28, 28)`` or ``(B, 28, 28)``.
    Output: ``(B, hidden)`` float64 (torchmetrics accumulates in float64 anyway).
    """

    def __init__(self, classifier: MNISTClassifier | None = None, dataset: str = "mnist"):
        super().__init__()
        self.classifier = load_classifier(dataset=dataset) if classifier is None else classifier
        self.classifier.eval()
        self.num_features = self.classifier.fc1.out_features

    def train(self, mode: bool = True) -> "ClassifierFeatures":  # always in eval mode: no dropout
        super().train(mode)
        self.classifier.eval()
        return self

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_model_range(x).to(next(self.classifier.parameters()).device)
        c = self.classifier
        h = F.max_pool2d(F.relu(c.conv1(x)), 2)  # (B, c1, 14, 14)
        h = F.max_pool2d(F.relu(c.conv2(h)), 2)  # (B, c2, 7, 7)
        return c.fc1(h.flatten(1)).double()  # (B, hidden), before fc1's ReLU


def _as_model_range(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """``(N, 1, 28, 28)`` float32 in [-1, 1] from model-range floats or uint8 pixels."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"{name} must have shape (N, 1, 28, 28) or (N, 28, 28), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float() / 127.5 - 1.0
    if not images.is_floating_point():
        raise TypeError(f"{name} must be float in [-1, 1] or uint8 pixels 0..255, got dtype {images.dtype}")
    return images.float().clamp(-1.0, 1.0)


def features(images: torch.Tensor, extractor: ClassifierFeatures | None = None, batch_size: int = 1000) -> torch.Tensor:
    """:class:`ClassifierFeatures` of ``images`` (see there for the accepted inputs), ``(N, 128)`` float64."""
    extractor = ClassifierFeatures() if extractor is None else extractor
    images = _as_model_range(images)
    return torch.cat([extractor(chunk) for chunk in images.split(batch_size)]).cpu()


# ----------------------------------------------------------------------------- the shipped reference


@dataclass(frozen=True)
class ReferenceStats:
    """The MNIST test set in feature space: what every score compares against."""

    features: torch.Tensor  # (10000, 128) float64: the test digits' features (stored as float16)
    mean: torch.Tensor  # (128,) float64: their mean
    cov: torch.Tensor  # (128, 128) float64: their covariance (divided by n - 1)
    labels: torch.Tensor  # (10000,) int64: the test digits' labels

    @property
    def n(self) -> int:
        return self.features.shape[0]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


_REFERENCE_CACHE: dict[tuple[str, str], ReferenceStats] = {}


def load_reference_stats(path: str | os.PathLike | None = None, meta_path: str | os.PathLike | None = None,
                         dataset: str = "mnist") -> ReferenceStats:
    """Load the shipped test-set features and statistics after checking their sha256.

    Args:
        path: the ``.pt`` file; default ``ddpm_tutor/weights/mnist_test_features.pt`` (for
            ``dataset="fashion-mnist"``: ``fashion_mnist_test_features.pt``).
        meta_path: its JSON record (sha256, the classifier's sha256, the command that wrote it);
            default the ``.json`` beside ``path``.

    Raises:
        ValueError: if a file is missing, the ``.pt``'s sha256 differs from the record (modified or
            damaged), or the record was made with another classifier than the one shipped (stale).
    """
    path = _stats_path(dataset) if path is None else Path(path)
    meta_path = path.with_suffix(".json") if meta_path is None else Path(meta_path)
    regenerate = _REGENERATE + ("" if dataset == "mnist" else f" --dataset {dataset}")
    for p in (path, meta_path):
        if not p.is_file():
            raise ValueError(f"reference statistics file {p} not found; reinstall ddpm-tutor or re-create it with {regenerate}")
    meta = json.loads(meta_path.read_text())
    got = _sha256(path)
    if got != meta["sha256"]:
        raise ValueError(
            f"{path}: sha256 is {got}, but {meta_path} records {meta['sha256']}; the statistics were modified "
            f"or damaged. Reinstall ddpm-tutor or re-create both files with {_REGENERATE}"
        )
    classifier_meta = CLASSIFIER_META_PATH if dataset == "mnist" else classifier_path(dataset).with_suffix(".json")
    classifier_sha = json.loads(Path(classifier_meta).read_text())["sha256"]
    if meta["classifier_sha256"] != classifier_sha:
        raise ValueError(
            f"{meta_path} was computed with the classifier of sha256 {meta['classifier_sha256']}, but the shipped "
            f"classifier is {classifier_sha}; the features are stale. Re-create them with {_REGENERATE}"
        )
    key = (str(path), got)
    if key not in _REFERENCE_CACHE:
        d = torch.load(path, map_location="cpu", weights_only=True)
        _REFERENCE_CACHE[key] = ReferenceStats(
            features=d["features"].double(), mean=d["mean"].double(), cov=d["cov"].double(), labels=d["labels"].long()
        )
    return _REFERENCE_CACHE[key]


def reference_from_features(feats: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the shipped file holds, computed from features: float16 features, and the mean and covariance
    of exactly those (rounded) features in float64, so the statistics and the features agree."""
    stored = feats.to(torch.float16)
    f = stored.double()
    mean = f.mean(dim=0)
    cov = torch.cov(f.T)  # divides by n - 1, as torchmetrics does
    return {"features": stored, "mean": mean, "cov": cov, "labels": labels.long()}


# ----------------------------------------------------------------------------- FID and KID


def _psd_sqrt(cov: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a positive semi-definite matrix, by its eigendecomposition."""
    vals, vecs = torch.linalg.eigh(cov)
    return (vecs * vals.clamp(min=0.0).sqrt()) @ vecs.T


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """FID from scratch: ``||mu1 - mu2||^2 + Tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2))`` (Heusel et al. 2017).

    ``cov1 cov2`` is not symmetric, but it is similar to the symmetric PSD matrix
    ``M = cov1^(1/2) cov2 cov1^(1/2)`` (conjugate by ``cov1^(1/2)``), so both have the same
    eigenvalues and ``Tr (cov1 cov2)^(1/2) = sum_i sqrt(lambda_i(M))``; symmetric eigensolvers
    handle nearly singular covariances reliably. torchmetrics takes the
    eigenvalues of ``cov1 cov2`` directly: two routes to one number. All in float64.
    """
    mu1, mu2, cov1, cov2 = (a.double() for a in (mu1, mu2, cov1, cov2))
    root1 = _psd_sqrt(cov1)
    m = root1 @ cov2 @ root1
    trace_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0.0).sqrt().sum()
    diff = mu1 - mu2
    return float(diff @ diff + cov1.trace() + cov2.trace() - 2.0 * trace_sqrt)


def _fid_metric(extractor: ClassifierFeatures, reference: ReferenceStats):
    """torchmetrics' FID with our feature module, its real side filled from the shipped statistics.

    torchmetrics keeps running sums (sum of features, sum of outer products, count) and computes the
    covariance as ``(sum_outer - n mu mu^T) / (n - 1)``; we store the sums that give back the shipped
    mean and covariance exactly, so no pass over the test images is needed.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=extractor, reset_real_features=False, normalize=True)
    n, mu = reference.n, reference.mean
    metric.real_features_sum = mu * n
    metric.real_features_cov_sum = reference.cov * (n - 1) + n * torch.outer(mu, mu)
    metric.real_features_num_samples = torch.tensor(n, dtype=torch.long)
    return metric


def fid(images: torch.Tensor, extractor: ClassifierFeatures | None = None, reference: ReferenceStats | None = None,
        batch_size: int = 1000) -> float:
    """FID of ``images`` against the MNIST test set, in the classifier's feature space, by torchmetrics."""
    extractor = ClassifierFeatures() if extractor is None else extractor
    reference = load_reference_stats() if reference is None else reference
    images = _as_model_range(images)
    if images.shape[0] < 2:
        raise ValueError(f"images: FID needs at least 2 images, got {images.shape[0]}")
    metric = _fid_metric(extractor, reference)
    for chunk in images.split(batch_size):
        metric.update(chunk, real=False)
    return float(metric.compute())


def fid_from_features(feats: torch.Tensor, reference: ReferenceStats | None = None) -> float:
    """FID of already-extracted features ``(N, d)`` against the reference, by torchmetrics' formula."""
    from torchmetrics.image.fid import _compute_fid

    reference = load_reference_stats() if reference is None else reference
    f = feats.double()
    return float(_compute_fid(reference.mean, reference.cov, f.mean(dim=0), torch.cov(f.T)))


def _kid_from_features(fake: torch.Tensor, real: torch.Tensor, subsets: int, seed: int) -> tuple[float, float]:
    """KID by torchmetrics from two feature sets; its subsets are drawn from torch's global generator,
    which we seed inside ``fork_rng`` so the result is reproducible and the caller's state untouched."""
    from torchmetrics.image.kid import KernelInceptionDistance

    subset_size = min(KID_MAX_SUBSET_SIZE, fake.shape[0], real.shape[0])
    with warnings.catch_warnings():  # its note that features are kept in memory: they are ours, and small
        warnings.filterwarnings("ignore", message=".*will save all extracted features", category=UserWarning)
        metric = KernelInceptionDistance(feature=nn.Identity(), subsets=subsets, subset_size=subset_size)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def kid(images: torch.Tensor, extractor: ClassifierFeatures | None = None, reference: ReferenceStats | None = None,
        subsets: int = KID_SUBSETS, seed: int = 0) -> tuple[float, float]:
    """KID of ``images`` against the MNIST test features: ``(mean, std)`` over ``subsets`` random subsets of
    ``min(1000, N)`` images each (torchmetrics' ``KernelInceptionDistance``, cubic polynomial kernel)."""
    reference = load_reference_stats() if reference is None else reference
    feats = features(images, extractor)
    if feats.shape[0] < 2:
        raise ValueError(f"images: KID needs at least 2 images, got {feats.shape[0]}")
    return _kid_from_features(feats, reference.features, subsets, seed)


# ----------------------------------------------------------------------------- precision and recall


def _kth_neighbour_radii(feats: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Distance from each point to its k-th nearest *other* point of the same set, ``(N,)``."""
    radii = []
    for block in feats.split(chunk):
        d = torch.cdist(block, feats)  # (b, N); each point's distance 0 to itself is the first of the k + 1
        radii.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _inside_manifold(queries: torch.Tensor, points: torch.Tensor, radii: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """For each query, whether it lies in some ball ``||q - p_i|| <= r_i``, ``(M,)`` bool."""
    inside = []
    for block in queries.split(chunk):
        d = torch.cdist(block, points)  # (b, N)
        inside.append((d <= radii[None, :]).any(dim=1))
    return torch.cat(inside)


def precision_recall(fake: torch.Tensor, real: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of two feature sets ``(N, d)``, ``(M, d)``.

    The manifold of a set is the union of balls centred at its points with radius the distance to
    the point's k-th nearest neighbour in the same set. Precision = share of ``fake`` points inside
    the real manifold; recall = share of ``real`` points inside the fake manifold. Both sets should
    have the same size (the estimate depends on it, as FID's does); the paper uses k = 3.
    """
    if k < 1 or k >= min(fake.shape[0], real.shape[0]):
        raise ValueError(f"k must lie in 1..{min(fake.shape[0], real.shape[0]) - 1} (fewer than the points of each set), got {k}")
    fake, real = fake.double(), real.double()
    precision = _inside_manifold(fake, real, _kth_neighbour_radii(real, k)).double().mean()
    recall = _inside_manifold(real, fake, _kth_neighbour_radii(fake, k)).double().mean()
    return float(precision), float(recall)


def _subset_indices(total: int, n: int, seed: int = 0) -> torch.Tensor:
    """A fixed random subset of ``min(n, total)`` indices of ``0..total-1`` (seeded, without replacement)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=g)[: min(n, total)]


# ----------------------------------------------------------------------------- memorisation


@dataclass(frozen=True)
class Memorisation:
    """Pixel distances (L2 in model range [-1, 1]) to the nearest training digit."""

    sample_median: float  # median over the samples of the distance to their nearest training digit
    heldout_median: float  # the same for held-out MNIST test digits
    threshold: float  # the 1 % quantile of the held-out distances
    flagged_fraction: float  # share of samples closer than `threshold` to a training digit (held-out: 0.01)
    nearest_index: torch.Tensor = field(repr=False)  # (N,) index of each sample's nearest training digit
    distances: torch.Tensor = field(repr=False)  # (N,) each sample's distance to it
    heldout_distances: torch.Tensor = field(repr=False)  # (M,) each held-out digit's distance to its nearest

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("sample_median", "heldout_median", "threshold", "flagged_fraction")}


def _nearest(queries: torch.Tensor, train: torch.Tensor, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest row of ``train`` (N, D) for each row of ``queries`` (M, D): ``(distances, indices)``."""
    dists, idx = [], []
    train_sq = train.pow(2).sum(dim=1)  # (N,)
    for block in queries.split(chunk):
        # ||q - y||^2 = |q|^2 - 2 q.y + |y|^2, the (b, N) matrix by one matmul
        sq = block.pow(2).sum(dim=1, keepdim=True) - 2.0 * block @ train.T + train_sq[None, :]
        d, i = sq.min(dim=1)
        dists.append(d.clamp(min=0.0).sqrt())
        idx.append(i)
    return torch.cat(dists), torch.cat(idx)


_HELDOUT_CACHE: dict[str, torch.Tensor] = {}


def memorisation(images: torch.Tensor, train: torch.Tensor | None = None, heldout: torch.Tensor | None = None,
                 quantile: float = 0.01, dataset: str = "mnist") -> Memorisation:
    """Do samples sit on training digits? Compare their nearest-training-digit distances with held-out digits'.

    Args:
        images: samples, model-range floats or uint8 pixels, ``(N, 1, 28, 28)``.
        train: the training digits (same conventions); default all 60,000 MNIST training digits.
        heldout: real digits the model never saw; default 1,000 MNIST test digits (a fixed random subset;
            their distances are computed once per process).
        dataset: whose training and test images are the defaults (``"mnist"`` or ``"fashion-mnist"``).
        quantile: the flagging threshold is this quantile of the held-out distances, so by
            construction that share of new real digits is flagged; a copying model flags far more.
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    default = train is None and heldout is None
    # float32: a copied digit's distance comes out as sqrt(rounding error), about 1e-2, far below any threshold
    train_f = _as_model_range(_train_images(dataset) if train is None else train, "train").flatten(1)
    if default and dataset in _HELDOUT_CACHE:
        heldout_d = _HELDOUT_CACHE[dataset]
    else:
        if heldout is None:
            from .datasets import load_dataset

            test_images, _ = load_dataset(dataset, "test")
            heldout = test_images[_subset_indices(test_images.shape[0], 1000)]
        heldout_d, _ = _nearest(_as_model_range(heldout, "heldout").flatten(1), train_f)
        if default:
            _HELDOUT_CACHE[dataset] = heldout_d
    d, idx = _nearest(_as_model_range(images).flatten(1), train_f)
    threshold = float(torch.quantile(heldout_d, quantile))
    return Memorisation(
        sample_median=float(d.median()),
        heldout_median=float(heldout_d.median()),
        threshold=threshold,
        flagged_fraction=float((d < threshold).double().mean()),
        nearest_index=idx,
        distances=d,
        heldout_distances=heldout_d,
    )


# ----------------------------------------------------------------------------- the real-data floor

_TRAIN_CACHE: dict[str, Any] = {}


def _train_images(dataset: str = "mnist") -> torch.Tensor:
    """All 60,000 training images of MNIST (or Fashion-MNIST), uint8 ``(60000, 1, 28, 28)``, loaded once per process."""
    if dataset not in _TRAIN_CACHE:
        from .datasets import load_dataset

        _TRAIN_CACHE[dataset], _ = load_dataset(dataset, "train")
    return _TRAIN_CACHE[dataset]


@dataclass(frozen=True)
class Floor:
    """A score of real data against real data at the same N: mean and s.d. over ``draws`` draws."""

    mean: float
    std: float
    draws: int

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {self.std:.2g}"


_FLOOR_CACHE: dict[tuple, dict[str, Floor]] = {}


def real_data_floor(n: int, draws: int = 5, seed: int = 0, k: int = 3, extractor: ClassifierFeatures | None = None,
                    reference: ReferenceStats | None = None, train: torch.Tensor | None = None,
                    dataset: str = "mnist") -> dict[str, Floor]:
    """The scores of ``n`` real training digits against the test reference, ``draws`` times.

    Each draw takes ``n`` training digits at random (without replacement, seeded; the draws are
    disjoint) and computes FID, KID, precision and recall exactly as :func:`evaluate_images` does for
    samples. Returns ``{"fid", "kid", "precision", "recall"}`` -> :class:`Floor`. With the default
    reference and training set the result is cached per ``(n, draws, seed, k)`` within the process.

    Args:
        train: the real images to draw from (model-range floats or uint8); default the 60,000 MNIST
            training digits.
        dataset: ``"mnist"`` or ``"fashion-mnist"``: whose classifier, reference and training images are the defaults.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= k:
        raise ValueError(f"n must be an int > k = {k}, got {n!r}")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 2:
        raise ValueError(f"draws must be an int >= 2 (a standard deviation needs two), got {draws!r}")
    default = reference is None and train is None
    key = (n, draws, seed, k, dataset)
    if default and key in _FLOOR_CACHE:
        return _FLOOR_CACHE[key]
    reference = load_reference_stats(dataset=dataset) if reference is None else reference
    extractor = ClassifierFeatures(dataset=dataset) if extractor is None else extractor
    train = _train_images(dataset) if train is None else train
    if n * draws > train.shape[0]:
        raise ValueError(f"n * draws must be at most the {train.shape[0]} training images, got {n} * {draws}")
    order = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(seed))
    real = reference.features[_subset_indices(reference.n, n, seed)]
    scores: dict[str, list[float]] = {"fid": [], "kid": [], "precision": [], "recall": []}
    for draw in range(draws):
        f = features(train[order[draw * n : (draw + 1) * n]], extractor)  # (n, d)
        scores["fid"].append(fid_from_features(f, reference))
        scores["kid"].append(_kid_from_features(f, reference.features, KID_SUBSETS, seed + draw)[0])
        p, r = precision_recall(f, real, k)
        scores["precision"].append(p)
        scores["recall"].append(r)
    out = {name: Floor(float(torch.tensor(v, dtype=torch.float64).mean()), float(torch.tensor(v, dtype=torch.float64).std()), draws)
           for name, v in scores.items()}
    if default:
        _FLOOR_CACHE[key] = out
    return out


# ----------------------------------------------------------------------------- one record


@dataclass(frozen=True)
class Evaluation:
    """Every measure of one set of N images, each beside its real-data floor at the same N."""

    n: int  # images measured
    fid: float  # FID against the MNIST test set (classifier features), by torchmetrics
    fid_floor: Floor  # FID of n real training digits, several draws
    kid: float  # KID (mean over subsets), by torchmetrics
    kid_std: float  # its s.d. over the subsets
    kid_floor: Floor
    precision: float  # Kynkaanniemi et al. 2019, k = 3, against n test digits
    recall: float
    precision_floor: Floor
    recall_floor: Floor
    memorisation: Memorisation  # nearest-training-digit distances against held-out digits
    confident_fraction: float  # the classifier's max probability > 0.9 (chapter 8)
    class_counts: tuple[int, ...]  # predicted digits 0..9
    min_class_fraction: float
    nfe: int | None = None  # network evaluations per sample (None for images from elsewhere)
    sampling_seconds: float | None = None  # wall time of drawing the samples
    evaluation_seconds: float = 0.0  # wall time of measuring them
    sampler: dict = field(default_factory=dict)  # how the samples were drawn (sampler, steps, seed, ...)
    fid_inception: float | None = None  # Inception-v3 FID (torchmetrics' default): NOT comparable with `fid`
    features: str = "MNIST classifier penultimate layer (fc1, before its ReLU), 128-d"

    def to_dict(self) -> dict:
        """Plain Python values for JSON."""
        d = {k: v for k, v in asdict(self).items() if k != "memorisation"}
        d["memorisation"] = self.memorisation.to_dict()
        for name in ("fid_floor", "kid_floor", "precision_floor", "recall_floor"):
            d[name] = asdict(getattr(self, name))
        d["class_counts"] = list(self.class_counts)
        return d

    def __str__(self) -> str:
        m = self.memorisation
        lines = [
            f"N = {self.n}" + (f", {self.nfe} network evaluations per sample" if self.nfe is not None else "")
            + (f", drawn in {self.sampling_seconds:.1f} s" if self.sampling_seconds is not None else ""),
            f"FID        {self.fid:8.3f}   real-data floor {self.fid_floor}",
            f"KID        {self.kid:8.4g}   real-data floor {self.kid_floor}",
            f"precision  {self.precision:8.3f}   real-data floor {self.precision_floor}",
            f"recall     {self.recall:8.3f}   real-data floor {self.recall_floor}",
            f"confident  {self.confident_fraction:8.3f}   rarest digit {self.min_class_fraction:.3f}",
            f"nearest training digit: median {m.sample_median:.2f} (held-out digits {m.heldout_median:.2f})",
            f"copies     {m.flagged_fraction:8.3f}   flagged as near-copies (held-out digits: 0.01)",
        ]
        if self.fid_inception is not None:
            lines.append(f"Inception FID {self.fid_inception:.3f} (ImageNet features: not comparable with FID above)")
        return "\n".join(lines)


def evaluate_images(images: torch.Tensor, *, floor_draws: int = 5, k: int = 3, seed: int = 0, inception: bool = False,
                    nfe: int | None = None, sampling_seconds: float | None = None, sampler: dict | None = None,
                    dataset: str = "mnist") -> Evaluation:
    """Measure already-drawn images: FID, KID, precision/recall (each with its floor), memorisation, quality.

    Args:
        images: ``(N, 1, 28, 28)`` model-range floats (about [-1, 1]; clipped) or uint8 pixels, N >= 4.
        floor_draws: draws of N real training digits behind each floor.
        k: the neighbourhood size of precision/recall (Kynkaanniemi et al. use 3).
        seed: seeds KID's subsets, the floor's draws and the real subset of precision/recall.
        inception: also compute torchmetrics' Inception-v3 FID against the test set (downloads the
            Inception weights on first use; needs ``torch-fidelity``). Not comparable with ``fid``.
        nfe, sampling_seconds, sampler: how the images were drawn, copied into the record.
        dataset: ``"mnist"`` or ``"fashion-mnist"``: the classifier, test-set reference and training set to use.
    """
    start = time.perf_counter()
    images = _as_model_range(images)
    n = images.shape[0]
    if n <= k:
        raise ValueError(f"images: need more than k = {k} images, got {n}")
    extractor = ClassifierFeatures(dataset=dataset)
    reference = load_reference_stats(dataset=dataset)
    fake = features(images, extractor)
    fid_value = fid(images, extractor, reference)
    kid_mean, kid_std = _kid_from_features(fake, reference.features, KID_SUBSETS, seed)
    precision, recall = precision_recall(fake, reference.features[_subset_indices(reference.n, n, seed)], k)
    floor = real_data_floor(n, floor_draws, seed, k, extractor, dataset=dataset)
    quality = sample_quality(images, extractor.classifier)
    fid_inc = inception_fid(images) if inception else None
    return Evaluation(
        n=n, fid=fid_value, fid_floor=floor["fid"], kid=kid_mean, kid_std=kid_std, kid_floor=floor["kid"],
        precision=precision, recall=recall, precision_floor=floor["precision"], recall_floor=floor["recall"],
        memorisation=memorisation(images, dataset=dataset), confident_fraction=quality.confident_fraction,
        class_counts=quality.counts, min_class_fraction=quality.min_class_fraction, nfe=nfe,
        sampling_seconds=sampling_seconds, evaluation_seconds=time.perf_counter() - start,
        sampler=dict(sampler or {}), fid_inception=fid_inc,
        **({} if dataset == "mnist" else {"features": f"{dataset} classifier penultimate layer (fc1, before its ReLU), "
                                                      f"{extractor.num_features}-d"}),
    )


def evaluate(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], schedule, n: int = 1000,
             generator: torch.Generator | None = None, batch_size: int | None = None, *, floor_draws: int = 5,
             inception: bool = False, progress: bool = True, dataset: str = "mnist", **sample_kwargs: Any) -> Evaluation:
    """Draw ``n`` samples with :func:`ddpm_tutor.sample` and measure them with :func:`evaluate_images`.

    Args:
        model, schedule: the trained network ``model(xt, t) -> eps_hat`` and its noise schedule.
        n: number of samples (the floors are taken at the same n).
        generator: the sampler's generator (seed it for a reproducible record).
        batch_size: passed to ``sample`` (draw the n samples this many at a time).
        floor_draws, inception, dataset: see :func:`evaluate_images`.
        **sample_kwargs: passed to ``sample`` unchanged (e.g. ``variance``, or a sampler and its
            number of steps where ``sample`` offers them); recorded in ``sampler``.

    The record's ``nfe`` counts the network's calls per sample: calls of ``model`` divided by the
    number of batches.
    """
    from .sampling import sample

    if isinstance(n, bool) or not isinstance(n, int) or n < 4:
        raise ValueError(f"n must be an int >= 4, got {n!r}")
    if isinstance(floor_draws, bool) or not isinstance(floor_draws, int) or floor_draws < 2:  # checked before sampling
        raise ValueError(f"floor_draws must be an int >= 2 (a standard deviation needs two), got {floor_draws!r}")
    if n * floor_draws > 60000:
        raise ValueError(f"n * floor_draws must be at most the 60000 training digits, got {n} * {floor_draws}")
    calls = [0]

    def counted(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return model(xt, t)

    if isinstance(model, nn.Module):  # a hook keeps the module itself (its device, .eval(), attributes) in sample
        handle = model.register_forward_pre_hook(lambda module, inputs: calls.__setitem__(0, calls[0] + 1))
        net = model
    else:
        handle, net = None, counted
    config = getattr(model, "config", None)
    shape = (n, getattr(config, "in_channels", 1), getattr(config, "image_size", 28), getattr(config, "image_size", 28))
    start = time.perf_counter()
    try:
        images = sample(net, schedule, shape, generator=generator, batch_size=batch_size, progress=progress, **sample_kwargs)
    finally:
        if handle is not None:
            handle.remove()
    seconds = time.perf_counter() - start
    images = images.cpu()  # the measures run on the CPU, beside the training set
    batches = math.ceil(n / batch_size) if batch_size else 1
    record = {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)) for k, v in sample_kwargs.items()}
    record["batch_size"] = batch_size
    if generator is not None:
        record["generator_initial_seed"] = generator.initial_seed()
    return evaluate_images(images, floor_draws=floor_draws, inception=inception, nfe=calls[0] // batches,
                           sampling_seconds=seconds, sampler=record, dataset=dataset)


# ----------------------------------------------------------------------------- Inception FID (optional)


def inception_fid(images: torch.Tensor, real: torch.Tensor | None = None, batch_size: int = 250) -> float:
    """FID with torchmetrics' default Inception-v3 features (2048-d), MNIST test set as the real side.

    For readers online (e.g. on Colab): torchmetrics needs ``torch-fidelity`` and downloads the
    Inception weights on first use; grey digits are repeated into 3 channels and torchmetrics resizes
    them to 299 x 299. These numbers use ImageNet features and are **not comparable** with
    :func:`fid` (MNIST-classifier features), nor with published MNIST FIDs computed another way.

    Raises:
        RuntimeError: with what to install or fetch, when the Inception network is unavailable.
    """
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance

        metric = FrechetInceptionDistance(feature=2048, normalize=True)
    except Exception as err:  # ModuleNotFoundError (torch-fidelity) or a failed download of the weights
        raise RuntimeError(
            "inception=True needs torchmetrics' Inception-v3 feature extractor, which is unavailable here "
            f"({type(err).__name__}: {err}). Install it with `pip install torch-fidelity` on a machine that can "
            "download the Inception weights (e.g. Colab), or leave inception=False: the MNIST-feature FID "
            "needs no download."
        ) from err
    if real is None:
        from .data import load_mnist

        real, _ = load_mnist("test")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    metric = metric.to(device)

    def rgb01(x: torch.Tensor) -> torch.Tensor:  # (N, 3, 28, 28) float in [0, 1], as normalize=True expects
        return ((_as_model_range(x) + 1.0) / 2.0).repeat(1, 3, 1, 1)

    for chunk in _as_model_range(real).split(batch_size):
        metric.update(rgb01(chunk).to(device), real=True)
    for chunk in _as_model_range(images).split(batch_size):
        metric.update(rgb01(chunk).to(device), real=False)
    return float(metric.compute())
