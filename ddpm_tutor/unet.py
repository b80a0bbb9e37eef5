"""The noise-prediction network eps_theta(x_t, t): a small U-Net sized for 28x28 MNIST.

Ho et al. 2020 (sec. 4 and App. B) predict the noise eps that made
``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps`` (eq. 4) with a U-Net:
a PixelCNN++ backbone with group normalisation, a sinusoidal timestep embedding
added in every residual block, and self-attention at one low resolution. It is
trained with the simple loss ``|| eps - eps_theta(x_t, t) ||^2`` (eq. 14).

This module keeps every one of those ingredients but is built to train fast on
a laptop CPU, where the cost is almost all 3x3 convolutions (their backward
pass especially) plus the memory traffic of GroupNorm and SiLU. A 3x3
convolution at 28x28 costs 16 times one at 7x7 with the same channels, so:

* the 28x28 level is thin (16 channels, one residual block each way); most of
  the parameters sit at 14x14 and 7x7 where they are cheap;
* self-attention runs only at the lowest resolution (7x7, 49 positions),
  through :func:`torch.nn.functional.scaled_dot_product_attention`;
* one skip connection per resolution, *added* to the upsampled features
  (concatenating doubles the input of the next convolution; on a CPU that
  convolution's backward pass then costs more than twice as much);
* upsampling changes the channel count with a 3x3 convolution at the *low*
  resolution and then repeats pixels (nearest neighbour), so no extra
  convolution runs on the four times larger map;
* GroupNorm with 4 groups: PyTorch's CPU GroupNorm on ``channels_last`` tensors
  slows down as the number of groups grows (8 groups cost about twice as much
  at 28x28);
* no dropout by default: it draws a random number per activation, which on a
  CPU costs several times a SiLU (Ho et al. used 0.1 against overfitting
  CIFAR-10 over 800k steps; a CPU run is far shorter).

``benchmarks/bench_unet.py`` measures the result against diffusers'
``UNet2DModel`` in the configuration of Hugging Face's diffusion course.

Shapes: ``B`` batch, ``C`` channels, ``H = W = image_size``, ``E`` embedding width,
``L = len(channels)`` resolutions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UNetConfig", "UNet", "timestep_embedding"]


@dataclass(frozen=True)
class UNetConfig:
    """Settings of :class:`UNet`; saved inside every checkpoint (see :meth:`to_dict`).

    The defaults (1.12 M parameters, 79 M multiply-adds per 28x28 image) are sized
    for single-channel MNIST; see the module docstring for why they look the way they do.
    """

    in_channels: int = 1  # C of x_t (1 for MNIST greyscale)
    out_channels: int = 1  # C of eps_theta; equals in_channels for eps-prediction
    image_size: int = 28  # H = W of x_t; divisible by 2 ** (len(channels) - 1)
    channels: tuple[int, ...] = (16, 64, 128)  # feature channels per resolution: 28x28 (thin: costly), 14x14, 7x7
    num_res_blocks: tuple[int, ...] = (1, 1, 1)  # residual blocks per resolution on the way down, and again on the way up
    time_embed_dim: int = 128  # width E of the timestep embedding after its MLP
    attention_heads: int = 4  # heads of the self-attention at the lowest resolution (must divide channels[-1])
    norm_groups: int = 4  # GroupNorm groups (must divide every entry of channels); more are slower in channels_last
    dropout: float = 0.0  # dropout in residual blocks (Ho et al. 2020: 0.1 on CIFAR-10); 0.1 costs ~10% on a CPU
    scale_shift: bool = True  # time embedding gives a scale and shift after the 2nd norm (FiLM) instead of a plain add
    T: int = 1000  # number of diffusion steps; t must lie in 0..T-1 (code step t = paper step t+1)
    # class-conditional eps_theta(x_t, t, c) when set: classes 0..num_classes-1, and index num_classes is the
    # "no label" token (c = empty set) that classifier-free guidance needs (Ho & Salimans 2022); None: unconditional
    num_classes: int | None = None

    def __post_init__(self) -> None:
        # Accept lists (from JSON) and an int for num_res_blocks (the same at every resolution); store tuples,
        # so that the config stays hashable and two equal configs compare equal.
        if isinstance(self.num_res_blocks, int) and not isinstance(self.num_res_blocks, bool) and isinstance(self.channels, (tuple, list)):
            object.__setattr__(self, "num_res_blocks", (self.num_res_blocks,) * len(self.channels))
        for name in ("channels", "num_res_blocks"):
            value = getattr(self, name)
            if not isinstance(value, (tuple, list)):
                raise TypeError(f"UNetConfig.{name} must be a tuple of ints, got {type(value).__name__}")
            object.__setattr__(self, name, tuple(value))
        for name in ("in_channels", "out_channels", "image_size", "time_embed_dim", "attention_heads", "norm_groups", "T"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"UNetConfig.{name} must be a positive int, got {value!r}")
        if len(self.channels) < 2 or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in self.channels):
            raise ValueError(
                f"UNetConfig.channels must hold at least two positive ints (one per resolution), got {self.channels}"
            )
        if len(self.num_res_blocks) != len(self.channels) or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.num_res_blocks
        ):
            raise ValueError(
                f"UNetConfig.num_res_blocks must hold one positive int per entry of channels "
                f"({len(self.channels)} here), got {self.num_res_blocks}"
            )
        bad = [c for c in self.channels if c % self.norm_groups]
        if bad:
            raise ValueError(
                f"UNetConfig.norm_groups={self.norm_groups} must divide every entry of channels={self.channels}; "
                f"{bad} are not divisible"
            )
        if self.channels[-1] % self.attention_heads:
            raise ValueError(
                f"UNetConfig.attention_heads={self.attention_heads} must divide the lowest-resolution "
                f"channel count channels[-1]={self.channels[-1]}"
            )
        if self.time_embed_dim % 2:
            raise ValueError(f"UNetConfig.time_embed_dim must be even (sin and cos halves), got {self.time_embed_dim}")
        factor = 2 ** (len(self.channels) - 1)
        if self.image_size % factor:
            raise ValueError(
                f"UNetConfig.image_size={self.image_size} must be divisible by 2 ** (len(channels) - 1) = {factor} "
                f"so that every downsampling halves it exactly; pad the images or use fewer levels"
            )
        if not isinstance(self.dropout, (int, float)) or isinstance(self.dropout, bool) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"UNetConfig.dropout must be a float in [0, 1), got {self.dropout!r}")
        if not isinstance(self.scale_shift, bool):
            raise TypeError(f"UNetConfig.scale_shift must be a bool, got {type(self.scale_shift).__name__}")
        if self.num_classes is not None and (
            isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1
        ):
            raise ValueError(
                f"UNetConfig.num_classes must be None (unconditional) or a positive int (10 for MNIST digits), "
                f"got {self.num_classes!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict (tuples become lists); ``UNetConfig.from_dict`` inverts it.

        ``num_classes`` appears only when set, so an unconditional config writes the same dict as before
        conditioning existed (and its checkpoints compare equal field by field).
        """
        d = {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}
        if d["num_classes"] is None:
            del d["num_classes"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UNetConfig":
        """Rebuild a config from :meth:`to_dict`'s output; unknown keys raise ``ValueError``."""
        if not isinstance(d, dict):
            raise TypeError(f"UNetConfig.from_dict expects a dict, got {type(d).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(
                f"unknown UNetConfig field(s) {unknown}; known fields are {known}. "
                "Was the checkpoint written by a different version of ddpm_tutor?"
            )
        return cls(**d)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al. 2017, sec. 3.5; Ho et al. 2020, App. B).

    ``emb[b, i] = sin(t_b * w_i)`` and ``emb[b, half + i] = cos(t_b * w_i)`` with
    ``w_i = max_period ** (-i / half)``, ``half = dim // 2``.

    Args:
        t: timesteps, shape ``(B,)``, any integer (or float) dtype.
        dim: even embedding width.

    Returns:
        float32 tensor of shape ``(B, dim)`` on ``t``'s device.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)  # (half,)
    args = t.float()[:, None] * freqs[None, :]  # (B, half)
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)  # (B, dim)


