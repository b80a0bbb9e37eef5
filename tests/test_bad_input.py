"""Bad input and faults: each gets a clear error that names the argument and the fix, and nothing is lost.

One test (or a few) per case, numbered as in the list of cases they come from.
"""

import math

import pytest
import torch

import ddpm_tutor as dt


# ----------------------------------------------------------------------------- 7: schedules


def test_linear_schedule_with_one_step_cannot_ignore_beta_T():
    with pytest.raises(ValueError, match=r"T=1 has a single step.*beta_T=0\.02.*T >= 2"):
        dt.linear_schedule(T=1)
    assert dt.linear_schedule(T=1, beta_1=0.01, beta_T=0.01).betas.tolist() == [0.01]


def test_linear_schedule_refuses_a_decreasing_one_and_names_the_explicit_way():
    with pytest.raises(ValueError, match=r"beta_1=0\.02 > beta_T=0\.0001.*schedule_from_betas"):
        dt.linear_schedule(T=10, beta_1=0.02, beta_T=1e-4)
    decreasing = dt.schedule_from_betas(torch.linspace(0.02, 1e-4, 10))  # the explicit way works
    assert decreasing.betas[0] > decreasing.betas[-1]
    assert dt.linear_schedule(T=10, beta_1=0.01, beta_T=0.01).T == 10  # constant is allowed


@pytest.mark.parametrize("s", [math.inf, math.nan, -math.inf])
def test_cosine_schedule_refuses_a_non_finite_offset(s):
    with pytest.raises(ValueError, match=r"s must be a finite number.*0\.008"):
        dt.cosine_schedule(T=10, s=s)


@pytest.mark.parametrize("kwargs, name", [({"beta_1": "0.1"}, "beta_1"), ({"beta_T": None}, "beta_T"),
                                          ({"beta_1": True}, "beta_1")])
def test_linear_schedule_refuses_a_beta_that_is_not_a_number(kwargs, name):
    with pytest.raises(ValueError, match=rf"{name} must be a real number.*pass a float"):
        dt.linear_schedule(T=10, **kwargs)


def test_cosine_schedule_refuses_a_max_beta_that_is_not_a_number():
    with pytest.raises(ValueError, match=r"max_beta must be a real number"):
        dt.cosine_schedule(T=10, max_beta="0.999")


# ----------------------------------------------------------------------------- 8: data of the wrong kind


def _pixels(n=2):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 1, 4, 4), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("fn", [dt.q_sample, dt.q_step])
def test_forward_process_refuses_pixels_and_names_the_conversion(fn):
    s = dt.linear_schedule(T=10)
    with pytest.raises(TypeError, match=r"got dtype torch.uint8.*data.to_model_range"):
        fn(s, _pixels(), 1)
    with pytest.raises(TypeError, match=r"got dtype torch.complex64.*data.to_model_range"):
        fn(s, torch.zeros(2, 1, 4, 4, dtype=torch.complex64), 1)
    if fn is dt.q_sample:  # q_step, a step run in loops, checks the dtype only
        with pytest.raises(ValueError, match=r"range \[-1, 1\], got values in \[\d+, 2\d\d\].*data.to_model_range"):
            fn(s, _pixels().float(), 1)  # pixels as floats: 0..255 is not the model's scale


def test_forward_process_still_takes_the_books_data():
    s = dt.linear_schedule(T=10)
    pixels = _pixels()
    xt = dt.q_sample(s, dt.data.to_model_range(pixels), 1)  # the conversion the message names works
    assert xt.dtype == torch.float32
    g = torch.Generator().manual_seed(0)
    dt.q_sample(s, torch.randn(32, 1, 8, 8, generator=g, dtype=torch.float64), 3)  # standardised toy data is fine


def test_q_sample_returns_the_dtype_of_x0_whatever_the_noise():
    s = dt.linear_schedule(T=10)
    x0 = torch.zeros(2, 1, 4, 4)
    eps = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    xt = dt.q_sample(s, x0, 3, noise=eps)
    assert xt.dtype == torch.float32  # as the docstring says: the dtype of x0
    torch.testing.assert_close(xt, (1 - s.alpha_bars[3]).sqrt().float() * eps.float())
    assert dt.q_step(s, x0.double(), 3, noise=eps.float()).dtype == torch.float64
    with pytest.raises(TypeError, match="noise must be a real floating-point"):
        dt.q_sample(s, x0, 3, noise=torch.zeros(2, 1, 4, 4, dtype=torch.long))


