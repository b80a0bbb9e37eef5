"""Training loop, profiles, checkpoints and the command line (tiny configurations, seconds)."""

import hashlib
import json
import math
import warnings
from pathlib import Path
from dataclasses import replace

import pytest
import torch

import ddpm_tutor as dt
from ddpm_tutor import losses as tr_losses
from ddpm_tutor import checkpoints as ck
from ddpm_tutor import config as cfg
from ddpm_tutor import training as tr
from ddpm_tutor.__main__ import main
from ddpm_tutor.unet import UNetConfig

# 8x8 images keep every step cheap; the command-line test that judges samples uses 28x28 (the classifier's size)
TINY_UNET = UNetConfig(channels=(8, 16), num_res_blocks=(1, 1), time_embed_dim=16, attention_heads=2, norm_groups=4, T=50,
                       image_size=8)
TINY = cfg.TrainConfig(
    profile="tiny", steps=6, batch_size=8, lr=2e-3, warmup_steps=2, ema_decay=0.5, T=50, log_every=2,
    checkpoint_every=3, sample_every=0, channels_last=False, unet=TINY_UNET,
)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return torch.rand(64, 1, 8, 8, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def data28():
    g = torch.Generator().manual_seed(0)
    return torch.rand(16, 1, 28, 28, generator=g) * 2 - 1


def test_profiles_resolve(monkeypatch):
    monkeypatch.delenv("DDPM_TUTOR_PROFILE", raising=False)
    assert cfg.resolve_profile() == ("gpu" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("DDPM_TUTOR_PROFILE", "smoke")
    assert cfg.resolve_profile() == "smoke" and cfg.profile_config().profile == "smoke"
    assert cfg.resolve_profile("cpu") == "cpu"
    monkeypatch.setenv("DDPM_TUTOR_PROFILE", "fast")
    with pytest.raises(ValueError, match="unknown profile 'fast'.*DDPM_TUTOR_PROFILE"):
        cfg.resolve_profile()


def test_build_schedule_scales_linear_betas():
    s = cfg.build_schedule(replace(TINY))
    assert s.T == 50 and s.betas[0].item() == pytest.approx(1e-4 * 20) and s.betas[-1].item() == pytest.approx(0.4)
    full = cfg.build_schedule(cfg.PROFILES["cpu"])
    assert full.alpha_bars[-1].item() < 1e-4  # x_T is (nearly) pure noise in every profile
    assert cfg.build_schedule(cfg.PROFILES["smoke"]).alpha_bars[-1].item() < 1e-3


def test_bad_config_values():
    with pytest.raises(ValueError, match="TrainConfig.steps"):
        replace(TINY, steps=0)
    with pytest.raises(ValueError, match="mixed_precision"):
        replace(TINY, mixed_precision="fp8")
    with pytest.raises(ValueError, match="unet.T"):
        replace(TINY, T=60)


def test_train_checkpoint_resume_and_load(tmp_path, data):
    out = tmp_path / "run"
    first = tr.train(replace(TINY, steps=3), data=data, out_dir=out, progress=False)
    assert first.steps_run == 3 and (out / "checkpoint.pt").is_file()
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)  # a plain state_dict: no pickled code
    assert ckpt["step"] == 3 and ckpt["train_config"]["unet"]["channels"] == [8, 16]
    resumed = tr.train(TINY, data=data, out_dir=out, progress=False)  # 3 more steps to reach 6
    assert resumed.steps_run == 3 and resumed.history["step"][-1] == 6
    straight = tr.train(TINY, data=data, progress=False)
    # resuming gives the same weights as an uninterrupted run (batches, t, eps and dropout continue exactly)
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b)
    for a, b in zip(straight.ema_model.parameters(), resumed.ema_model.parameters()):
        torch.testing.assert_close(a, b)
    assert resumed.history["step"] == [2, 3, 4, 6]  # the first run logged its end at step 3
    assert straight.history["step"] == [2, 4, 6]
    assert straight.history["loss"][-1] == pytest.approx(resumed.history["loss"][-1])
    model, schedule, saved = ck.load_model(out / "checkpoint.pt")
    assert saved["step"] == 6 and schedule.T == 50
    torch.testing.assert_close(model.state_dict()["conv_in.weight"], resumed.ema_model.state_dict()["conv_in.weight"])


