"""Tests for ddpm_tutor.metrics: the shipped classifier and the sample-quality measures."""

from __future__ import annotations

import json
import os
import shutil

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from ddpm_tutor import metrics
from ddpm_tutor.metrics import MNISTClassifier, SampleQuality, load_classifier, sample_quality

REAL_ROOT = os.environ.get("DDPM_TUTOR_DATA")


@pytest.fixture(scope="module")
def classifier():
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return load_classifier()


def test_shipped_weights_small_and_recorded():
    assert metrics.WEIGHTS_PATH.stat().st_size < 1_000_000
    meta = json.loads(metrics.META_PATH.read_text())
    for key in ("sha256", "architecture", "test_accuracy", "command", "torch_version", "seed"):
        assert key in meta
    assert meta["test_accuracy"] >= 0.99
    assert "scripts/train_classifier.py" in meta["command"]


def test_load_classifier_eval_mode_and_architecture(classifier):
    assert isinstance(classifier, MNISTClassifier) and not classifier.training
    meta = json.loads(metrics.META_PATH.read_text())
    assert classifier.config == meta["architecture"]
    assert sum(p.numel() for p in classifier.parameters()) == meta["parameters"]


def test_tampered_weights_rejected(tmp_path):
    pt, js = tmp_path / "mnist_classifier.pt", tmp_path / "mnist_classifier.json"
    shutil.copy(metrics.WEIGHTS_PATH, pt)
    shutil.copy(metrics.META_PATH, js)
    load_classifier(path=pt)  # an exact copy loads
    state = torch.load(pt, weights_only=True)
    state["fc2.bias"] += 1.0  # a valid checkpoint, but not the recorded one
    torch.save(state, pt)
    with pytest.raises(ValueError) as exc:
        load_classifier(path=pt)
    msg = str(exc.value)
    assert str(pt) in msg and "sha256" in msg and "train_classifier.py" in msg
    assert json.loads(js.read_text())["sha256"] in msg


