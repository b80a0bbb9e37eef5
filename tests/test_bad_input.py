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
    monkeypatch.setattr(dt.data.tempfile, "mkstemp", read_only)
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
    with pytest.raises(FloatingPointError, match=r"the sample became non-finite at code step t=6 \(32 of 32 values"):
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