def test_no_half_written_checkpoint(tmp_path, monkeypatch, data):
    out = tmp_path / "run"
    tr.train(replace(TINY, steps=3), data=data, out_dir=out, progress=False)
    before = (out / "checkpoint.pt").read_bytes()

    def boom(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise KeyboardInterrupt("interrupted while writing")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        tr.train(TINY, data=data, out_dir=out, progress=False)
    assert (out / "checkpoint.pt").read_bytes() == before  # the old checkpoint is intact
    assert [p.name for p in out.iterdir()] == ["checkpoint.pt"]  # and no temporary file is left


def test_a_killed_runs_temporary_files_are_removed_on_the_next_run(tmp_path, data):
    """kill -9 while a checkpoint is written leaves .checkpoint.pt.XXXX.tmp; the next run in that folder removes it."""
    out = tmp_path / "run"
    tr.train(replace(TINY, steps=1), data=data, out_dir=out, progress=False)
    (out / ".checkpoint.pt.k1ll3d.tmp").write_bytes(b"partial")
    tr.train(replace(TINY, steps=2), data=data, out_dir=out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt"]


def test_mismatched_config_names_the_fields(tmp_path, data):
    out = tmp_path / "run"
    tr.train(replace(TINY, steps=2), data=data, out_dir=out, progress=False)
    other = replace(TINY, lr=1e-4, unet=replace(TINY_UNET, channels=(8, 24), norm_groups=4))
    with pytest.raises(ck.CheckpointMismatchError, match=r"lr: 0\.002 in the checkpoint, 0\.0001 here"):
        tr.train(other, data=data, out_dir=out, progress=False)
    model = dt.UNet(replace(TINY_UNET, channels=(8, 24)))
    ckpt = ck.load_checkpoint(out / "checkpoint.pt")
    with pytest.raises(ck.CheckpointMismatchError, match=r"channels: \[8, 16\] in the checkpoint, \[8, 24\] here"):
        ck.load_weights(model, ckpt, "ema")


def test_foreign_file_is_refused(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable ddpm_tutor checkpoint"):
        ck.load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="python -m ddpm_tutor train"):
        ck.load_checkpoint(tmp_path / "missing.pt")


def test_nan_loss_stops_training(data):
    poisoned = data.clone()
    poisoned[:] = float("nan")
    with pytest.raises(FloatingPointError, match="loss became nan at step 0"):
        tr.train(TINY, data=poisoned, progress=False)


def test_a_diverging_run_is_warned_about(monkeypatch, data):
    """A loss that jumps far above its lowest value (finite, so the NaN guard stays silent) gets a warning naming lr."""
    calls = []

    def loss_that_blows_up(*args, **kwargs):
        calls.append(1)
        loss = tr_losses.simple_loss(*args, **kwargs)
        return loss * (100.0 if len(calls) > 4 else 1.0)

    monkeypatch.setattr(tr, "simple_loss", loss_that_blows_up)
    with pytest.warns(RuntimeWarning, match=r"jumped to .* at step 6, .* diverged.* Lower TrainConfig.lr \(now 0.002\)"):
        tr.train(replace(TINY, steps=6, log_every=2, warmup_steps=1), data=data, progress=False)
    monkeypatch.setattr(tr, "simple_loss", tr_losses.simple_loss)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a run that only improves is left alone
        tr.train(replace(TINY, steps=6, log_every=2, warmup_steps=1), data=data, progress=False)


def test_data_range_is_checked():
    with pytest.raises(ValueError, match=r"scaled to \[-1, 1\]"):
        tr.train(TINY, data=torch.full((8, 1, 8, 8), 255.0), progress=False)


def test_training_reduces_the_loss(data):
    result = tr.train(replace(TINY, steps=40, log_every=10), data=data[:16], progress=False)
    assert result.history["loss"][-1] < 0.7 * result.history["loss"][0]


def test_cosine_lr_decay(data):
    config = replace(TINY, steps=10, warmup_steps=2, log_every=1, lr_decay="cosine")
    lrs = tr.train(config, data=data, progress=False).history["lr"]
    assert lrs[:2] == pytest.approx([1e-3, 2e-3])  # warm-up to the peak
    assert lrs[2] == pytest.approx(2e-3) and all(a > b for a, b in zip(lrs[2:], lrs[3:]))  # then falls every step
    assert lrs[-1] == pytest.approx(2e-3 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))  # toward 0 at step 10
    assert tr.train(replace(config, lr_decay="constant"), data=data, progress=False).history["lr"][2:] == pytest.approx([2e-3] * 8)
    with pytest.raises(ValueError, match="lr_decay must be 'constant' or 'cosine'"):
        replace(TINY, lr_decay="step")


def test_min_snr_loss_weighting(data):
    """The same run with min-SNR weights logs a smaller loss (every weight is <= 1) and trains other weights."""
    config = replace(TINY, steps=2, log_every=1)
    plain = tr.train(config, data=data, progress=False)
    weighted = tr.train(replace(config, loss_weighting="min_snr", min_snr_gamma=1.0), data=data, progress=False)
    assert weighted.history["loss"][0] < plain.history["loss"][0]
    assert not torch.equal(weighted.model.conv_in.weight, plain.model.conv_in.weight)
    with pytest.raises(ValueError, match="loss_weighting must be 'none' or 'min_snr'"):
        replace(TINY, loss_weighting="p2")
    with pytest.raises(ValueError, match="min_snr_gamma must be > 0"):
        replace(TINY, min_snr_gamma=-1.0)


def test_checkpoint_from_before_a_new_field_resumes(tmp_path, data):
    """A checkpoint whose train_config lacks a field added later (lr_decay) resumes with that field's default."""
    out = tmp_path / "run"
    tr.train(replace(TINY, steps=2), data=data, out_dir=out, progress=False)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    del ckpt["train_config"]["lr_decay"]
    ck.save_checkpoint(out / "checkpoint.pt", ckpt)
    assert tr.train(replace(TINY, steps=4), data=data, out_dir=out, progress=False).steps_run == 2
    with pytest.raises(ck.CheckpointMismatchError, match="lr_decay: 'constant' in the checkpoint, 'cosine' here"):
        tr.train(replace(TINY, steps=6, lr_decay="cosine"), data=data, out_dir=out, progress=False)


def test_cosine_run_resumes_only_with_the_steps_it_planned(tmp_path, data):
    """More steps would lift a decayed learning rate back up mid-run (a warm restart); a constant rate may run on."""
    out = tmp_path / "run"
    cosine = replace(TINY, steps=4, warmup_steps=1, lr_decay="cosine")
    tr.train(cosine, data=data, out_dir=out, progress=False)
    assert cfg.learning_rate(cosine, 3) < 0.5 * cfg.learning_rate(replace(cosine, steps=8), 3)
    with pytest.raises(ck.CheckpointMismatchError, match=r"planned over steps=4; resuming it with steps=8 .* Resume with steps=4"):
        tr.train(replace(cosine, steps=8), data=data, out_dir=out, progress=False)
    assert tr.train(cosine, data=data, out_dir=out, progress=False).steps_run == 0  # the same plan: nothing left to do
    constant = tmp_path / "constant"
    tr.train(replace(TINY, steps=2), data=data, out_dir=constant, progress=False)
    assert tr.train(replace(TINY, steps=4), data=data, out_dir=constant, progress=False).steps_run == 2


def test_loss_by_t_measures_each_step():
    """eps_theta = 0 scores E[eps^2] = 1 at every t; the trivial x_t / sqrt(1 - alpha_bar_t) scores SNR_t E[x0^2]."""
    s = dt.linear_schedule(50)
    x0 = torch.rand(64, 1, 4, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1
    zero = lambda xt, t: torch.zeros_like(xt)  # noqa: E731
    t, loss = tr.loss_by_t(zero, s, x0, num_bins=5, generator=torch.Generator().manual_seed(0))
    assert t.tolist() == [0, 12, 24, 37, 49] and loss.dtype == torch.float64
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))  # the draw loss_by_t makes, the same at every t
    assert loss.tolist() == pytest.approx([eps.pow(2).mean().item()] * 5, rel=1e-5)
    ab = s.alpha_bars.float()
    trivial = lambda xt, t: xt / (1 - ab[t]).sqrt()[:, None, None, None]  # noqa: E731
    _, loss = tr.loss_by_t(trivial, s, x0, num_bins=5, generator=torch.Generator().manual_seed(0))
    snr = (ab / (1 - ab))[t]
    assert loss.tolist() == pytest.approx((snr * x0.pow(2).mean()).tolist(), rel=1e-4)  # eps cancels


