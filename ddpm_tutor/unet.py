"""The noise-prediction network eps_theta(x_t, t): a small U-Net sized for 28x28 MNIST.

Ho et al. 2020 (sec. 4 and App. B) train a U-Net (a PixelCNN++ backbone with
group normalisation, a sinusoidal timestep embedding added in every residual
block, and self-attention at 16x16) to predict the noise eps that made
``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps`` (eq. 4), trained with
the simple loss ``|| eps - eps_theta(x_t, t) ||^2`` (eq. 14).

This module keeps every ingredient of that network but is sized for a laptop CPU
(the bench in ``benchmarks/bench_unet.py`` compares it with diffusers'
``UNet2DModel``):

* the 28x28 level is thin (few channels, one block), since a 3x3 convolution
  there costs 16 times what it costs at 7x7 for the same channel count;
* self-attention runs only at the lowest resolution (7x7, 49 tokens), through
  :func:`torch.nn.functional.scaled_dot_product_attention`;
* one skip connection per resolution (concatenated, as in the original U-Net)
  instead of one per residual block;
* upsampling changes the channel count with a 3x3 convolution at the *low*
  resolution and then repeats pixels (nearest neighbour), so no convolution
  runs on the upsampled, four times larger map.

Shapes: ``B`` batch, ``C`` channels, ``H = W = image_size``, ``E`` embedding width.
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

    The defaults (about 1.1 M parameters) are sized for 28x28 single-channel MNIST.
    """

    in_channels: int = 1  # C of x_t (1 for MNIST greyscale)
    out_channels: int = 1  # C of eps_theta; equals in_channels for eps-prediction
    image_size: int = 28  # H = W of x_t; divisible by 2 ** (len(channels) - 1)
    channels: tuple[int, ...] = (32, 64, 128)  # feature channels per resolution: 28x28, 14x14, 7x7
    num_res_blocks: tuple[int, ...] = (1, 2, 2)  # residual blocks per resolution, down path (the up path mirrors it)
    time_embed_dim: int = 128  # width E of the timestep embedding after its MLP
    attention_heads: int = 4  # heads of the self-attention at the lowest resolution (must divide channels[-1])
    norm_groups: int = 8  # GroupNorm groups (must divide every entry of channels)
    dropout: float = 0.1  # dropout inside residual blocks (Ho et al. 2020 use 0.1 on CIFAR-10)
    scale_shift: bool = True  # time embedding gives a scale and shift after the 2nd norm (FiLM) instead of a plain add
    T: int = 1000  # number of diffusion steps; t must lie in 0..T-1 (code step t = paper step t+1)

    def __post_init__(self) -> None:
        # Accept lists (from JSON) and a single int for num_res_blocks; store tuples.
        for name in ("channels", "num_res_blocks"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool) and name == "num_res_blocks":
                value = (value,) * len(tuple(self.channels))
            if not isinstance(value, (tuple, list)):
                raise TypeError(f"UNetConfig.{name} must be a tuple of ints, got {type(value).__name__}")
            object.__setattr__(self, name, tuple(value))
        for name in ("in_channels", "out_channels", "image_size", "time_embed_dim", "attention_heads", "norm_groups", "T"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"UNetConfig.{name} must be a positive int, got {value!r}")
        if len(self.channels) < 1 or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in self.channels):
            raise ValueError(f"UNetConfig.channels must be a non-empty tuple of positive ints, got {self.channels}")
        if len(self.num_res_blocks) != len(self.channels) or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.num_res_blocks
        ):
            raise ValueError(
                f"UNetConfig.num_res_blocks must hold one positive int per entry of channels "
                f"({len(self.channels)}), got {self.num_res_blocks}"
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

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict (tuples become lists); ``UNetConfig.from_dict`` inverts it."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

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
    """Residual block: GroupNorm, SiLU, conv, add the time embedding, GroupNorm, SiLU, dropout, conv, plus skip."""

    def __init__(self, in_ch: int, out_ch: int, embed_dim: int, groups: int, dropout: float, scale_shift: bool):
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.embed = nn.Linear(embed_dim, 2 * out_ch if scale_shift else out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # x: (B, in_ch, H, W); emb: (B, E) already passed through SiLU
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out_ch, H, W)
        e = self.embed(emb)[:, :, None, None]  # (B, out_ch or 2*out_ch, 1, 1)
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)  # (B, out_ch, 1, 1) each
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))  # (B, out_ch, H, W)
        return h + self.skip(x)


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
    """eps_theta(x_t, t): predicts the noise in ``x_t`` (Ho et al. 2020, eq. 11 and 14).

    ``model(xt, t)`` takes ``xt`` of shape ``(B, C, H, W)`` (float, ``C = config.in_channels``,
    ``H = W = config.image_size``) and ``t`` of shape ``(B,)`` (``torch.long``, code steps
    ``0..T-1``) and returns ``eps_theta`` with ``xt``'s shape and dtype (``C = out_channels``).

    The output convolution starts at zero, so an untrained model predicts eps = 0.
    Works with ``model.to(memory_format=torch.channels_last)`` (usually faster on CPU).
    """

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        if config is None:
            config = UNetConfig()
        if not isinstance(config, UNetConfig):
            raise TypeError(f"config must be a UNetConfig, got {type(config).__name__}; use UNetConfig.from_dict(d)")
        self.config = cfg = config
        ch, E, G = cfg.channels, cfg.time_embed_dim, cfg.norm_groups
        block = lambda i, o: ResBlock(i, o, E, G, cfg.dropout, cfg.scale_shift)  # noqa: E731
        levels = len(ch)

        # Timestep embedding: sinusoid of width E, then a 2-layer MLP (Ho et al. 2020, App. B).
        self.time_mlp = nn.Sequential(nn.Linear(E, E), nn.SiLU(), nn.Linear(E, E))

        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)

        # Down path: at level i, num_res_blocks[i] blocks, keep a skip, then downsample to level i+1.
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        in_ch = ch[0]
        for i in range(levels):
            self.down.append(nn.ModuleList([block(in_ch if j == 0 else ch[i], ch[i]) for j in range(cfg.num_res_blocks[i])]))
            in_ch = ch[i]
            if i < levels - 1:
                self.downsample.append(Downsample(ch[i], ch[i]))
        self.down_attn = SelfAttention(ch[-1], cfg.attention_heads, G)

        # Middle, at the lowest resolution: block, attention, block.
        self.mid1 = block(ch[-1], ch[-1])
        self.mid_attn = SelfAttention(ch[-1], cfg.attention_heads, G)
        self.mid2 = block(ch[-1], ch[-1])

        # Up path, lowest level first: concatenate that level's skip, blocks, then upsample to level i-1.
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(levels)):
            self.up.append(nn.ModuleList([block(2 * ch[i] if j == 0 else ch[i], ch[i]) for j in range(cfg.num_res_blocks[i])]))
            if i > 0:
                self.upsample.append(Upsample(ch[i], ch[i - 1]))
        self.up_attn = SelfAttention(ch[-1], cfg.attention_heads, G)

        self.norm_out = nn.GroupNorm(G, ch[0])
        self.conv_out = nn.Conv2d(ch[0], cfg.out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # the untrained network predicts eps = 0
        nn.init.zeros_(self.conv_out.bias)

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
        if not torch.compiler.is_compiling() and t.numel() and (int(t.min()) < 0 or int(t.max()) >= cfg.T):
            raise ValueError(
                f"t must lie in 0..T-1 = 0..{cfg.T - 1} (code step t is the paper's step t+1), "
                f"got values in [{int(t.min())}, {int(t.max())}]"
            )

    def forward(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Return eps_theta(xt, t), shape ``(B, out_channels, H, W)``, same dtype as ``xt``."""
        self._check_inputs(xt, t)
        cfg = self.config
        emb = F.silu(self.time_mlp(timestep_embedding(t, cfg.time_embed_dim).to(xt.dtype)))  # (B, E)

        h = self.conv_in(xt)  # (B, ch[0], H, W)
        skips = []
        for i, blocks in enumerate(self.down):
            for blk in blocks:
                h = blk(h, emb)  # (B, ch[i], H / 2**i, W / 2**i)
            if i == len(self.down) - 1:
                h = self.down_attn(h)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)  # (B, ch[i], H / 2**(i+1), W / 2**(i+1))

        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)  # (B, ch[-1], H / 2**(L-1), W / 2**(L-1))

        for k, blocks in enumerate(self.up):  # k = 0 is the lowest resolution
            h = torch.cat([h, skips.pop()], dim=1)  # (B, 2 ch[i], ...)
            for blk in blocks:
                h = blk(h, emb)  # (B, ch[i], ...)
            if k == 0:
                h = self.up_attn(h)
            if k < len(self.upsample):
                h = self.upsample[k](h)  # (B, ch[i-1], 2x the size)

        return self.conv_out(F.silu(self.norm_out(h)))  # (B, out_channels, H, W)