class ResBlock(nn.Module):
    """Residual block: GroupNorm, SiLU, conv, add the time embedding, GroupNorm, SiLU, dropout, conv, plus x.

    With ``scale_shift`` the embedding instead gives a per-channel scale and shift
    applied after the second GroupNorm, ``norm(h) * (1 + scale) + shift``
    (FiLM, as in Nichol & Dhariwal 2021); without it the embedding is added to
    ``h`` before that norm, as in Ho et al. 2020.
    """

    def __init__(self, ch: int, embed_dim: int, groups: int, dropout: float, scale_shift: bool):
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = nn.GroupNorm(groups, ch)
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.embed = nn.Linear(embed_dim, 2 * ch if scale_shift else ch)
        self.norm2 = nn.GroupNorm(groups, ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # x: (B, ch, H, W); emb: (B, E), already passed through SiLU
        h = self.conv1(F.silu(self.norm1(x)))  # (B, ch, H, W)
        e = self.embed(emb)[:, :, None, None]  # (B, 2 ch or ch, 1, 1)
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)  # (B, ch, 1, 1) each
            h = torch.addcmul(shift, self.norm2(h), 1 + scale)  # norm2(h) * (1 + scale) + shift, in one pass
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))  # (B, ch, H, W)
        return x + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions, with a residual connection."""

    def __init__(self, ch: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Linear(ch, 3 * ch)
        self.proj = nn.Linear(ch, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x).permute(0, 2, 3, 1).reshape(B, H * W, C)  # (B, HW, C); a view when x is channels_last
        qkv = self.qkv(h).reshape(B, H * W, 3, self.heads, C // self.heads)  # (B, HW, 3, nh, hs)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, nh, HW, hs)
        a = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(hs)) v: (B, nh, HW, hs)
        a = self.proj(a.transpose(1, 2).reshape(B, H * W, C))  # (B, HW, C)
        return x + a.reshape(B, H, W, C).permute(0, 3, 1, 2)  # (B, C, H, W)


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 convolution."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)  # (B, out_ch, H/2, W/2)


class Upsample(nn.Module):
    """Double H and W: a 3x3 convolution at the low resolution, then nearest-neighbour repetition."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.conv(x), scale_factor=2.0, mode="nearest")  # (B, out_ch, 2H, 2W)