def test_cli_train_and_sample(tmp_path, monkeypatch, capsys, data28):
    monkeypatch.setattr(tr, "_training_images", lambda config, d, root: data28)
    monkeypatch.setitem(cfg.PROFILES, "smoke", replace(TINY, profile="smoke", steps=2, unet=replace(TINY_UNET, image_size=28, T=10), T=10))
    assert main(["train", "--profile", "smoke", "--out", str(tmp_path / "run")]) == 0
    assert main(["sample", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--n", "4",
                 "--out", str(tmp_path / "grid.png")]) == 0
    out = capsys.readouterr().out
    assert "profile smoke" in out and "wrote 4 samples" in out
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record_path = tmp_path / "quality.json"
    assert main(["sample", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--n", "5", "--seed", "3",
                 "--out", str(tmp_path / "grid5.png"), "--quality-json", str(record_path)]) == 0
    record = json.loads(record_path.read_text())
    assert record["n"] == 5 and sum(record["counts"]) == 5 and record["seed"] == 3 and record["weights"] == "ema"
    assert 0.0 <= record["confident_fraction"] <= 1.0 and record["passes_target"] is False  # 5 images cannot cover 10 digits
    assert "SampleQuality(n=5" in capsys.readouterr().out
    # in batches: the same number of images; one batch of all of them is the default's draw, image for image
    batched = tmp_path / "quality-batched.json"
    assert main(["sample", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--n", "5", "--seed", "3", "--batch-size", "2",
                 "--out", str(tmp_path / "grid5b.png"), "--quality-json", str(batched)]) == 0
    assert "in batches of 2" in capsys.readouterr().out
    assert json.loads(batched.read_text())["n"] == 5 and json.loads(batched.read_text())["batch_size"] == 2
    assert main(["sample", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--n", "5", "--seed", "3", "--batch-size", "8",
                 "--out", str(tmp_path / "grid5c.png")]) == 0
    assert (tmp_path / "grid5c.png").read_bytes() == (tmp_path / "grid5.png").read_bytes()
    with pytest.raises(SystemExit):
        main(["sample", "--checkpoint", "x", "--n", "0"])
    with pytest.raises(SystemExit):
        main(["sample", "--checkpoint", "x", "--batch-size", "0"])


