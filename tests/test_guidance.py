"""Class-conditional U-Net, label dropout and classifier-free guidance (tiny configurations, seconds)."""

import json
import os
from dataclasses import replace

import pytest
import torch

import ddpm_tutor as dt
from ddpm_tutor import checkpoints as ck, config as cfg, training as tr
from ddpm_tutor.__main__ import main
from ddpm_tutor.guidance import combine, guided
from ddpm_tutor.unet import UNet, UNetConfig

COND_UNET = UNetConfig(channels=(8, 16), num_res_blocks=(1, 1), time_embed_dim=16, attention_heads=2, norm_groups=4,
                       T=50, num_classes=10)
COND = cfg.TrainConfig(
    profile="tiny", steps=4, batch_size=8, lr=2e-3, warmup_steps=1, ema_decay=0.5, T=50, log_every=2,
    checkpoint_every=2, sample_every=0, channels_last=False, unet=COND_UNET,
)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return torch.rand(40, 1, 28, 28, generator=g) * 2 - 1, torch.arange(40) % 10


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = UNet(COND_UNET).eval()
    with torch.no_grad():  # an untrained network predicts 0 (zero output conv) and ignores c: give both weight
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m


def _inputs(b=4):
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, 1, 28, 28, generator=g), torch.randint(0, 50, (b,), generator=g), torch.tensor([3, 1, 4, 1])[:b]


# ----------------------------------------------------------------------------- the network


def test_labels_change_the_prediction_and_none_means_no_label(model):
    xt, t, c = _inputs()
    with torch.no_grad():
        eps_c, eps_none = model(xt, t, c), model(xt, t)
        eps_null = model(xt, t, torch.full_like(c, 10))
        other = model(xt, t, (c + 1) % 10)
    assert torch.equal(eps_none, eps_null)  # labels=None is the "no label" index num_classes
    assert not torch.allclose(eps_c, eps_null, atol=1e-4) and not torch.allclose(eps_c, other, atol=1e-4)


def test_unconditional_network_is_unchanged():
    """Same parameters, same state_dict keys and config dict as before num_classes existed."""
    cfg = replace(COND_UNET, num_classes=None)
    assert "num_classes" not in cfg.to_dict() and UNetConfig.from_dict(cfg.to_dict()) == cfg
    torch.manual_seed(0)
    plain = UNet(cfg)
    torch.manual_seed(0)
    cond = UNet(COND_UNET)
    assert set(cond.state_dict()) - set(plain.state_dict()) == {"class_embed.weight"}
    for k, v in plain.state_dict().items():  # built last: with the same seed every other weight is the same
        assert torch.equal(v, cond.state_dict()[k]), k
    assert cond.class_embed.weight.shape == (11, 16)  # ten digits and "no label"
    with pytest.raises(ValueError, match="unconditional U-Net.*labels=None"):
        plain(torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))


def test_shipped_unconditional_checkpoint_loads_as_before():
    ckpt = torch.load(ck.PRETRAINED, weights_only=True)
    assert "num_classes" not in ckpt["train_config"]["unet"] and "label_dropout" not in ckpt["train_config"]
    model, _ = dt.load_pretrained()
    assert model.config.num_classes is None and set(model.state_dict()) == set(ckpt["ema"])
    m2, _ = dt.load_pretrained("mnist")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), m2.state_dict().values()))