class UNet(nn.Module):
    r"""eps_theta(x_t, t): predicts the noise in ``x_t`` (Ho et al. 2020, eq. 11 and 14).

    ``model(xt, t)`` takes ``xt`` of shape ``(B, C, H, W)`` (float, ``C = config.in_channels``,
    ``H = W = config.image_size``) and ``t`` of shape ``(B,)`` (``torch.long``, code steps
    ``0..T-1``; code step t is the paper's step t+1) and returns eps_theta of shape
    ``(B, out_channels, H, W)`` in ``xt``'s dtype.

    Layout with the default config (channels 16, 64, 128; one block per resolution each way)::

        x_t (B,1,28,28) -> conv_in -> res ------------------------------(+)-> res -> norm, SiLU, conv_out -> eps
                                        \ down                          / up
                               (B,64,14,14) res ---------------(+)-> res
                                              \ down           / up
                                      (B,128,7,7) res -> attention -> res

    Every residual block also receives the timestep embedding (plus, for a conditional network with
    ``config.num_classes`` set, a learned class embedding: ``model(xt, t, labels)``). The output
    convolution starts at zero, so an untrained model predicts eps = 0.
    Works with ``model.to(memory_format=torch.channels_last)``, which is faster on CPUs.
    """

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        if config is None:
            config = UNetConfig()
        if not isinstance(config, UNetConfig):
            raise TypeError(f"config must be a UNetConfig, got {type(config).__name__}; use UNetConfig.from_dict(d)")
        self.config = cfg = config
        ch, E, G = cfg.channels, cfg.time_embed_dim, cfg.norm_groups

        def blocks(c: int, n: int) -> nn.ModuleList:
            return nn.ModuleList([ResBlock(c, E, G, cfg.dropout, cfg.scale_shift) for _ in range(n)])

        # Timestep embedding: sinusoid of width E, then a 2-layer MLP (Ho et al. 2020, App. B).
        self.time_mlp = nn.Sequential(nn.Linear(E, E), nn.SiLU(), nn.Linear(E, E))
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)

        # Down path: at every resolution but the lowest, residual blocks, keep a skip, then halve H and W.
        self.down = nn.ModuleList([blocks(ch[i], n) for i, n in enumerate(cfg.num_res_blocks[:-1])])
        self.downsample = nn.ModuleList([Downsample(ch[i], ch[i + 1]) for i in range(len(ch) - 1)])

        # Lowest resolution, where the two paths meet: residual blocks, self-attention, residual blocks.
        self.mid_down = blocks(ch[-1], cfg.num_res_blocks[-1])
        self.mid_attn = SelfAttention(ch[-1], cfg.attention_heads, G)
        self.mid_up = blocks(ch[-1], cfg.num_res_blocks[-1])

        # Up path, the mirror image of the down path: double H and W, add the skip, residual blocks.
        self.upsample = nn.ModuleList([Upsample(ch[i + 1], ch[i]) for i in range(len(ch) - 1)])
        self.up = nn.ModuleList([blocks(ch[i], n) for i, n in enumerate(cfg.num_res_blocks[:-1])])

        self.norm_out = nn.GroupNorm(G, ch[0])
        self.conv_out = nn.Conv2d(ch[0], cfg.out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # the untrained network predicts eps = 0
        nn.init.zeros_(self.conv_out.bias)

        # Class conditioning: a learned vector per class, plus one for "no label" (index num_classes), added to
        # the time embedding, so every residual block sees (t, c). Built last, so that with the same seed every
        # other weight starts as in the unconditional network; small, so that c starts as a gentle nudge.
        if cfg.num_classes is not None:
            self.class_embed = nn.Embedding(cfg.num_classes + 1, E)
            nn.init.normal_(self.class_embed.weight, std=0.02)

    @property
    def null_label(self) -> int | None:
        """The "no label" index (``num_classes``) of a conditional network; None for an unconditional one."""
        return self.config.num_classes

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (all, or only those with ``requires_grad``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def _check_inputs(self, xt: torch.Tensor, t: torch.Tensor) -> None:
        cfg = self.config
        if not isinstance(xt, torch.Tensor) or not xt.is_floating_point():
            raise TypeError(f"xt must be a float tensor of shape (B, C, H, W), got {getattr(xt, 'dtype', type(xt).__name__)}")
        expected = (cfg.in_channels, cfg.image_size, cfg.image_size)
        if xt.dim() != 4 or tuple(xt.shape[1:]) != expected:
            raise ValueError(
                f"xt must have shape (B, {expected[0]}, {expected[1]}, {expected[2]}) for this UNetConfig, "
                f"got {tuple(xt.shape)}; add a channel dimension with xt[:, None] or change the config"
            )
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"t must be a torch.long tensor of shape (B,), got {type(t).__name__}; use torch.full((B,), t)")
        if t.dtype != torch.long:
            raise TypeError(f"t must hold integer timesteps as torch.long (int64), got dtype {t.dtype}; use t.long()")
        if t.dim() != 1 or t.shape[0] != xt.shape[0]:
            raise ValueError(
                f"t must have shape (B,) = ({xt.shape[0]},), one timestep per image of xt, got {tuple(t.shape)}"
            )
        # only on the CPU: reading t back from a GPU would make every step wait for it (ddpm_tutor._tensor.check_t)
        if not torch.compiler.is_compiling() and t.device.type == "cpu" and t.numel() and (int(t.min()) < 0 or int(t.max()) >= cfg.T):
            raise ValueError(
                f"t must lie in 0..T-1 = 0..{cfg.T - 1} (code step t is the paper's step t+1), "
                f"got values in [{int(t.min())}, {int(t.max())}]"
            )

    def _check_labels(self, labels: torch.Tensor | None, batch: int) -> None:
        k = self.config.num_classes
        if k is None:
            if labels is not None:
                raise ValueError(
                    "labels were given to an unconditional U-Net (UNetConfig.num_classes is None); pass labels=None, "
                    "or train a conditional model (UNetConfig(num_classes=10), `train --conditional`)"
                )
            return
        if labels is None:
            return
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels must be a torch.long tensor of shape (B,), got {type(labels).__name__}")
        if labels.dtype != torch.long:
            raise TypeError(f"labels must be class indices as torch.long (int64), got dtype {labels.dtype}; use labels.long()")
        if labels.dim() != 1 or labels.shape[0] != batch:
            raise ValueError(f"labels must have shape (B,) = ({batch},), one class per image of xt, got {tuple(labels.shape)}")
        if not torch.compiler.is_compiling() and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > k):
            raise ValueError(
                f"labels must lie in 0..{k} (classes 0..{k - 1}, and {k} for 'no label'), "
                f"got values in [{int(labels.min())}, {int(labels.max())}]"
            )

    def forward(self, xt: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Return eps_theta(xt, t) (or eps_theta(xt, t, labels)), shape ``(B, out_channels, H, W)``, ``xt``'s dtype.

        ``labels``: only for a conditional network (``config.num_classes`` set): int64 ``(B,)`` in
        ``0..num_classes``, where ``num_classes`` means "no label"; None gives every image "no label".
        """
        self._check_inputs(xt, t)
        self._check_labels(labels, xt.shape[0])
        cfg = self.config
        emb = self.time_mlp(timestep_embedding(t, cfg.time_embed_dim).to(xt.dtype))  # (B, E)
        if cfg.num_classes is not None:
            if labels is None:
                labels = torch.full_like(t, cfg.num_classes)  # "no label" for every image
            emb = emb + self.class_embed(labels).to(emb.dtype)  # (B, E): time and class, one embedding
        emb = F.silu(emb)

        h = self.conv_in(xt)  # (B, ch[0], H, W)
        skips = []
        for i, (blocks, down) in enumerate(zip(self.down, self.downsample)):
            for block in blocks:
                h = block(h, emb)  # (B, ch[i], H / 2**i, W / 2**i)
            skips.append(h)
            h = down(h)  # (B, ch[i+1], H / 2**(i+1), W / 2**(i+1))

        for block in self.mid_down:
            h = block(h, emb)  # (B, ch[-1], H / 2**(L-1), W / 2**(L-1))
        h = self.mid_attn(h)
        for block in self.mid_up:
            h = block(h, emb)

        for i in reversed(range(len(self.up))):
            h = self.upsample[i](h) + skips.pop()  # (B, ch[i], H / 2**i, W / 2**i)
            for block in self.up[i]:
                h = block(h, emb)

        return self.conv_out(F.silu(self.norm_out(h)))  # (B, out_channels, H, W)