def test_cli_train_overrides(tmp_path, monkeypatch, capsys, data):
    """--batch-size, --lr, --T, --channels, --loss-weighting and --min-snr-gamma change the trained config, T in both places."""
    monkeypatch.setattr(tr, "_training_images", lambda config, d, root: data)
    monkeypatch.setitem(cfg.PROFILES, "smoke", replace(TINY, profile="smoke", steps=2))
    assert main(["train", "--profile", "smoke", "--out", str(tmp_path / "run"), "--T", "30", "--channels", "4,8",
                 "--loss-weighting", "min_snr", "--min-snr-gamma", "2", "--lr", "3e-3", "--batch-size", "6"]) == 0
    assert "overridden: batch_size=6, lr=0.003, loss_weighting=min_snr, min_snr_gamma=2.0, T=30, unet.channels=(4, 8), unet.T=30" in capsys.readouterr().out
    config = ck.load_checkpoint(tmp_path / "run" / "checkpoint.pt")["train_config"]
    assert (config["T"], config["unet"]["T"], config["unet"]["channels"]) == (30, 30, [4, 8])
    assert (config["loss_weighting"], config["min_snr_gamma"], config["lr"], config["batch_size"]) == ("min_snr", 2.0, 0.003, 6)
    with pytest.raises(SystemExit, match="--channels: the smoke profile's U-Net has 2 resolutions"):
        main(["train", "--profile", "smoke", "--out", str(tmp_path / "run2"), "--channels", "4,8,16"])
    with pytest.raises(SystemExit, match="norm_groups=4 must divide"):  # the configs' own checks, as a clean exit
        main(["train", "--profile", "smoke", "--out", str(tmp_path / "run3"), "--channels", "6,8"])
    with pytest.raises(SystemExit, match="min_snr_gamma must be > 0"):
        main(["train", "--profile", "smoke", "--out", str(tmp_path / "run3"), "--min-snr-gamma", "0"])
    with pytest.raises(SystemExit, match="lr must be > 0"):
        main(["train", "--profile", "smoke", "--out", str(tmp_path / "run3"), "--lr", "0"])
    for bad in (["--channels", "4,x"], ["--min-snr-gamma", "0"], ["--lr", "x"], ["--T", "0"], ["--loss-weighting", "p2"], ["--batch-size", "0"]):
        with pytest.raises(SystemExit):
            main(["train", "--profile", "smoke", "--out", str(tmp_path / "run3"), *bad])
    assert not (tmp_path / "run2").exists() and not (tmp_path / "run3").exists()