def _zero_model(xt, t):
    return torch.zeros_like(xt)


def test_the_bound_refuses_pixels_and_names_the_conversion():
    s = dt.linear_schedule(T=4, beta_1=0.1, beta_T=0.5)
    with pytest.raises(ValueError, match=r"x0 must hold data in the model's range \[-1, 1\].*data.to_model_range"):
        dt.vlb_bits_per_dim(_zero_model, s, _pixels().float(), progress=False)
    with pytest.raises(ValueError, match=r"got values in \[-1, 1\.5\]"):  # just outside [-1, 1] is refused too
        dt.vlb_bits_per_dim(_zero_model, s, torch.tensor([-1.0, 1.5]).reshape(1, 1, 1, 2), progress=False)
    with pytest.raises(TypeError, match="torch.uint8.*data.to_model_range"):
        dt.vlb_bits_per_dim(_zero_model, s, _pixels(), progress=False)
    bpd = dt.vlb_bits_per_dim(_zero_model, s, dt.data.to_model_range(_pixels()), progress=False)
    assert torch.isfinite(bpd.total).all() and (bpd.total < 20).all()


# ----------------------------------------------------------------------------- 10: cryptic failures (models, data)


def test_the_bound_refuses_a_batch_size_of_zero():
    s = dt.linear_schedule(T=4, beta_1=0.1, beta_T=0.5)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=r"batch_size must be a positive int.*got"):
            dt.vlb_bits_per_dim(_zero_model, s, torch.zeros(1, 1, 2, 2), batch_size=bad, progress=False)


BAD_MODELS = {
    "None": (lambda xt, t: None, r"got NoneType"),
    "tuple": (lambda xt, t: (torch.zeros_like(xt), None), r"got tuple.*wrap it, e.g. lambda xt, t: net\(xt, t\)\[0\]"),
    "ndarray": (lambda xt, t: torch.zeros_like(xt).numpy(), r"got ndarray"),
}


@pytest.mark.parametrize("name", sorted(BAD_MODELS))
def test_a_model_that_returns_no_tensor_is_named(name):
    model, got = BAD_MODELS[name]
    s = dt.linear_schedule(T=4, beta_1=0.1, beta_T=0.5)
    x0 = torch.zeros(2, 1, 4, 4)
    what = r"model\(xt, t\) must return eps_theta, a torch.Tensor shaped like xt \(\d+, 1, 4, 4\), "
    with pytest.raises(TypeError, match=what + got):
        dt.simple_loss(model, s, x0)
    with pytest.raises(TypeError, match=what + got):
        dt.vlb_bits_per_dim(model, s, x0, progress=False)
    with pytest.raises(TypeError, match=what + got):
        dt.sample(model, s, (2, 1, 4, 4), progress=False)


def test_a_model_of_the_wrong_shape_is_named():
    s = dt.linear_schedule(T=4, beta_1=0.1, beta_T=0.5)
    with pytest.raises(ValueError, match=r"shaped like xt \(2, 1, 4, 4\), got \(2, 4, 4\)"):
        dt.simple_loss(lambda xt, t: xt[:, 0], s, torch.zeros(2, 1, 4, 4))


def test_an_unreadable_mnist_file_is_named_with_the_fix(tmp_path, monkeypatch):
    from pathlib import Path

    for name in dt.data.FILES["train"]:
        (tmp_path / name).write_bytes(b"whatever")
    real_read = Path.read_bytes

    def no_permission(self):
        if self.parent == tmp_path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", no_permission)
    with pytest.raises(dt.data.MNISTError, match=r"cannot read .*train-images-idx3-ubyte.gz \(Permission denied\); "
                       r"make it readable .*DDPM_TUTOR_DATA"):
        dt.data.load_mnist("train", root=tmp_path, download=False)