def test_missing_weights_file(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_classifier(path=tmp_path / "nothing.pt")


def test_forward_shape_check(classifier):
    assert classifier(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        classifier(torch.zeros(3, 28, 28))


def test_gaussian_noise_is_not_confident(classifier):
    g = torch.Generator().manual_seed(123)
    noise = torch.randn(500, 1, 28, 28, generator=g)
    q = sample_quality(noise, classifier)
    assert q.confident_fraction < 0.05, q
    assert not q.passes()
    uniform = sample_quality(2 * torch.rand(500, 1, 28, 28, generator=g) - 1, classifier)
    assert uniform.confident_fraction < 0.05, uniform


def test_histogram_sums_and_fields(classifier):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(37, 1, 28, 28, generator=g) * 2 - 1
    q = sample_quality(images, classifier, threshold=0.5, batch_size=10)  # several chunks
    assert isinstance(q, SampleQuality)
    assert q.n == 37 and len(q.counts) == 10 and sum(q.counts) == 37
    assert len(q.fractions) == 10 and abs(sum(q.fractions) - 1.0) < 1e-12
    assert q.min_class_fraction == min(q.fractions)
    assert q.predictions.shape == (37,) and q.max_probs.shape == (37,)
    assert torch.equal(torch.bincount(q.predictions, minlength=10), torch.tensor(q.counts))
    assert q.confident_fraction == pytest.approx(float((q.max_probs > 0.5).float().mean()))
    assert q.threshold == 0.5 and "n=37" in str(q)


def test_passes_logic():
    def result(confident, fractions):
        return SampleQuality(
            n=100, threshold=0.9, confident_fraction=confident, counts=tuple(int(f * 100) for f in fractions),
            fractions=tuple(fractions), min_class_fraction=min(fractions),
            predictions=torch.zeros(100, dtype=torch.long), max_probs=torch.ones(100),
        )

    uniform = [0.1] * 10
    collapsed = [0.5, 0.5] + [0.0] * 8
    assert result(0.95, uniform).passes()
    assert not result(0.85, uniform).passes()
    assert result(0.85, uniform).passes(target_confident=0.8)
    assert not result(0.99, collapsed).passes()  # sharp but mode-collapsed
    assert result(0.99, collapsed).passes(min_class_fraction=0.0)


def test_uint8_and_float_inputs_agree(classifier):
    pixels = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    a = sample_quality(pixels, classifier)
    b = sample_quality(pixels.float().unsqueeze(1) / 127.5 - 1, classifier)
    assert torch.equal(a.predictions, b.predictions)


def test_out_of_range_values_are_clipped(classifier):
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    a = sample_quality(3 * x, classifier)
    b = sample_quality((3 * x).clamp(-1, 1), classifier)
    assert torch.equal(a.max_probs, b.max_probs)


def test_sample_quality_argument_checks(classifier):
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        sample_quality(torch.zeros(4, 3, 28, 28), classifier)
    with pytest.raises(ValueError, match=r"N >= 1"):
        sample_quality(torch.zeros(0, 1, 28, 28), classifier)
    with pytest.raises(TypeError, match="uint8"):
        sample_quality(torch.zeros(4, 1, 28, 28, dtype=torch.int32), classifier)
    with pytest.raises(ValueError, match="threshold"):
        sample_quality(torch.zeros(4, 1, 28, 28), classifier, threshold=1.0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        sample_quality([[0.0]], classifier)


def test_default_classifier_is_loaded():
    q = sample_quality(torch.full((2, 1, 28, 28), -1.0))
    assert q.n == 2


def test_plot_class_histogram(classifier):
    import matplotlib.pyplot as plt

    q = sample_quality(torch.randn(20, 1, 28, 28, generator=torch.Generator().manual_seed(3)), classifier)
    ax = metrics.plot_class_histogram(q)
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx(list(q.fractions))
    assert [line.get_ydata()[0] for line in ax.get_lines()] == [0.1]  # the uniform share, no bar to clear
    plt.close(ax.figure)
    ax = metrics.plot_class_histogram(q, min_class_fraction=0.05)
    assert [line.get_ydata()[0] for line in ax.get_lines()] == [0.1, 0.05]
    from matplotlib.colors import to_rgba

    red = [p.get_facecolor() == to_rgba("tab:red") for p in ax.patches]
    assert red == [f < 0.05 for f in q.fractions]
    plt.close(ax.figure)
    with pytest.raises(TypeError, match="SampleQuality"):
        metrics.plot_class_histogram({"counts": [1] * 10})


@pytest.mark.skipif(not REAL_ROOT, reason="set DDPM_TUTOR_DATA to the folder holding the real MNIST files")
def test_real_test_digits(classifier):
    from ddpm_tutor.data import load_mnist, to_model_range

    images, labels = load_mnist("test", root=REAL_ROOT, download=False)
    images, labels = images[:2000], labels[:2000]
    x0 = to_model_range(images)
    with torch.no_grad():
        acc = float((classifier(x0).argmax(1) == labels).float().mean())
    assert acc >= 0.985, acc
    q = sample_quality(images, classifier)  # uint8 input path
    assert q.confident_fraction >= 0.9 and q.min_class_fraction >= 0.05 and q.passes(), q
    assert torch.equal(q.predictions, classifier(x0).argmax(1))
    # collapse onto one digit fails the histogram check although each image is sharp
    ones = sample_quality(images[labels == 1], classifier)
    assert ones.confident_fraction >= 0.9 and ones.min_class_fraction < 0.05 and not ones.passes()
    # the metric degrades with leftover noise: xt = sqrt(a) x0 + sqrt(1 - a) eps (Ho et al. eq. 4)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4))
    noisy = sample_quality(0.5**0.5 * x0 + 0.5**0.5 * eps, classifier)
    assert noisy.confident_fraction < q.confident_fraction - 0.5, (noisy, q)


# ----------------------------------------------------------------------------- the Fashion-MNIST classifier


def test_fashion_classifier_shipped_and_recorded():
    path = metrics.classifier_path("fashion-mnist")
    assert path.name == "fashion_mnist_classifier.pt" and path.stat().st_size < 1_000_000
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["dataset"] == "fashion-mnist" and "--dataset fashion-mnist" in meta["command"]
    assert meta["test_accuracy"] >= 0.85
    with pytest.raises(ValueError, match="dataset='cifar10' has no shipped classifier.*Inception FID"):
        metrics.classifier_path("cifar10")


@pytest.mark.skipif(not REAL_ROOT, reason="set DDPM_TUTOR_DATA to the folder holding the real data")
def test_each_dataset_is_judged_by_its_own_classifier():
    """sample_quality(dataset=...) picks the classifier: the Fashion one classifies clothes, the MNIST one does not."""
    from ddpm_tutor.datasets import load_dataset

    try:
        images, labels = load_dataset("fashion-mnist", "test", root=REAL_ROOT, download=False)
    except ValueError as err:
        pytest.skip(f"needs the Fashion-MNIST test set: {err}")
    images, labels = images[:2000], labels[:2000]
    fashion = sample_quality(images, dataset="fashion-mnist")
    digits = sample_quality(images)  # the default: MNIST's classifier
    assert float((fashion.predictions == labels).double().mean()) >= 0.85
    assert float((digits.predictions == labels).double().mean()) < 0.5
    meta = json.loads(metrics.classifier_path("fashion-mnist").with_suffix(".json").read_text())
    assert fashion.confident_fraction == pytest.approx(meta["reference"]["fashion_mnist_test_confident_fraction"], abs=0.05)