def test_fine_tuning_starts_from_a_checkpoints_ema_weights(tmp_path, data):
    """init_from: the run starts from the source's EMA weights (not random ones) and records where they came from."""
    source = tr.train(replace(TINY, steps=3), data=data, out_dir=tmp_path / "source", progress=False)
    src = tmp_path / "source" / "checkpoint.pt"
    still = replace(TINY, steps=2, lr=1e-12, seed=1)  # a learning rate too small to move the weights
    tuned = tr.train(still, data=data, out_dir=tmp_path / "tuned", progress=False, init_from=src)
    scratch = tr.train(still, data=data, progress=False)
    for a, b, c in zip(tuned.model.parameters(), source.ema_model.parameters(), scratch.model.parameters()):
        torch.testing.assert_close(a, b)
        assert not torch.allclose(c, b)
    for a, b in zip(tuned.ema_model.parameters(), source.ema_model.parameters()):
        torch.testing.assert_close(a, b)
    origin = ck.load_checkpoint(tmp_path / "tuned" / "checkpoint.pt")["init_from"]
    assert origin == {"sha256": hashlib.sha256(src.read_bytes()).hexdigest(), "step": 3, "train_config": TINY.to_dict() | {"steps": 3}}
    ck.export_checkpoint(tmp_path / "tuned" / "checkpoint.pt", tmp_path / "slim.pt")
    assert torch.load(tmp_path / "slim.pt", weights_only=True)["init_from"] == origin  # the shipped file keeps its history
    # resuming needs the same starting point: random weights, or another checkpoint, are refused
    with pytest.raises(ck.CheckpointMismatchError, match=r"started from a checkpoint's weights \(sha256 [0-9a-f]{12}\.\.\., step 3\), "
                       r"but this run starts from random weights"):
        tr.train(still, data=data, out_dir=tmp_path / "tuned", progress=False)
    with pytest.raises(ck.CheckpointMismatchError, match="but this run starts from a checkpoint's weights"):
        tr.train(still, data=data, out_dir=tmp_path / "tuned", progress=False, init_from=tmp_path / "slim.pt")
    more = tr.train(replace(still, steps=4), data=data, out_dir=tmp_path / "tuned", progress=False, init_from=src)
    assert more.steps_run == 2


def test_fine_tuning_refuses_another_network_or_schedule(tmp_path, monkeypatch, data):
    tr.train(replace(TINY, steps=2), data=data, out_dir=tmp_path / "source", progress=False)
    src = tmp_path / "source" / "checkpoint.pt"
    wider = replace(TINY, unet=replace(TINY_UNET, channels=(8, 24)))
    with pytest.raises(ck.CheckpointMismatchError, match=r"unet\.channels: \[8, 16\] in the checkpoint, \[8, 24\] here"):
        tr.train(wider, data=data, progress=False, init_from=src)
    with pytest.raises(ck.CheckpointMismatchError, match=r"schedule: 'linear' in the checkpoint, 'cosine' here"):
        tr.train(replace(TINY, schedule="cosine"), data=data, progress=False, init_from=src)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        tr.train(TINY, data=data, progress=False, init_from=tmp_path / "missing.pt")
    # "pretrained" names the shipped reference checkpoint
    ck.export_checkpoint(src, tmp_path / "ref.pt")
    monkeypatch.setattr(ck, "PRETRAINED", tmp_path / "ref.pt")
    tr.train(replace(TINY, steps=1), data=data, out_dir=tmp_path / "tuned", progress=False, init_from="pretrained")
    origin = ck.load_checkpoint(tmp_path / "tuned" / "checkpoint.pt")["init_from"]
    assert origin["sha256"] == hashlib.sha256((tmp_path / "ref.pt").read_bytes()).hexdigest()