def test_bad_labels_are_refused(model):
    xt, t, _ = _inputs()
    with pytest.raises(TypeError, match="labels must be .*torch.long"):
        model(xt, t, torch.zeros(4))
    with pytest.raises(ValueError, match=r"labels must have shape \(B,\) = \(4,\)"):
        model(xt, t, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must lie in 0..10 .*'no label'"):
        model(xt, t, torch.tensor([0, 1, 2, 11]))
    with pytest.raises(ValueError, match="UNetConfig.num_classes"):
        replace(COND_UNET, num_classes=0)


# ----------------------------------------------------------------------------- guidance


def test_guidance_scale_zero_and_one_and_the_formula(model):
    xt, t, c = _inputs()
    with torch.no_grad():
        eps_c, eps_u = model(xt, t, c), model(xt, t, torch.full_like(c, 10))
        assert torch.allclose(guided(model, c, 0.0)(xt, t), eps_u, atol=1e-6)  # s = 0: unconditional
        assert torch.allclose(guided(model, c, 1.0)(xt, t), eps_c, atol=1e-6)  # s = 1: conditional
        for s in (0.5, 3.0):
            want = eps_u + s * (eps_c - eps_u)
            assert torch.allclose(guided(model, c, s)(xt, t), want, atol=1e-5)
            assert not torch.allclose(guided(model, c, s)(xt, t), (1 + s) * eps_c - s * eps_u, atol=1e-4)
    # the pure formula, also at s = 0 and s = 1
    a, b = torch.randn(5), torch.randn(5)
    assert torch.equal(combine(a, b, 0.0), b) and torch.allclose(combine(a, b, 1.0), a)
    assert torch.allclose(combine(a, b, 3.0), 3 * a - 2 * b)  # (1 + w) eps_c - w eps_u with w = 2


def test_guidance_is_one_batched_call_equal_to_two(model):
    xt, t, c = _inputs()
    calls = []

    def counting(x, tt, labels=None):
        calls.append(x.shape[0])
        return model(x, tt, labels)

    counting.config = model.config
    with torch.no_grad():
        out = guided(counting, c, 3.0)(xt, t)
        separate = combine(model(xt, t, c), model(xt, t, torch.full_like(c, 10)), 3.0)
    assert calls == [8]  # one call on the doubled batch
    assert torch.allclose(out, separate, atol=1e-5)


def test_guidance_argument_errors(model):
    xt, t, c = _inputs()
    with pytest.raises(TypeError, match="labels must .*torch.long"):
        guided(model, [1, 2], 2.0)
    with pytest.raises(TypeError, match="labels must hold .*int64"):
        guided(model, c.int(), 2.0)
    with pytest.raises(ValueError, match=r"labels must have shape \(B,\)"):
        guided(model, c[:, None], 2.0)
    with pytest.raises(ValueError, match=r"labels must lie in 0..9 .*labels=None"):
        guided(model, torch.tensor([10]), 2.0)  # the "no label" index is not a request
    with pytest.raises(ValueError, match="guidance scale must be >= 0"):
        guided(model, c, -1.0)
    with pytest.raises(ValueError, match="labels hold 4 classes but xt holds 2"):
        guided(model, c, 2.0)(xt[:2], t[:2])
    plain = UNet(replace(COND_UNET, num_classes=None))
    with pytest.raises(ValueError, match="guidance needs a class-conditional model"):
        guided(plain, c, 2.0)
    s = dt.linear_schedule(50)
    with pytest.raises(ValueError, match="guidance=3.0 needs labels"):
        dt.sample(model, s, (2, 1, 28, 28), guidance=3.0, progress=False)
    with pytest.raises(ValueError, match=r"labels must hold one class per sample: shape \(2,\)"):
        dt.sample(model, s, (2, 1, 28, 28), labels=c, progress=False)


def test_sample_with_labels_batches_and_restores_train_mode(model):
    s = dt.linear_schedule(50)
    c = torch.tensor([0, 1, 2, 3, 4])
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    whole = dt.sample(model, s, (5, 1, 28, 28), generator=g(), labels=c, guidance=2.0, progress=False)
    other = dt.sample(model, s, (5, 1, 28, 28), generator=g(), labels=c.flip(0), guidance=2.0, progress=False)
    assert not torch.allclose(whole, other)  # the labels reach the network
    batched = dt.sample(model, s, (5, 1, 28, 28), generator=g(), labels=c, guidance=2.0, progress=False, batch_size=5)
    assert torch.equal(whole, batched)
    split = dt.sample(model, s, (5, 1, 28, 28), generator=g(), labels=c, guidance=2.0, progress=False, batch_size=2)
    assert split.shape == (5, 1, 28, 28) and torch.isfinite(split).all()
    model.train()
    dt.sample(model, s, (2, 1, 28, 28), labels=c[:2], guidance=2.0, progress=False)
    assert model.training
    model.eval()


# ----------------------------------------------------------------------------- training


def test_label_dropout_rate_in_training(monkeypatch, data):
    """The labels the network sees: the data's labels, each replaced by 'no label' with probability label_dropout."""
    images, labels = data
    seen = []
    real_forward = UNet.forward

    def spy(self, xt, t, labels=None):
        seen.append(labels.clone())
        return real_forward(self, xt, t, labels)

    monkeypatch.setattr(UNet, "forward", spy)
    config = replace(COND, steps=40, batch_size=40, label_dropout=0.3, checkpoint_every=40, log_every=40)
    tr.train(config, data=images, labels=labels, progress=False)
    seen = torch.cat(seen)  # 1,600 labels
    dropped = (seen == 10).double().mean().item()
    assert abs(dropped - 0.3) < 4 * (0.3 * 0.7 / seen.numel()) ** 0.5  # 4 standard errors: 0.255..0.345
    kept = seen[seen != 10]
    assert kept.min() >= 0 and kept.max() <= 9 and len(set(kept.tolist())) == 10
    seen_none = []
    monkeypatch.setattr(UNet, "forward", lambda self, xt, t, labels=None: seen_none.append(labels) or real_forward(self, xt, t, labels))
    tr.train(replace(config, steps=2, label_dropout=0.0), data=images, labels=labels, progress=False)
    assert all((x != 10).all() for x in seen_none)


def test_each_image_is_trained_with_its_own_label(monkeypatch, data):
    """The label handed to eps_theta is the label of the very image x_0 it is noising (or 'no label')."""
    images, labels = data
    pairs = []
    real_loss = tr.simple_loss

    def spy(net, schedule, x0, **kw):
        pairs.append((x0.detach().clone(), net.keywords["labels"].clone()))
        return real_loss(net, schedule, x0, **kw)

    monkeypatch.setattr(tr, "simple_loss", spy)
    tr.train(replace(COND, steps=3, batch_size=16), data=images, labels=labels, progress=False)
    checked = 0
    for x0, c in pairs:
        index = (x0.flatten(1)[:, None, :] == images.flatten(1)[None]).all(-1).float().argmax(1)  # which image
        kept = c != 10
        assert torch.equal(c[kept], labels[index][kept])
        checked += int(kept.sum())
    assert checked > 30


def test_labels_are_checked_in_training(data):
    images, labels = data
    with pytest.raises(ValueError, match="needs labels"):
        tr.train(COND, data=images, progress=False)
    with pytest.raises(ValueError, match=r"labels must be an int64 tensor of shape \(40,\)"):
        tr.train(COND, data=images, labels=labels[:5], progress=False)
    with pytest.raises(ValueError, match=r"labels must lie in 0..9"):
        tr.train(COND, data=images, labels=labels + 1, progress=False)
    with pytest.raises(ValueError, match="label_dropout"):
        replace(COND, label_dropout=1.0)


def test_unconditional_config_dict_unchanged():
    plain = replace(COND, unet=replace(COND_UNET, num_classes=None))
    assert "label_dropout" not in plain.to_dict()
    assert COND.to_dict()["label_dropout"] == 0.1 and COND.to_dict()["unet"]["num_classes"] == 10
    assert cfg.TrainConfig.from_dict(COND.to_dict()) == COND


def test_conditional_checkpoint_round_trip(tmp_path, monkeypatch, data):
    """Train a tiny conditional model, resume it, export it, load it as the pretrained name, sample with labels."""
    images, labels = data
    result = tr.train(replace(COND, steps=2), data=images, labels=labels, out_dir=tmp_path / "run", progress=False)
    resumed = tr.train(COND, data=images, labels=labels, out_dir=tmp_path / "run", progress=False)
    assert resumed.steps_run == 2
    fresh = tr.train(COND, data=images, labels=labels, progress=False)  # the same 4 steps in one go
    for a, b in zip(resumed.ema_model.state_dict().values(), fresh.ema_model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ck.CheckpointMismatchError, match="label_dropout"):
        tr.train(replace(COND, label_dropout=0.2), data=images, labels=labels, out_dir=tmp_path / "run", progress=False)

    model, schedule, ckpt = ck.load_model(tmp_path / "run" / "checkpoint.pt")
    assert model.config.num_classes == 10 and ckpt["train_config"]["label_dropout"] == 0.1
    for a, b in zip(model.state_dict().values(), resumed.ema_model.state_dict().values()):
        assert torch.equal(a, b)
    ck.export_checkpoint(tmp_path / "run" / "checkpoint.pt", tmp_path / "cond.pt")
    monkeypatch.setattr(ck, "PRETRAINED_CONDITIONAL", tmp_path / "cond.pt")
    model, schedule = dt.load_pretrained("mnist-conditional")
    assert model.config.num_classes == 10 and not model.training
    x = dt.sample(model, schedule, (3, 1, 28, 28), labels=torch.tensor([7, 0, 9]), guidance=3.0, progress=False)
    assert x.shape == (3, 1, 28, 28) and torch.isfinite(x).all()
    del result


def test_load_pretrained_names(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match=r"unknown pretrained model 'cifar'; the names are \['fashion-mnist', 'mnist', 'mnist-conditional'\]"):
        dt.load_pretrained("cifar")
    with pytest.raises(ValueError, match="device="):
        dt.load_pretrained("cpu")
    monkeypatch.setattr(ck, "PRETRAINED_CONDITIONAL", tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="--conditional"):
        dt.load_pretrained("mnist-conditional")


# ----------------------------------------------------------------------------- command line


def test_cli_trains_and_samples_a_conditional_model(tmp_path, monkeypatch, capsys, data):
    images, labels = data
    monkeypatch.setattr(tr, "_training_images", lambda config, d, root: images)
    monkeypatch.setattr(tr, "_training_labels", lambda config, n, d, lab, root: labels)
    monkeypatch.setitem(cfg.PROFILES, "smoke", replace(COND, profile="smoke", unet=replace(COND_UNET, num_classes=None)))
    assert main(["train", "--profile", "smoke", "--conditional", "--label-dropout", "0.2", "--out", str(tmp_path / "run")]) == 0
    assert "unet.num_classes=10" in capsys.readouterr().out
    ckpt = ck.load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ckpt["train_config"]["unet"]["num_classes"] == 10 and ckpt["train_config"]["label_dropout"] == 0.2
    out = tmp_path / "grid.png"
    record = tmp_path / "q.json"
    assert main(["sample", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--labels", "0123", "--guidance", "3",
                 "--out", str(out), "--quality-json", str(record), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "wrote 4 samples" in text and "classified as the requested digit" in text and out.is_file()
    assert json.loads(record.read_text())["labels"] == "0123" and json.loads(record.read_text())["guidance"] == 3.0
    assert main(["sample", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--labels", "01", "--n", "5",
                 "--out", str(out), "--device", "cpu"]) == 0
    assert "wrote 5 samples" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--guidance needs --labels"):
        main(["sample", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--guidance", "3", "--out", str(out)])
    with pytest.raises(SystemExit):
        main(["sample", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--labels", "7a", "--out", str(out)])
    assert "must be a string of digits" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--labels needs a class-conditional checkpoint"):
        main(["sample", "--checkpoint", "pretrained", "--labels", "7", "--out", str(out)])
    with pytest.raises(SystemExit, match="unknown pretrained model 'cifar'"):
        main(["sample", "--checkpoint", "pretrained:cifar", "--out", str(out)])


# ----------------------------------------------------------------------------- the sweep


def test_class_diversity():
    from ddpm_tutor.guidance import class_diversity

    f = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0], [1.0, 0.0], [9.0, 9.0]])
    labels = torch.tensor([0, 0, 1, 1, 2])  # class 0: distance 5; class 1: identical (0); class 2: one sample
    assert class_diversity(f, labels) == pytest.approx(2.5)
    assert class_diversity(f[:1], labels[:1]) != class_diversity(f[:1], labels[:1])  # NaN: no pair anywhere


def test_guidance_sweep_script_writes_its_record(tmp_path, data):
    import importlib.util
    from pathlib import Path

    images, labels = data
    tr.train(replace(COND, steps=2), data=images, labels=labels, out_dir=tmp_path / "run", progress=False)
    spec = importlib.util.spec_from_file_location("guidance_sweep", Path(__file__).parents[1] / "scripts" / "guidance_sweep.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "records" / "guidance.json"
    argv = ["--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--scales", "0,3", "--per-class", "2",
            "--device", "cpu", "--out", str(out)]
    assert script.main(argv) == 0
    record = json.loads(out.read_text())
    assert record["command"].startswith("python scripts/guidance_sweep.py --checkpoint")
    assert [r["scale"] for r in record["scales"]] == [0.0, 3.0] and record["steps"] == 50
    for r in record["scales"]:
        assert r["n"] == 20 and 0 <= r["requested_fraction"] <= 1 and len(r["per_digit"]) == 10
        assert r["diversity"] >= 0  # NaN (no pair of one digit) would fail; 2 steps of training may draw copies
    assert record["train_config"]["label_dropout"] == 0.1
    fast = tmp_path / "records" / "guidance_ddim.json"  # the sweep draws with the sampler it is given
    assert script.main(argv[:-2] + ["--sampler", "ddim", "--steps", "3", "--out", str(fast)]) == 0
    fast_record = json.loads(fast.read_text())
    assert (fast_record["sampler"], fast_record["steps"]) == ("ddim", 3)


@pytest.mark.skipif(not ck.PRETRAINED_CONDITIONAL.is_file(), reason="the conditional reference is not shipped yet")
def test_conditional_reference_is_the_cpu_profile_with_labels():
    """The shipped conditional checkpoint is the run its record names, and its hash matches."""
    ckpt = torch.load(ck.PRETRAINED_CONDITIONAL, weights_only=True)
    meta = json.loads(ck.PRETRAINED_CONDITIONAL.with_suffix(".json").read_text())
    cpu = cfg.profile_config("cpu")
    assert ckpt["train_config"] == replace(cpu, unet=replace(cpu.unet, num_classes=10)).to_dict()
    assert ckpt["step"] == meta["step"] == cpu.steps and "--conditional" in meta["command"]
    model, _ = dt.load_pretrained("mnist-conditional")
    assert model.config.num_classes == 10


@pytest.mark.skipif(not os.environ.get("DDPM_TUTOR_DATA"), reason="set DDPM_TUTOR_DATA to the folder holding MNIST")
def test_sweep_fid_is_measured_where_the_reference_statistics_were_taken():
    """The sweep's FID uses chapter 10's features (fc1 before its ReLU), so real digits score near the
    real-data floor; the post-ReLU features of the diversity measure would give thousands."""
    from ddpm_tutor import evaluation as ev
    from ddpm_tutor.data import load_mnist, to_model_range
    from ddpm_tutor.guidance import _fid

    images, _ = load_mnist("train", download=False)
    x = to_model_range(images[:500])
    fid = _fid(x)
    assert fid == pytest.approx(ev.fid_from_features(ev.ClassifierFeatures()(x)), rel=1e-9)
    assert fid < 60  # chapter 10: the floor of 500 real digits is about 21


def test_conditional_run_reads_its_training_split_once(monkeypatch, data):
    """Images and labels of a conditional run come from one read (and sha256 check) of the dataset."""
    import ddpm_tutor.datasets as ds

    images, labels = data
    pixels = ((images + 1) * 127.5).round().to(torch.uint8)
    reads = []

    def load_dataset(name, split, root=None, **kwargs):
        reads.append((name, split))
        return pixels, labels

    monkeypatch.setattr(ds, "load_dataset", load_dataset)
    result = tr.train(replace(COND, steps=2), progress=False)
    assert reads == [("mnist", "train")] and result.steps_run == 2