def test_a_read_only_data_folder_is_not_called_a_connection_problem(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tried the network although the folder cannot be written")

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(dt.data.urllib.request, "urlopen", no_network)
    monkeypatch.setattr(dt.files.tempfile, "mkstemp", read_only)
    with pytest.raises(dt.data.MNISTError) as exc:
        dt.data.load_mnist("train", root=tmp_path, download=True)
    msg = str(exc.value)
    assert "cannot be written (Permission denied)" in msg and "make it writable" in msg and str(tmp_path) in msg
    assert "connection" not in msg
    assert list(tmp_path.iterdir()) == []  # nothing left behind


# ----------------------------------------------------------------------------- 6: non-finite values stop at once


class _NaNAfter(torch.nn.Module):
    """eps_theta = 0, except NaN from code step ``bad_from`` down."""

    def __init__(self, bad_from):
        super().__init__()
        self.bad_from = bad_from

    def forward(self, xt, t):
        out = torch.zeros_like(xt)
        return torch.where((t <= self.bad_from).reshape(-1, 1, 1, 1), torch.full_like(xt, math.nan), out)


def test_sampling_stops_at_the_first_non_finite_step():
    s = dt.linear_schedule(T=10)
    seen = []
    with pytest.raises(FloatingPointError, match=r"sampling \(ddpm\) produced a non-finite x_t after code step 6 "):
        dt.sample(_NaNAfter(6), s, (2, 1, 4, 4), callback=lambda t, xt, x0: seen.append(t), progress=False)
    assert seen == [9, 8, 7]  # the steps before were finished and reported, none after


def test_the_bound_stops_at_a_non_finite_model_output():
    s = dt.linear_schedule(T=4, beta_1=0.1, beta_T=0.5)
    with pytest.raises(FloatingPointError, match=r"eps_theta \(code steps 0..3\) became non-finite"):
        dt.vlb_bits_per_dim(_NaNAfter(1), s, torch.zeros(1, 1, 2, 2), progress=False)


def test_check_finite_names_what_and_where():
    from ddpm_tutor._tensor import check_finite

    x = torch.ones(3)
    assert check_finite(x, "x") is x
    with pytest.raises(FloatingPointError, match=r"x_t became non-finite at code step t=4 \(1 of 3 values"):
        check_finite(torch.tensor([1.0, math.inf, 0.0]), "x_t", 4)


# ----------------------------------------------------------------------------- 9: the model's T and the schedule's T


def _unet(T):
    return dt.UNet(dt.UNetConfig(channels=(8, 16), num_res_blocks=(1, 1), time_embed_dim=16, attention_heads=2,
                                 norm_groups=4, T=T))


def test_a_model_trained_with_one_T_is_not_sampled_with_another():
    model = _unet(100)
    with pytest.raises(ValueError, match=r"built for T=100 diffusion steps but the schedule has T=10.*load_model"):
        dt.sample(model, dt.linear_schedule(T=10), (1, 1, 28, 28), progress=False)
    with pytest.raises(ValueError, match=r"T=100 .* T=10"):
        dt.vlb_bits_per_dim(model, dt.linear_schedule(T=10), torch.zeros(1, 1, 28, 28), progress=False)
    with pytest.raises(ValueError, match=r"T=100 .* T=10"):
        dt.simple_loss(model, dt.linear_schedule(T=10), torch.zeros(1, 1, 28, 28))
    x = dt.sample(_unet(3), dt.linear_schedule(T=3), (1, 1, 28, 28), progress=False)  # agreeing T works
    assert x.shape == (1, 1, 28, 28)


# ----------------------------------------------------------------------------- a tiny trained run for the file cases

from dataclasses import replace  # noqa: E402

from ddpm_tutor import checkpoints as ck  # noqa: E402
from ddpm_tutor import training as tr  # noqa: E402
from ddpm_tutor.__main__ import main  # noqa: E402

TINY_UNET = dt.UNetConfig(channels=(8, 16), num_res_blocks=(1, 1), time_embed_dim=16, attention_heads=2, norm_groups=4,
                          T=20)
TINY = dt.TrainConfig(profile="tiny", steps=3, batch_size=4, lr=2e-3, warmup_steps=1, ema_decay=0.5, T=20, log_every=1,
                      checkpoint_every=3, sample_every=0, channels_last=False, unet=TINY_UNET)


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(16, 1, 28, 28, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def run(tmp_path_factory, images):
    """A folder holding the checkpoint of a 3-step run; tests copy it before changing it."""
    out = tmp_path_factory.mktemp("run")
    tr.train(TINY, data=images, out_dir=out, progress=False)
    return out / "checkpoint.pt"


@pytest.fixture
def ckpt(run, tmp_path):
    """A private copy of the run's checkpoint."""
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(run.read_bytes())
    return path


# ----------------------------------------------------------------------------- 11: image formats and file modes


def test_sample_writes_the_format_its_suffix_names(ckpt, tmp_path, capsys):
    from PIL import Image

    for name, fmt in (("x.jpg", "JPEG"), ("x.png", "PNG"), ("x.webp", "WEBP")):
        assert main(["sample", "--checkpoint", str(ckpt), "--n", "1", "--out", str(tmp_path / name), "--device", "cpu"]) == 0
        with Image.open(tmp_path / name) as image:
            assert image.format == fmt
    with pytest.raises(SystemExit, match=r"sample: .*x.xyz.*Pillow cannot write '.xyz'.*\.png, \.jpg"):
        main(["sample", "--checkpoint", str(ckpt), "--n", "1", "--out", str(tmp_path / "x.xyz")])
    assert not (tmp_path / "x.xyz").exists()


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_files_written_follow_the_umask(ckpt, tmp_path, mask):
    import os

    old = os.umask(mask)
    try:
        dt.plotting.save_image_grid(torch.zeros(1, 1, 4, 4), tmp_path / "grid.png")
        ck.export_checkpoint(ckpt, tmp_path / "slim.pt")
        ck.save_checkpoint(tmp_path / "saved.pt", ck.load_checkpoint(ckpt))
    finally:
        os.umask(old)
    for name in ("grid.png", "slim.pt", "slim.json", "saved.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "grid.png", "saved.pt", "slim.json", "slim.pt"]


# ----------------------------------------------------------------------------- 10: the command line checks before the work


def _no_sampling(monkeypatch):
    import ddpm_tutor.sampling

    def refuse(*a, **k):
        raise AssertionError("sampled although the output could not be written")

    monkeypatch.setattr(ddpm_tutor.sampling, "sample", refuse)


def test_sample_checks_its_outputs_before_sampling(ckpt, tmp_path, monkeypatch):
    _no_sampling(monkeypatch)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit, match=r"sample: the folder of --quality-json='.*file' is a file, not a folder"):
        main(["sample", "--checkpoint", str(ckpt), "--out", str(tmp_path / "x.png"), "--quality-json",
              str(blocker / "q.json")])
    with pytest.raises(SystemExit, match=r"sample: --out='.*' is a folder; pass a file name"):
        main(["sample", "--checkpoint", str(ckpt), "--out", str(tmp_path)])

    def read_only(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(dt.files.tempfile, "mkstemp", read_only)
    with pytest.raises(SystemExit, match=r"sample: the folder of --out='.*ro' cannot be written \(Permission denied\)"):
        main(["sample", "--checkpoint", str(ckpt), "--out", str(tmp_path / "ro" / "x.png")])


def test_quality_json_into_a_missing_folder_is_created_first(ckpt, tmp_path, monkeypatch):
    seen = []
    import ddpm_tutor.sampling

    real = ddpm_tutor.sampling.sample

    def watch(*a, **k):
        seen.append((tmp_path / "new").is_dir())  # the folder exists before sampling starts
        return real(*a, **k)

    monkeypatch.setattr(ddpm_tutor.sampling, "sample", watch)
    monkeypatch.setattr("ddpm_tutor.metrics.sample_quality", lambda x: _FakeQuality())
    assert main(["sample", "--checkpoint", str(ckpt), "--n", "1", "--out", str(tmp_path / "x.png"),
                 "--quality-json", str(tmp_path / "new" / "q.json"), "--device", "cpu"]) == 0
    assert seen == [True] and (tmp_path / "new" / "q.json").is_file()


class _FakeQuality:
    def passes(self):
        return False

    def to_dict(self):
        return {"confident_fraction": 0.0}


@pytest.mark.parametrize("device, message", [
    ("bogus", r"device='bogus' is not a torch device; use 'cpu'"),
    pytest.param("cuda", r"device='cuda' needs CUDA.*use device 'cpu'",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_a_device_that_is_not_there_is_named(ckpt, tmp_path, monkeypatch, images, device, message):
    _no_sampling(monkeypatch)
    with pytest.raises(SystemExit, match="sample: " + message):
        main(["sample", "--checkpoint", str(ckpt), "--out", str(tmp_path / "x.png"), "--device", device])
    with pytest.raises(ValueError, match=message):
        ck.load_model(ckpt, device=device)
    with pytest.raises(ValueError, match=message):
        tr.train(TINY, data=images, device=device, progress=False)


def test_train_checks_out_dir_before_training(tmp_path, images, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("trained although out_dir cannot be written")

    monkeypatch.setattr(tr, "_training_images", refuse)
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    with pytest.raises(ValueError, match=r"out_dir='.*file' is a file, not a folder; pass a folder"):
        tr.train(TINY, data=images, out_dir=blocker, progress=False)
    assert blocker.read_text() == "keep me"
    with pytest.raises(SystemExit, match=r"train: out_dir='.*file' is a file"):
        main(["train", "--profile", "smoke", "--out", str(blocker)])

    def read_only(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(dt.files.tempfile, "mkstemp", read_only)
    with pytest.raises(ValueError, match=r"out_dir='.*ro' cannot be written \(Permission denied\)"):
        tr.train(TINY, data=images, out_dir=tmp_path / "ro", progress=False)


# ----------------------------------------------------------------------------- 1, 2: exports that would eat their source


def test_export_onto_its_own_source_is_refused(ckpt):
    before = ckpt.read_bytes()
    with pytest.raises(ValueError, match=r"would overwrite it with the slim copy.*training checkpoint would be lost"):
        ck.export_checkpoint(ckpt, ckpt)
    with pytest.raises(ValueError, match="would overwrite it"):
        ck.export_checkpoint(ckpt, ckpt.parent / "." / ckpt.name)  # another spelling of the same file
    with pytest.raises(ValueError, match=r"would overwrite it with the record"):  # its record would land on it
        ck.export_checkpoint(ckpt.rename(ckpt.parent / "ck.json"), ckpt.parent / "ck.pt")
    assert not (ckpt.parent / "ck.pt").exists()
    (ckpt.parent / "ck.json").rename(ckpt)
    assert ckpt.read_bytes() == before
    assert ck.load_checkpoint(ckpt)["optimizer"]  # still a full training checkpoint


def test_export_whose_record_would_replace_it_is_refused(ckpt, tmp_path):
    with pytest.raises(ValueError, match=r"dst='.*slim.json'.*would replace the export itself.*\.pt"):
        ck.export_checkpoint(ckpt, tmp_path / "slim.json")
    assert not (tmp_path / "slim.json").exists()
    record = ck.export_checkpoint(ckpt, tmp_path / "slim.pt")  # the fix the message names works
    assert (tmp_path / "slim.json").is_file() and record["step"] == 3


# ----------------------------------------------------------------------------- 4: the shipped weights, verified everywhere


def test_fine_tuning_from_pretrained_verifies_the_shipped_weights(ckpt, tmp_path, monkeypatch, images):
    ref = tmp_path / "ref.pt"
    ck.export_checkpoint(ckpt, ref)
    monkeypatch.setattr(ck, "PRETRAINED", ref)
    tr.train(replace(TINY, steps=1), data=images, init_from="pretrained", progress=False)  # intact: it loads
    with open(ref, "ab") as fh:  # one byte more: torch.load would still read it
        fh.write(b"\0")
    with pytest.raises(ValueError, match=r"ref.pt has sha256 .* expected .*corrupt.*; reinstall"):
        tr.train(replace(TINY, steps=1), data=images, init_from="pretrained", progress=False)


# ----------------------------------------------------------------------------- 5: user checkpoints carry a hash of their weights


def test_every_bit_flip_in_a_checkpoints_weights_is_refused_or_harmless(ckpt):
    clean = ck.load_checkpoint(ckpt)
    assert set(clean["weights_sha256"]) == {"model", "ema"}
    raw = bytearray(ckpt.read_bytes())
    g = torch.Generator().manual_seed(0)
    positions = torch.randint(0, len(raw) * 8, (40,), generator=g).tolist()
    refused = harmless = 0
    for bit in positions:
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 1 << (bit % 8)
        ckpt.write_bytes(bytes(flipped))
        try:
            loaded = ck.load_checkpoint(ckpt)
        except ValueError as exc:
            assert str(ckpt) in str(exc)
            refused += 1
            continue
        for which in ("model", "ema"):  # what loads is exactly what was saved
            for name, value in clean[which].items():
                assert torch.equal(loaded[which][name], value), (bit, which, name)
        harmless += 1
    assert refused and refused + harmless == 40  # flips in the optimiser state or the history may load unnoticed


def test_a_corrupted_checkpoint_is_refused_by_name(ckpt):
    saved = ck.load_checkpoint(ckpt)
    saved["ema"]["conv_in.weight"][0, 0, 0, 0] += 1e-3  # changed after the record was made
    torch.save(saved, ckpt)
    with pytest.raises(ValueError, match=r"checkpoint.pt is corrupt: its 'ema' weights differ from the sha256"):
        ck.load_model(ckpt)


def test_nan_weights_are_refused_on_load_and_never_saved(ckpt, tmp_path):
    saved = ck.load_checkpoint(ckpt)
    del saved["weights_sha256"]  # as in a checkpoint from before the record
    saved["ema"]["conv_in.weight"][0] = math.nan
    torch.save(saved, ckpt)
    with pytest.raises(ValueError, match=r"its 'ema' weights hold NaN or inf \(\['conv_in.weight'\]\)"):
        ck.load_model(ckpt)
    with pytest.raises(FloatingPointError, match=r"hold NaN or inf .*not written, so .*keeps its last good checkpoint"):
        ck.save_checkpoint(tmp_path / "new.pt", saved)
    assert not (tmp_path / "new.pt").exists()


def test_a_checkpoint_from_before_the_record_still_loads(ckpt):
    saved = ck.load_checkpoint(ckpt)
    del saved["weights_sha256"]
    torch.save(saved, ckpt)
    model, schedule, _ = ck.load_model(ckpt)
    assert schedule.T == 20 and model.config.T == 20


# ----------------------------------------------------------------------------- 10: checkpoints that do not fit


def test_a_checkpoint_missing_a_key_is_named(ckpt, images):
    saved = ck.load_checkpoint(ckpt)
    del saved["ema"]
    torch.save(saved, ckpt)
    with pytest.raises(ValueError, match=r"checkpoint.pt lacks \['ema'\] .*damaged"):
        ck.load_model(ckpt)


def test_an_exported_checkpoint_is_not_resumed(run, tmp_path, images):
    ck.export_checkpoint(run, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"lacks \[.*'optimizer'.*\].*exported \(slim\) checkpoint cannot be resumed.*init_from"):
        tr.train(replace(TINY, steps=6), data=images, out_dir=tmp_path, progress=False)


def test_weights_that_do_not_fit_are_summed_up(ckpt):
    saved = ck.load_checkpoint(ckpt)
    saved["train_config"]["unet"]["channels"] = [8, 24]  # the config no longer describes the weights
    torch.save(saved, ckpt)
    with pytest.raises(ck.CheckpointMismatchError) as exc:
        ck.load_model(ckpt)
    msg = str(exc.value)
    assert "'ema' weights do not fit this network" in msg and "in the checkpoint" in msg and "retrain" in msg
    assert len(msg) < 900  # a summary, not torch's dump of every tensor


# ----------------------------------------------------------------------------- 10: a full disk while checkpointing


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"),
                                     RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter "
                                                  "failed writing file data/3: file write failed")])
def test_a_full_disk_keeps_the_old_checkpoint_and_says_so(run, tmp_path, monkeypatch, images, failure):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(run.read_bytes())
    before = (out / "checkpoint.pt").read_bytes()
    real_save = torch.save

    def full(obj, f, *a, **k):
        real_save(obj, f, *a, **k)  # half the bytes are out when the disk fills up
        raise failure

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=r"could not write .*checkpoint.pt: the disk is full .*previous checkpoint.pt "
                       r"there is unchanged. Free some space"):
        tr.train(replace(TINY, steps=6), data=images, out_dir=out, progress=False)
    assert (out / "checkpoint.pt").read_bytes() == before
    assert [p.name for p in out.iterdir()] == ["checkpoint.pt"]  # no temporary file left


# ----------------------------------------------------------------------------- 11: a resume with fewer steps


def test_resuming_with_fewer_steps_than_taken_is_refused(run, tmp_path, images):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(run.read_bytes())
    with pytest.raises(ValueError, match=r"already trained 3 steps, more than steps=2.*Resume with steps >= 3"):
        tr.train(replace(TINY, steps=2), data=images, out_dir=out, progress=False)
    assert tr.train(TINY, data=images, out_dir=out, progress=False).steps_run == 0  # as many is fine: nothing to do


# ----------------------------------------------------------------------------- 3: an exploding run stops, keeping its checkpoint


def test_an_exploding_loss_stops_at_once_even_in_warm_up(images):
    with pytest.raises(FloatingPointError, match=r"the loss became .* at step 1 \(NaN, inf or above 100.*Lower "
                       r"TrainConfig.lr \(now 1e\+09\)"):
        tr.train(replace(TINY, lr=1e9, warmup_steps=100), data=images, progress=False)


@pytest.mark.parametrize("log_every", [1, 3])  # 3: the losses are read (one sync) every 3 steps, not at each step
def test_an_exploding_run_keeps_its_last_good_checkpoint(tmp_path, monkeypatch, images, log_every):
    normal = tr.learning_rate

    def explode_after_3(config, step):
        return 1e9 if step >= 3 else normal(config, step)

    monkeypatch.setattr(tr, "learning_rate", explode_after_3)
    out = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=r"at step 4 .*the last good checkpoint is .*checkpoint.pt"):
        tr.train(replace(TINY, steps=9, log_every=log_every), data=images, out_dir=out, progress=False)
    model, _, saved = ck.load_model(out / "checkpoint.pt")
    assert saved["step"] == 3 and all(torch.isfinite(p).all() for p in model.parameters())


# ----------------------------------------------------------------------------- the same cases on the command line


def test_cli_sample_of_a_nan_model_exits_non_zero_without_an_image(ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(dt.UNet, "forward", lambda self, xt, t: torch.full_like(xt, math.nan))
    with pytest.raises(SystemExit, match=r"sample: sampling \(ddpm\) produced a non-finite x_t after code step 19 "):
        main(["sample", "--checkpoint", str(ckpt), "--n", "1", "--out", str(tmp_path / "x.png"), "--device", "cpu"])
    assert not (tmp_path / "x.png").exists()


def test_cli_refuses_a_corrupt_checkpoint_and_an_export_onto_itself(ckpt, tmp_path):
    before = ckpt.read_bytes()
    with pytest.raises(SystemExit, match=r"export: exporting .* would overwrite it with the slim copy"):
        main(["export", "--checkpoint", str(ckpt), "--out", str(ckpt)])
    with pytest.raises(SystemExit, match=r"export: dst='.*slim.json'.*would replace the export itself"):
        main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "slim.json")])
    assert ckpt.read_bytes() == before
    saved = ck.load_checkpoint(ckpt)
    saved["model"]["conv_in.bias"][0] += 1.0
    torch.save(saved, ckpt)
    with pytest.raises(SystemExit, match=r"sample: .*checkpoint.pt is corrupt: its 'model' weights differ"):
        main(["sample", "--checkpoint", str(ckpt), "--out", str(tmp_path / "x.png"), "--device", "cpu"])


def test_a_checkpoint_whose_schedule_and_network_disagree_on_T_is_refused(ckpt):
    saved = ck.load_checkpoint(ckpt)
    saved["train_config"]["T"] = 10  # the schedule would have 10 steps, the network was trained for 20
    torch.save(saved, ckpt)
    with pytest.raises(ValueError, match=r"TrainConfig.T=10 but unet.T=20; they must agree"):
        ck.load_model(ckpt)


def test_check_finite_passes_finite_values_whose_sum_overflows():
    from ddpm_tutor._tensor import check_finite

    big = torch.full((4,), 3e38)  # finite, but their float32 sum is inf
    assert check_finite(big, "x") is big
    with pytest.raises(FloatingPointError, match=r"1 of 4 values"):
        check_finite(torch.tensor([3e38, 3e38, math.nan, 0.0]), "x")
