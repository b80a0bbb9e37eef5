"""Tests for ddpm_tutor.unet: shapes, argument checks, config round trip, and that the network can learn."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from ddpm_tutor.unet import UNet, UNetConfig, timestep_embedding

# A tiny network on 8x8 images: every code path of the default one, at a fraction of the cost.
TINY = UNetConfig(
    image_size=8,
    channels=(8, 16),
    num_res_blocks=(1, 1),
    time_embed_dim=16,
    attention_heads=2,
    norm_groups=4,
    dropout=0.0,
    T=100,
)


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: a second thread only adds synchronisation, which on a busy machine costs 10x."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_batch(B: int = 4, seed: int = 0, cfg: UNetConfig = TINY):
    g = torch.Generator().manual_seed(seed)
    xt = torch.randn(B, cfg.in_channels, cfg.image_size, cfg.image_size, generator=g)
    eps = torch.randn(B, cfg.out_channels, cfg.image_size, cfg.image_size, generator=g)
    t = torch.randint(0, cfg.T, (B,), generator=g)
    return xt, t, eps


def one_step(model: UNet, lr: float = 1e-2, seed: int = 0) -> None:
    """One AdamW step on the simple loss ||eps - eps_theta(xt, t)||^2 (Ho et al. 2020, eq. 14)."""
    xt, t, eps = tiny_batch(seed=seed, cfg=model.config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    F.mse_loss(model(xt, t), eps).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def stepped_tiny_model() -> UNet:
    """The TINY U-Net after one training step (so its output is no longer zero), in eval mode."""
    torch.manual_seed(0)
    model = UNet(TINY)
    one_step(model)
    return model.eval()


def test_default_output_shape_and_dtype():
    torch.manual_seed(0)
    model = UNet()
    xt = torch.randn(2, 1, 28, 28)
    t = torch.tensor([0, 999])
    out = model(xt, t)
    assert out.shape == xt.shape
    assert out.dtype == xt.dtype


def test_default_config_is_a_capable_mnist_model():
    cfg = UNetConfig()
    assert (cfg.in_channels, cfg.out_channels, cfg.image_size) == (1, 1, 28)
    n = UNet(cfg).num_parameters()
    assert 0.5e6 <= n <= 2.0e6, n


def test_config_is_checked():
    with pytest.raises(TypeError, match="UNetConfig"):
        UNet({"channels": [16, 32]})


def test_num_parameters_counts_every_parameter():
    torch.manual_seed(0)
    model = UNet(TINY)
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())
    model.conv_in.weight.requires_grad_(False)
    assert model.num_parameters(trainable_only=True) == model.num_parameters() - model.conv_in.weight.numel()


@pytest.mark.parametrize(
    "t, error, match",
    [
        (torch.tensor([1.0, 2.0, 3.0, 4.0]), TypeError, "torch.long"),
        (torch.tensor([1, 2, 3, 4], dtype=torch.int32), TypeError, "torch.long"),
        (torch.tensor([True, False, True, False]), TypeError, "torch.long"),
        (5, TypeError, "tensor"),
        (torch.tensor([[1], [2], [3], [4]]), ValueError, r"shape \(B,\)"),
        (torch.tensor([1, 2, 3]), ValueError, r"shape \(B,\)"),
        (torch.tensor(3), ValueError, r"shape \(B,\)"),
        (torch.tensor([0, 1, 2, 100]), ValueError, "0..T-1"),
        (torch.tensor([-1, 1, 2, 3]), ValueError, "0..T-1"),
    ],
)
def test_bad_t_raises(t, error, match):
    model = UNet(TINY)
    xt, _, _ = tiny_batch()
    with pytest.raises(error, match=match):
        model(xt, t)


def test_bad_xt_raises():
    model = UNet(TINY)
    _, t, _ = tiny_batch()
    with pytest.raises(ValueError, match="xt must have shape"):
        model(torch.randn(4, 8, 8), t)  # channel dimension missing
    with pytest.raises(ValueError, match="xt must have shape"):
        model(torch.randn(4, 1, 16, 16), t)  # wrong image size
    with pytest.raises(TypeError, match="float"):
        model(torch.zeros(4, 1, 8, 8, dtype=torch.long), t)


def test_config_round_trip_through_json():
    for cfg in (UNetConfig(), TINY, UNetConfig(scale_shift=False, dropout=0.0, num_res_blocks=2)):
        d = json.loads(json.dumps(cfg.to_dict()))
        assert UNetConfig.from_dict(d) == cfg
    assert UNetConfig(num_res_blocks=2).num_res_blocks == (2, 2, 2)
    assert UNetConfig(channels=[32, 64, 128]).channels == (32, 64, 128)


def test_config_rejects_unknown_fields():
    d = UNetConfig().to_dict()
    d["chanels"] = [1, 2]
    with pytest.raises(ValueError, match=r"unknown UNetConfig field\(s\) \['chanels'\]"):
        UNetConfig.from_dict(d)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"norm_groups": 5}, "norm_groups"),
        ({"attention_heads": 5}, "attention_heads"),
        ({"image_size": 30}, "image_size"),
        ({"num_res_blocks": (1, 2)}, "num_res_blocks"),
        ({"dropout": 1.0}, "dropout"),
        ({"time_embed_dim": 15}, "time_embed_dim"),
        ({"channels": ()}, "channels"),
    ],
)
def test_config_validates_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNetConfig(**kwargs)


def test_output_conv_starts_at_zero():
    torch.manual_seed(0)
    model = UNet(TINY)
    assert torch.count_nonzero(model.conv_out.weight) == 0
    assert torch.count_nonzero(model.conv_out.bias) == 0
    xt, t, _ = tiny_batch()
    assert torch.count_nonzero(model(xt, t)) == 0


def test_timestep_embedding_values():
    emb = timestep_embedding(torch.tensor([0, 7]), 16)
    assert emb.shape == (2, 16) and emb.dtype == torch.float32
    torch.testing.assert_close(emb[0], torch.cat([torch.zeros(8), torch.ones(8)]))
    # the first frequency is 1: emb[:, 0] = sin(t) and emb[:, 8] = cos(t); the last is 10000 ** (-7/8)
    w_last = 10000.0 ** (-7 / 8)
    expected = torch.tensor([math.sin(7.0), math.cos(7.0), math.sin(7.0 * w_last), math.cos(7.0 * w_last)])
    torch.testing.assert_close(emb[1, [0, 8, 7, 15]], expected)


def test_output_depends_on_t_after_one_step():
    model = stepped_tiny_model()
    xt, _, _ = tiny_batch()
    with torch.no_grad():
        out_early = model(xt, torch.zeros(4, dtype=torch.long))
        out_late = model(xt, torch.full((4,), TINY.T - 1))
        out_early_again = model(xt, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(out_early, out_early_again)  # eval mode is deterministic
    assert (out_early - out_late).abs().max() > 1e-4


@pytest.mark.parametrize("scale_shift", [True, False])
def test_gradients_reach_every_parameter(scale_shift):
    torch.manual_seed(0)
    model = UNet(UNetConfig(**{**TINY.to_dict(), "scale_shift": scale_shift}))
    one_step(model)  # the zero output conv blocks gradients to everything before it at initialisation
    xt, t, eps = tiny_batch(seed=1)
    F.mse_loss(model(xt, t), eps).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or torch.count_nonzero(p.grad) == 0]
    assert not missing, missing


def test_tiny_model_fits_a_fixed_batch():
    torch.manual_seed(0)
    model = UNet(TINY)
    xt, t, eps = tiny_batch(B=8)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = F.mse_loss(model(xt, t), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(eps.pow(2).mean().item())  # zero output at initialisation
    assert losses[-1] < 0.5 * losses[0], losses


def test_channels_last_matches_contiguous():
    model = stepped_tiny_model()
    xt, t, _ = tiny_batch()
    with torch.no_grad():
        ref = model(xt, t)
        model_cl = model.to(memory_format=torch.channels_last)
        out = model_cl(xt.contiguous(memory_format=torch.channels_last), t)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_default_channels_last_matches_contiguous():
    torch.manual_seed(0)
    model = UNet().eval()
    with torch.no_grad():
        for p in model.conv_out.parameters():  # make the output non-trivial
            p.normal_(0, 0.1)
        xt = torch.randn(2, 1, 28, 28)
        t = torch.tensor([3, 500])
        ref = model(xt, t)
        out = model.to(memory_format=torch.channels_last)(xt.contiguous(memory_format=torch.channels_last), t)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