def test_cli_fine_tunes_with_init_from(tmp_path, monkeypatch, capsys, data):
    monkeypatch.setattr(tr, "_training_images", lambda config, d, root: data)
    monkeypatch.setitem(cfg.PROFILES, "smoke", replace(TINY, profile="smoke", steps=2))
    assert main(["train", "--profile", "smoke", "--out", str(tmp_path / "source")]) == 0
    src = tmp_path / "source" / "checkpoint.pt"
    assert main(["train", "--profile", "smoke", "--out", str(tmp_path / "tuned"), "--init-from", str(src), "--lr", "2e-4"]) == 0
    assert f"fine-tuning: starting from the EMA weights of {src}" in capsys.readouterr().out
    assert ck.load_checkpoint(tmp_path / "tuned" / "checkpoint.pt")["init_from"]["step"] == 2
    with pytest.raises(SystemExit, match="train: no checkpoint at"):
        main(["train", "--profile", "smoke", "--out", str(tmp_path / "other"), "--init-from", str(tmp_path / "missing.pt")])
    with pytest.raises(SystemExit, match=r"train: init_from=.* differing fields: unet\.channels"):
        main(["train", "--profile", "smoke", "--out", str(tmp_path / "other"), "--init-from", str(src), "--channels", "4,8"])


def test_export_is_slim_and_loads(tmp_path, data):
    tr.train(replace(TINY, steps=2), data=data, out_dir=tmp_path / "run", progress=False)
    record = ck.export_checkpoint(tmp_path / "run" / "checkpoint.pt", tmp_path / "slim.pt", note={"command": "x"})
    slim = torch.load(tmp_path / "slim.pt", weights_only=True)
    assert "optimizer" not in slim and set(slim) >= {"ema", "model", "train_config", "step"}
    assert record["sha256"] == hashlib.sha256((tmp_path / "slim.pt").read_bytes()).hexdigest()
    assert record["command"] == "x" and record["step"] == 2
    model, schedule, _ = ck.load_model(tmp_path / "slim.pt")
    assert schedule.T == 50
    assert _a_conv_weight(model).is_contiguous()  # the run trained in the default memory format


def test_model_loads_in_the_memory_format_it_trained_in(tmp_path, data):
    tr.train(replace(TINY, steps=2, channels_last=True), data=data, out_dir=tmp_path / "run", progress=False)
    model, _, _ = ck.load_model(tmp_path / "run" / "checkpoint.pt")
    weight = _a_conv_weight(model)
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


def _a_conv_weight(model):
    """A 3x3 convolution's weight with several input channels (for one input channel both formats coincide)."""
    return next(m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)


def test_pretrained_is_verified(tmp_path, monkeypatch, data):
    tr.train(replace(TINY, steps=2), data=data, out_dir=tmp_path / "run", progress=False)
    ck.export_checkpoint(tmp_path / "run" / "checkpoint.pt", tmp_path / "ref.pt")
    monkeypatch.setattr(ck, "PRETRAINED", tmp_path / "ref.pt")
    model, schedule = ck.load_pretrained()
    assert not model.training and schedule.T == 50
    with open(tmp_path / "ref.pt", "ab") as fh:  # a damaged file is refused before torch.load sees it
        fh.write(b"\0")
    with pytest.raises(ValueError, match="sha256 .* expected .*corrupt"):
        ck.load_pretrained()


def test_shipped_reference_model_denoises_real_digits():
    """The shipped checkpoint loads into the current U-Net code and predicts the noise far better than chance."""
    from ddpm_tutor import data as mnist

    model, schedule = ck.load_pretrained()
    try:
        images, _ = mnist.load_mnist("test", download=False)
    except mnist.MNISTError as err:
        pytest.skip(f"needs the MNIST test digits (set DDPM_TUTOR_DATA to a folder with them): {err}")
    x0 = mnist.to_model_range(images[:256])
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        loss = dt.simple_loss(model, schedule, x0, generator=g).item()
    assert loss < 0.1, f"L_simple of the reference model is {loss:.3f}; the trivial predictor scores 1.0"


