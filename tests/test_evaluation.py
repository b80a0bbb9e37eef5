"""Tests for ddpm_tutor.evaluation: FID/KID through torchmetrics, floors, precision/recall, memorisation."""

from __future__ import annotations

import json
import math
import os
import shutil

import pytest
import torch
import torch.nn.functional as F

from ddpm_tutor import evaluation as ev

REAL_ROOT = os.environ.get("DDPM_TUTOR_DATA")
needs_mnist = pytest.mark.skipif(not REAL_ROOT, reason="set DDPM_TUTOR_DATA to the folder holding the real MNIST files")


@pytest.fixture(scope="module")
def extractor():
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return ev.ClassifierFeatures()


@pytest.fixture(scope="module")
def reference():
    return ev.load_reference_stats()


def blobs(n: int, seed: int) -> torch.Tensor:
    """``n`` smooth random images in [-1, 1], (n, 1, 28, 28): something for the classifier to look at."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.randn(n, 1, 7, 7, generator=g), size=28, mode="bilinear")
    return x.clamp(-1, 1)


def random_cov(d: int, g: torch.Generator) -> torch.Tensor:
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


# ----------------------------------------------------------------------------- the feature map and the reference


def test_features_are_the_classifier_penultimate_layer(extractor):
    x = blobs(16, 0)
    f = extractor(x)
    assert f.shape == (16, 128) and f.dtype == torch.float64 and (f < 0).any()  # before fc1's ReLU
    c = extractor.classifier
    # the classifier's own logits are its last layer applied to the ReLU of these features
    torch.testing.assert_close(c.fc2(F.relu(f.float())), c(x), rtol=1e-5, atol=1e-5)
    # uint8 pixels give the features of their model-range floats
    pixels = ((x + 1) * 127.5).round().to(torch.uint8)
    torch.testing.assert_close(extractor(pixels), extractor(pixels.float() / 127.5 - 1.0))


def test_shipped_reference_consistent(reference):
    meta = json.loads(ev.STATS_META_PATH.read_text())
    assert ev.STATS_PATH.stat().st_size < 3_000_000
    assert "scripts/mnist_feature_stats.py" in meta["command"]
    assert reference.features.shape == (10000, 128) and reference.labels.shape == (10000,)
    assert torch.bincount(reference.labels).tolist()[1] == 1135  # MNIST test set: 1,135 ones
    # the statistics are those of the stored features
    torch.testing.assert_close(reference.mean, reference.features.mean(0), rtol=0, atol=1e-10)
    torch.testing.assert_close(reference.cov, torch.cov(reference.features.T), rtol=0, atol=1e-9)


def test_tampered_reference_refused(tmp_path):
    pt, js = tmp_path / "stats.pt", tmp_path / "stats.json"
    shutil.copy(ev.STATS_PATH, pt)
    shutil.copy(ev.STATS_META_PATH, js)
    ev.load_reference_stats(pt)  # an exact copy loads
    stats = torch.load(pt, weights_only=True)
    stats["mean"][0] += 1.0  # a valid file, but not the recorded one
    torch.save(stats, pt)
    with pytest.raises(ValueError, match="sha256.*mnist_feature_stats.py"):
        ev.load_reference_stats(pt)
    shutil.copy(ev.STATS_PATH, pt)
    meta = json.loads(js.read_text())
    meta["classifier_sha256"] = "0" * 64  # made with another classifier
    js.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="stale"):
        ev.load_reference_stats(pt)
    with pytest.raises(ValueError, match="not found"):
        ev.load_reference_stats(tmp_path / "missing.pt")


# ----------------------------------------------------------------------------- FID


def test_fid_from_scratch_equals_torchmetrics(extractor, reference):
    x = blobs(300, 1)
    f = ev.features(x, extractor)
    by_hand = ev.frechet_distance(reference.mean, reference.cov, f.mean(0), torch.cov(f.T))
    by_torchmetrics = ev.fid(x, extractor, reference)  # its real side filled from the shipped sums
    assert by_torchmetrics > 1.0
    assert abs(by_hand - by_torchmetrics) <= 1e-6 * by_torchmetrics
    assert abs(ev.fid_from_features(f, reference) - by_torchmetrics) <= 1e-6 * by_torchmetrics


def test_frechet_distance_closed_forms():
    g = torch.Generator().manual_seed(0)
    d = 12
    mu, cov = torch.randn(d, generator=g, dtype=torch.float64), random_cov(d, g)
    assert abs(ev.frechet_distance(mu, cov, mu, cov)) < 1e-9  # a set against itself
    delta = torch.randn(d, generator=g, dtype=torch.float64)
    # a shift of the mean adds exactly its squared length, growing with it
    for scale in (0.5, 1.0, 2.0):
        assert ev.frechet_distance(mu, cov, mu + scale * delta, cov) == pytest.approx(scale**2 * float(delta @ delta), rel=1e-9)
    # isotropic Gaussians: FID = ||mu1 - mu2||^2 + d (a - b)^2
    eye = torch.eye(d, dtype=torch.float64)
    assert ev.frechet_distance(mu, 4.0 * eye, mu, 9.0 * eye) == pytest.approx(d * (2.0 - 3.0) ** 2, rel=1e-9)
    # non-commuting covariances: the symmetric route agrees with torchmetrics' eigenvalues of cov1 cov2
    from torchmetrics.image.fid import _compute_fid

    cov2 = random_cov(d, g)
    assert ev.frechet_distance(mu, cov, mu + delta, cov2) == pytest.approx(float(_compute_fid(mu, cov, mu + delta, cov2)), rel=1e-9)
    # and Tr((cov1 cov2)^(1/2)) is not Tr(cov1^(1/2) cov2^(1/2)) (a plausible wrong formula)
    wrong = float(delta @ delta + cov.trace() + cov2.trace() - 2 * (ev._psd_sqrt(cov) @ ev._psd_sqrt(cov2)).trace())
    assert abs(wrong - ev.frechet_distance(mu, cov, mu + delta, cov2)) > 1e-3


# ----------------------------------------------------------------------------- KID


def test_kid_is_torchmetrics_unbiased_mmd():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(60, 8, generator=g, dtype=torch.float64)
    fake = 0.5 + torch.randn(60, 8, generator=g, dtype=torch.float64)
    mean, std = ev._kid_from_features(fake, real, subsets=1, seed=0)  # one subset of all 60: no sampling

    def k(a, b):
        return (a @ b.T / a.shape[1] + 1.0) ** 3

    m = real.shape[0]
    off = lambda K: (K.sum() - K.diagonal().sum()) / (m * (m - 1))  # noqa: E731 (unbiased: no i = j terms)
    by_hand = off(k(real, real)) + off(k(fake, fake)) - 2 * k(real, fake).mean()
    assert mean == pytest.approx(float(by_hand), rel=1e-9)
    # unbiased: another draw of the same distribution scores near 0 (either sign), the shifted set does not
    other = torch.randn(60, 8, generator=g, dtype=torch.float64)
    same, _ = ev._kid_from_features(other, real, subsets=1, seed=0)
    assert abs(same) < 0.2 * mean


# ----------------------------------------------------------------------------- precision and recall


def clusters(n: int, centres: torch.Tensor, g: torch.Generator, only: int | None = None) -> torch.Tensor:
    """``n`` points around the given well-separated centres (or around one of them)."""
    which = torch.full((n,), only) if only is not None else torch.randint(0, len(centres), (n,), generator=g)
    return centres[which] + 0.3 * torch.randn(n, centres.shape[1], generator=g, dtype=torch.float64)


def test_precision_recall_on_broken_sets():
    g = torch.Generator().manual_seed(0)
    centres = 5.0 * torch.randn(10, 4, generator=g, dtype=torch.float64)
    real = clusters(400, centres, g)
    good = clusters(400, centres, g)  # another draw of the same distribution
    p, r = ev.precision_recall(good, real)
    assert p > 0.8 and r > 0.8
    ones = clusters(400, centres, g, only=1)  # every sample the same "digit": realistic, no coverage
    p, r = ev.precision_recall(ones, real)
    assert p > 0.85 and r < 0.2
    noise = 3.0 * torch.randn(400, 4, generator=g, dtype=torch.float64)  # nothing like the data
    p, _ = ev.precision_recall(noise, real)
    assert p < 0.05
    with pytest.raises(ValueError, match="k must"):
        ev.precision_recall(good[:3], real, k=3)


def test_precision_recall_radius_is_kth_other_neighbour():
    pts = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    # k = 1: the nearest *other* point (not the point itself at distance 0)
    assert ev._kth_neighbour_radii(pts, 1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert ev._kth_neighbour_radii(pts, 2).tolist() == [3.0, 2.0, 3.0, 6.0]


# ----------------------------------------------------------------------------- memorisation


def test_memorisation_flags_copied_training_digits():
    g = torch.Generator().manual_seed(0)
    pool = blobs(1300, 2)
    train, heldout, new = pool[:1000], pool[1000:1200], pool[1200:]
    copies = train[torch.randperm(1000, generator=g)[:100]]
    m = ev.memorisation(copies, train=train, heldout=heldout)
    assert m.flagged_fraction == 1.0 and m.sample_median < 0.05  # exact copies: distance 0 up to float32 rounding
    assert m.heldout_median > 1.0 and m.threshold == pytest.approx(float(torch.quantile(m.heldout_distances, 0.01)))
    fresh = ev.memorisation(new, train=train, heldout=heldout)
    assert fresh.flagged_fraction < 0.1 and fresh.sample_median > 0.8 * fresh.heldout_median
    # a copy with a little noise is still flagged
    noisy = (copies + 0.02 * torch.randn(copies.shape, generator=g)).clamp(-1, 1)
    assert ev.memorisation(noisy, train=train, heldout=heldout).flagged_fraction > 0.9


def test_nearest_matches_cdist():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(30, 20, generator=g), torch.randn(50, 20, generator=g)
    d, i = ev._nearest(a, b, chunk=7)
    full = torch.cdist(a, b)
    assert torch.equal(i, full.argmin(1))
    torch.testing.assert_close(d, full.min(1).values, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- floors and the record


def test_real_data_floor_draws_and_bias(extractor, reference):
    pool = blobs(400, 3)
    small = ev.real_data_floor(20, draws=4, extractor=extractor, reference=reference, train=pool)
    large = ev.real_data_floor(100, draws=4, extractor=extractor, reference=reference, train=pool)
    assert set(small) == {"fid", "kid", "precision", "recall"}
    assert small["fid"].draws == 4 and small["fid"].std > 0
    # FID is biased upwards at small N (the same images, fewer of them); KID is not
    assert small["fid"].mean > large["fid"].mean
    with pytest.raises(ValueError, match="n \\* draws"):
        ev.real_data_floor(200, draws=4, extractor=extractor, reference=reference, train=pool)
    with pytest.raises(ValueError, match="draws"):
        ev.real_data_floor(20, draws=1, extractor=extractor, reference=reference, train=pool)


def test_evaluate_counts_network_calls_and_passes_sampler_kwargs(monkeypatch):
    import ddpm_tutor as dt

    pool = blobs(600, 4)
    monkeypatch.setattr(ev, "_train_images", lambda dataset="mnist": pool)  # a small "training set" keeps the test fast
    monkeypatch.setattr(ev, "_FLOOR_CACHE", {})
    monkeypatch.setattr(ev, "_HELDOUT_CACHE", {"default": torch.rand(1000) + 1.0})
    schedule = dt.linear_schedule(12)
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, xt, t):
            return self.conv(xt)

    net = Net()
    seen = {}

    def fake_sample(model, schedule_, shape, generator=None, batch_size=None, progress=True, **kwargs):
        seen.update(kwargs, shape=shape)
        b = batch_size or shape[0]
        for start in range(0, shape[0], b):  # one network call per step and batch, as a sampler makes
            for step in range(schedule_.T - 1, -1, -1):
                model(torch.zeros(min(b, shape[0] - start), *shape[1:]), torch.full((1,), step))
        return pool[:shape[0]]

    monkeypatch.setattr(dt.sampling, "sample", fake_sample)
    record = ev.evaluate(net, schedule, n=40, batch_size=16, floor_draws=2, progress=False, variance="beta")
    assert seen["variance"] == "beta" and seen["shape"] == (40, 1, 28, 28)
    assert record.nfe == 12 and record.n == 40 and record.sampler["variance"] == "beta"
    d = record.to_dict()
    json.dumps(d)  # plain values only
    assert d["fid_floor"]["draws"] == 2 and math.isfinite(d["fid"]) and len(d["class_counts"]) == 10
    # a plain function as the model is counted too
    record = ev.evaluate(lambda xt, t: net(xt, t), schedule, n=40, floor_draws=2, progress=False)
    assert record.nfe == 12


def test_evaluate_real_sampler_smoke(monkeypatch):
    """The real dt.sample, with a network that predicts zero noise, runs through evaluate."""
    import ddpm_tutor as dt

    pool = blobs(200, 5)
    monkeypatch.setattr(ev, "_train_images", lambda dataset="mnist": pool)
    monkeypatch.setattr(ev, "_FLOOR_CACHE", {})
    monkeypatch.setattr(ev, "_HELDOUT_CACHE", {"default": torch.rand(1000) + 1.0})
    record = ev.evaluate(lambda xt, t: torch.zeros_like(xt), dt.linear_schedule(5), n=16,
                         generator=torch.Generator().manual_seed(0), floor_draws=2, progress=False)
    assert record.nfe == 5 and record.sampling_seconds >= 0 and record.sampler["generator_initial_seed"] == 0


def test_bad_input_named():
    with pytest.raises(ValueError, match="images must have shape"):
        ev.features(torch.zeros(4, 3, 28, 28))
    with pytest.raises(TypeError, match="images must be float"):
        ev.features(torch.zeros(4, 1, 28, 28, dtype=torch.int32))
    with pytest.raises(ValueError, match="n must be"):
        ev.evaluate(lambda xt, t: xt, None, n=2)
    with pytest.raises(ValueError, match="need more than k"):
        ev.evaluate_images(blobs(3, 0))


def test_inception_refused_with_a_clear_message():
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="torch-fidelity.*inception=False"):
            ev.inception_fid(blobs(4, 0))
    else:
        pytest.skip("torch-fidelity is installed; the refusal path is not reachable here")


@needs_mnist
def test_real_digits_against_the_reference(extractor, reference):
    from ddpm_tutor.data import load_mnist

    images, labels = load_mnist("train", root=REAL_ROOT, download=False)
    idx = ev._subset_indices(60000, 500, seed=1)
    f_real = ev.features(images[idx], extractor)
    f_ones = ev.features(images[labels == 1][:500], extractor)
    real = reference.features[ev._subset_indices(reference.n, 500)]
    p, r = ev.precision_recall(f_real, real)
    assert p > 0.7 and r > 0.7
    p, r = ev.precision_recall(f_ones, real)  # only ones: realistic, but a tenth of the data
    assert p > 0.7 and r < 0.3
    noise = torch.randn(500, 1, 28, 28, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    p, r = ev.precision_recall(ev.features(noise, extractor), real)  # nothing like a digit
    assert p < 0.05 and r < 0.05
    # real digits score far closer to the test set than blurred ones
    blurred = F.avg_pool2d(images[idx].float().unsqueeze(1) / 127.5 - 1, 5, stride=1, padding=2)
    assert ev.fid_from_features(f_real, reference) * 5 < ev.fid(blurred, extractor, reference)


# ----------------------------------------------------------------------------- the command line


def test_cli_evaluate_writes_json(monkeypatch, tmp_path, capsys):
    import ddpm_tutor as dt
    from ddpm_tutor.__main__ import main

    pool = blobs(200, 6)
    monkeypatch.setattr(ev, "_train_images", lambda dataset="mnist": pool)
    monkeypatch.setattr(ev, "_FLOOR_CACHE", {})
    monkeypatch.setattr(ev, "_HELDOUT_CACHE", {"default": torch.rand(1000) + 1.0})

    def fake_sample(model, schedule, shape, generator=None, batch_size=None, progress=True, variance=None,
                    sampler="ddpm", steps=None, eta=0.0):
        for step in (2, 1, 0):  # three network calls
            model(torch.zeros(shape), torch.full((shape[0],), step))
        return pool[: shape[0]]

    monkeypatch.setattr(dt.sampling, "sample", fake_sample)
    out = tmp_path / "eval.json"
    with pytest.raises(SystemExit, match="does not exist"):
        main(["evaluate", "--checkpoint", "pretrained", "--json", str(tmp_path / "no" / "eval.json")])
    main(["evaluate", "--checkpoint", "pretrained", "--n", "16", "--floor-draws", "2", "--variance", "beta",
          "--device", "cpu", "--json", str(out)])
    record = json.loads(out.read_text())
    assert record["n"] == 16 and record["nfe"] == 3 and record["sampler"]["variance"] == "beta"
    assert record["checkpoint"] == "pretrained" and record["fid_floor"]["draws"] == 2
    assert record["command"].startswith("python -m ddpm_tutor evaluate --checkpoint pretrained")
    assert "real-data floor" in capsys.readouterr().out
    main(["evaluate", "--checkpoint", "pretrained", "--n", "16", "--floor-draws", "2", "--sampler", "ddim",
          "--steps", "3", "--device", "cpu", "--json", str(out)])  # the sampler's options reach sample()
    assert {k: json.loads(out.read_text())["sampler"][k] for k in ("sampler", "steps")} == {"sampler": "ddim", "steps": 3}