def test_reference_is_the_gpu_profile_at_batch_512():
    """The shipped checkpoint is the run its record names: the gpu profile with --batch-size 512, every step done."""
    ckpt = torch.load(ck.PRETRAINED, weights_only=True)
    meta = json.loads(ck.PRETRAINED.with_suffix(".json").read_text())
    assert cfg.TrainConfig.from_dict(ckpt["train_config"]) == cfg.profile_config("gpu", batch_size=512)
    assert ckpt["step"] == meta["step"] == cfg.PROFILES["gpu"].steps
    assert "--profile gpu --batch-size 512" in meta["command"]


@pytest.mark.parametrize("profile", sorted(cfg.PROFILES))
def test_every_profile_trains_and_ends_in_noise(profile, data28):
    """Each profile's network, schedule and optimiser run a step on MNIST-sized images, and its x_T is nearly pure noise."""
    config = replace(cfg.PROFILES[profile], steps=1, batch_size=2, data_limit=None, sample_every=0, compile=False)
    result = tr.train(config, data=data28, progress=False)
    assert math.isfinite(result.history["loss"][-1]) and result.schedule.T == config.unet.T
    assert result.schedule.alpha_bars[-1].item() < 1e-3


def test_every_recorded_train_command_builds_its_config():
    """Each `python -m ddpm_tutor train ...` the README quotes, and the command of every recorded run the
    book's appendix plots, parses and builds a config; a recorded run's config has its batch size and steps."""
    import re
    import shlex

    from ddpm_tutor.__main__ import build_parser, train_config

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    commands = [(opts, None) for opts in re.findall(r"python -m ddpm_tutor train ([^`\n]*)", readme)]
    commands += [(r["train_command"].removeprefix("python -m ddpm_tutor train "), r)
                 for r in dt.records.load("quality_runs")["runs"]]
    assert len(commands) > 20
    for options, run in commands:
        argv = shlex.split(options.split(" #")[0])  # without a trailing comment
        if "--out" not in argv:
            argv += ["--out", "runs/x"]
        _, config, _ = train_config(build_parser().parse_args(["train", *argv]))
        assert config.unet.T == config.T, options
        if run is not None:  # runs stopped early trained fewer steps than they planned
            assert config.batch_size == run["batch_size"] and config.steps >= run["steps"], run["name"]
    with_set = train_config(build_parser().parse_args(
        ["train", "--profile", "gpu", "--out", "x", "--steps", "8000", "--lr", "1e-3", "--T", "1000",
         "--set", "unet.channels=16,64,128", "--set", "ema_decay=0.999"]))[1]
    assert with_set == cfg.profile_config("gpu", steps=8000, lr=1e-3, ema_decay=0.999, T=1000, unet=dt.UNetConfig())


def test_set_overrides_any_field_and_names_a_bad_one():
    config, changed = cfg.apply_overrides(TINY, ["ema_decay=0.25", "schedule=cosine", "unet.channels=8,24",
                                                "T=30", "data_limit=none", "channels_last=true", "unet.dropout=0.1"])
    assert (config.ema_decay, config.schedule, config.unet.channels, config.T, config.unet.T) == (0.25, "cosine", (8, 24), 30, 30)
    assert (config.data_limit, config.channels_last, config.unet.dropout) == (None, True, 0.1)
    assert changed == {"ema_decay": 0.25, "schedule": "cosine", "T": 30, "data_limit": None, "channels_last": True,
                       "unet.channels": (8, 24), "unet.dropout": 0.1, "unet.T": 30}
    assert cfg.apply_overrides(TINY, ["unet.T=40"])[0].T == 40  # T and unet.T move together either way
    for bad, match in [
        ("emadecay=0.5", r"--set emadecay: TrainConfig has no field 'emadecay'; known fields: .*ema_decay"),
        ("unet.width=4", r"--set unet.width: UNetConfig has no field 'width'; known fields: .*unet.channels"),
        ("unet=x", "TrainConfig has no field 'unet'"),
        ("lr", "write FIELD=VALUE"),
        ("steps=ten", r"--set steps=ten: expected an int, got 'ten'"),
        ("unet.channels=8,x", "expected comma-separated ints"),
        ("compile=maybe", "expected true or false"),
        ("ema_decay=1.5", r"TrainConfig.ema_decay must lie in \[0, 1\)"),  # the config's own check
        ("unet.channels=6,8", "norm_groups=4 must divide"),
    ]:
        with pytest.raises(ValueError, match=match):
            cfg.apply_overrides(TINY, [bad])


def test_cli_set(tmp_path, monkeypatch, capsys, data):
    monkeypatch.setattr(tr, "_training_images", lambda config, d, root: data)
    monkeypatch.setitem(cfg.PROFILES, "smoke", replace(TINY, profile="smoke", steps=2))
    assert main(["train", "--profile", "smoke", "--out", str(tmp_path / "run"), "--lr", "3e-3",
                 "--set", "ema_decay=0.75", "--set", "lr=4e-3", "--set", "unet.channels=4,8"]) == 0
    assert "overridden: lr=0.004, ema_decay=0.75, unet.channels=(4, 8)" in capsys.readouterr().out  # --set wins
    config = ck.load_checkpoint(tmp_path / "run" / "checkpoint.pt")["train_config"]
    assert (config["ema_decay"], config["lr"], config["unet"]["channels"]) == (0.75, 0.004, [4, 8])
    with pytest.raises(SystemExit, match="train: --set ema: TrainConfig has no field 'ema'"):
        main(["train", "--profile", "smoke", "--out", str(tmp_path / "run2"), "--set", "ema=0.5"])
    assert not (tmp_path / "run2").exists()


def test_the_hot_paths_read_no_values_back_from_the_device():
    """A training step's loss, a sampling step and the EMA update never read a tensor's values on the host
    (``int(t.min())``, ``.item()``, ``bool(...)``): on a GPU each such read makes the CPU wait for the device.
    Tensors on the "meta" device have shapes but no values, so any such read raises here."""
    model = dt.UNet(TINY_UNET).to("meta")
    schedule = dt.linear_schedule(50).to("meta")
    x0 = torch.zeros(4, 1, 8, 8, device="meta")
    t = torch.zeros(4, dtype=torch.long, device="meta")
    loss = dt.simple_loss(model, schedule, x0, t=t, noise=torch.zeros_like(x0), reduction="none")
    weights = tr_losses.min_snr_weights(schedule, torch.arange(50, device="meta"), 1.0)
    (loss * weights[t]).mean().backward()
    step = dt.p_sample_step(schedule, model(x0, t), x0, t, noise=torch.zeros_like(x0))
    assert step.x_prev.shape == x0.shape and dt.q_posterior(schedule, x0, x0, t)[0].shape == x0.shape
    ema = tr.EMA(model, 0.9)
    ema.update(model)
    ema.update(model)
    assert ema.n_averaged == 2


def test_ema_copies_first_then_averages():
    """ema <- d * ema + (1 - d) * weights after a first update that copies the weights."""
    w = torch.nn.Linear(2, 1)
    ema = tr.EMA(w, decay=0.9)
    with torch.no_grad():
        w.weight.fill_(1.0)
    ema.update(w)
    torch.testing.assert_close(ema.module.weight, torch.ones(1, 2))
    with torch.no_grad():
        w.weight.fill_(3.0)
    ema.update(w)
    torch.testing.assert_close(ema.module.weight, torch.full((1, 2), 0.9 * 1.0 + 0.1 * 3.0))


def test_bf16_autocast_trains_on_the_cpu(data):
    """The mixed-precision path runs on the CPU with mixed_precision="bf16": a finite loss that differs from
    float32's (the network really ran in bfloat16), float32 weights, and no gradient scaler."""
    config = replace(TINY, steps=2, log_every=1)
    full = tr.train(replace(config, mixed_precision="off"), data=data, progress=False)
    half = tr.train(replace(config, mixed_precision="bf16"), data=data, progress=False)
    assert all(math.isfinite(v) for v in half.history["loss"])
    # step 0 sees the zero-initialised output layer (loss = mean eps^2 either way); step 1 sees the network
    assert half.history["loss"][1] != full.history["loss"][1]
    assert half.history["loss"][1] == pytest.approx(full.history["loss"][1], rel=0.05)
    assert all(p.dtype == torch.float32 for p in half.model.parameters())
    auto = tr.train(replace(config, mixed_precision="auto"), data=data, progress=False)  # "auto" is off on the CPU
    assert auto.history["loss"] == full.history["loss"]
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device"):
        tr.train(replace(config, mixed_precision="fp16"), data=data, progress=False)
