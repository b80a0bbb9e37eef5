"""Run configuration: :class:`TrainConfig`, the ``gpu``/``cpu``/``smoke`` profiles, and what a config implies
(its noise schedule, its learning rate at each step, its memory format).

Profiles (:data:`PROFILES`) size a run for where it executes: ``gpu`` (a Colab T4:
minutes), ``cpu`` (a 2-core laptop: under 45 minutes) and ``smoke`` (seconds, for
CI). :func:`resolve_profile` picks ``gpu`` when CUDA is present and ``cpu``
otherwise; the environment variable ``DDPM_TUTOR_PROFILE`` overrides it.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch

from .schedules import NoiseSchedule, cosine_schedule, linear_schedule
from .unet import UNetConfig

__all__ = [
    "TrainConfig",
    "PROFILES",
    "PROFILE_NOTES",
    "resolve_profile",
    "profile_config",
    "build_schedule",
    "learning_rate",
    "memory_format",
    "apply_overrides",
]


#: Fields that older versions of TrainConfig had and checkpoints may still carry, with the value every run used.
RETIRED_FIELDS: dict[str, Any] = {"weight_decay": 0.0, "ema_start": 0}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; saved inside every checkpoint."""

    profile: str = "cpu"  # the profile this config came from (gpu, cpu, smoke, or custom)
    steps: int = 4000  # optimiser steps in total
    batch_size: int = 128  # images per step
    lr: float = 1e-3  # peak AdamW learning rate, reached after warmup_steps
    warmup_steps: int = 200  # linear warm-up from 0 to lr
    lr_decay: str = "constant"  # after warm-up: "constant", or "cosine": half a cosine from lr down to 0 at `steps`
    # (so a cosine run resumes only with the steps it planned: more would raise the rate again, a warm restart)
    grad_clip: float = 1.0  # clip the global gradient norm to this value (0 turns clipping off)
    ema_decay: float = 0.999  # EMA weight decay: ema = decay * ema + (1 - decay) * weights, every step
    loss_weighting: str = "none"  # "none": L_simple, every t weighted 1 (Algorithm 1); "min_snr": min(SNR_t, gamma) / SNR_t
    min_snr_gamma: float = 5.0  # gamma of "min_snr" (Hang et al. 2023): steps with SNR_t above it are weighted down
    schedule: str = "linear"  # noise schedule: "linear" (Ho et al.) or "cosine" (Nichol & Dhariwal)
    T: int = 1000  # diffusion steps; a linear schedule with T != 1000 scales beta_1 and beta_T by 1000 / T
    data_limit: int | None = None  # use only the first N training images (None: all 60,000)
    seed: int = 0  # seeds the initial weights, the batches, t and eps
    mixed_precision: str = "auto"  # "auto" (bf16 if supported, else fp16, on CUDA; off on CPU), "bf16" (CUDA or CPU), "fp16" (CUDA), "off"
    channels_last: bool = True  # channels_last memory format (faster convolutions on CPU and recent GPUs)
    compile: bool = False  # torch.compile the model (pays off for long runs; first steps are slow)
    log_every: int = 50  # record the mean loss every this many steps
    sample_every: int = 0  # draw a small grid of samples every this many steps (0: never)
    sample_count: int = 16  # how many images each of those grids holds
    checkpoint_every: int = 500  # write a checkpoint every this many steps (and at the end)
    # conditional U-Net only (unet.num_classes set): each label is replaced by "no label" with this probability, so
    # one network learns eps_theta(x_t, c) and eps_theta(x_t, no label) (classifier-free guidance, chapter 12)
    label_dropout: float = 0.1
    # what the run trains on when train() is given no data: "mnist", "fashion-mnist", "cifar10" or "folder:PATH"
    # (ddpm_tutor.datasets.load_dataset); unet.in_channels and unet.image_size must match its images
    dataset: str = "mnist"
    unet: UNetConfig = field(default_factory=UNetConfig)  # the network

    def __post_init__(self) -> None:
        if isinstance(self.unet, dict):
            object.__setattr__(self, "unet", UNetConfig.from_dict(self.unet))
        for name in ("steps", "batch_size", "T", "log_every", "checkpoint_every", "sample_count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive int, got {value!r}")
        for name in ("warmup_steps", "sample_every", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TrainConfig.{name} must be an int >= 0, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"TrainConfig.ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.lr_decay not in ("constant", "cosine"):
            raise ValueError(f"TrainConfig.lr_decay must be 'constant' or 'cosine', got {self.lr_decay!r}")
        if self.loss_weighting not in ("none", "min_snr"):
            raise ValueError(f"TrainConfig.loss_weighting must be 'none' or 'min_snr', got {self.loss_weighting!r}")
        if not self.min_snr_gamma > 0:
            raise ValueError(f"TrainConfig.min_snr_gamma must be > 0 (Hang et al. use 5), got {self.min_snr_gamma}")
        if self.schedule not in ("linear", "cosine"):
            raise ValueError(f"TrainConfig.schedule must be 'linear' or 'cosine', got {self.schedule!r}")
        if self.mixed_precision not in ("auto", "bf16", "fp16", "off"):
            raise ValueError(
                f"TrainConfig.mixed_precision must be one of 'auto', 'bf16', 'fp16', 'off', got {self.mixed_precision!r}"
            )
        if self.data_limit is not None and (isinstance(self.data_limit, bool) or self.data_limit < 1):
            raise ValueError(f"TrainConfig.data_limit must be None or a positive int, got {self.data_limit!r}")
        if isinstance(self.label_dropout, bool) or not isinstance(self.label_dropout, (int, float)) or not 0.0 <= self.label_dropout < 1.0:
            raise ValueError(f"TrainConfig.label_dropout must be a float in [0, 1) (Ho & Salimans: 0.1 or 0.2), got {self.label_dropout!r}")
        if not isinstance(self.dataset, str) or not (
            self.dataset in ("mnist", "fashion-mnist", "cifar10") or self.dataset.startswith("folder:")
        ):
            raise ValueError(
                f"TrainConfig.dataset must be 'mnist', 'fashion-mnist', 'cifar10' or 'folder:PATH', got {self.dataset!r}"
            )
        if self.unet.T != self.T:
            raise ValueError(
                f"TrainConfig.T={self.T} but unet.T={self.unet.T}; they must agree (use dataclasses.replace on both)"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["unet"] = self.unet.to_dict()
        if self.unet.num_classes is None:  # unused without labels: an unconditional run writes the dict it always did
            del d["label_dropout"]
        if self.dataset == "mnist":  # likewise for a run on MNIST, the default
            del d["dataset"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        for name, default in RETIRED_FIELDS.items():  # older checkpoints carry them, at their default
            if name in d and d.pop(name) != default:
                raise ValueError(
                    f"this config sets TrainConfig.{name}, a field this version of ddpm_tutor no longer has "
                    f"(only {name}={default!r}, what every run used, is understood); use the version that wrote it"
                )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**d)


def _profiles() -> dict[str, TrainConfig]:
    # 2 cores: a U-Net thin at 28x28, where every channel is costly, and wider at 14x14 and 7x7, where
    # strokes become digits (0.7 M parameters, no dropout for a short run); a learning rate that decays
    # to 0, T = 400 steps, so that sampling the 1,000 images that judge it takes minutes, and min-SNR-1
    # loss weights, which spend the short run's gradient on the noisy steps that shape the digit
    # (measured on 1,000 samples each: L_simple 78.7 %, gamma = 5 81.1 %, gamma = 1 81.6 % confident; README).
    # lr 2e-3: twice that gave 82.1 %, within the sampling error.
    cpu_unet = UNetConfig(channels=(16, 48, 96), num_res_blocks=(1, 1, 1), norm_groups=4, dropout=0.0, T=400)
    cpu = TrainConfig(
        profile="cpu", steps=5000, batch_size=128, lr=2e-3, warmup_steps=200, lr_decay="cosine",
        ema_decay=0.998, T=400, loss_weighting="min_snr", min_snr_gamma=1.0,
        sample_every=1000, checkpoint_every=250, log_every=50, unet=cpu_unet,
    )
    # A GPU runs a network this small at the pace at which Python launches its kernels, not at the pace of
    # its arithmetic: one step of batch 128 took 19.7 ms with the cpu profile's network and 23.3 ms with the
    # default 1.12 M-parameter U-Net on an H200, the GPU a fifth busy. So the gpu profile trains the cpu
    # profile's network twice as long (measured on 1,000 samples each: 85.3 % confident; the default U-Net
    # for 8,000 steps 81.9 % with min-SNR-1 weights, 78.6 % with L_simple; README). More images per step
    # help further where a GPU has room for them (batch 256: 88.3 %, batch 512: 90.8 %, the H200 then fully
    # busy); the reference checkpoint is the batch-512 run, and the profile keeps batch 128, a quarter of the
    # arithmetic, for smaller GPUs such as Colab's T4.
    gpu = replace(cpu, profile="gpu", steps=10000, lr=2e-3, sample_every=2000, checkpoint_every=1000)
    smoke_unet = UNetConfig(channels=(16, 32), num_res_blocks=(1, 1), time_embed_dim=32, attention_heads=2, norm_groups=4, T=100)
    smoke = TrainConfig(
        profile="smoke", steps=30, batch_size=32, lr=2e-3, warmup_steps=5, ema_decay=0.9, T=100, data_limit=512,
        sample_every=15, sample_count=8, checkpoint_every=15, log_every=5, channels_last=False, unet=smoke_unet,
    )
    return {"gpu": gpu, "cpu": cpu, "smoke": smoke}


#: The three training profiles, by name.
PROFILES: dict[str, TrainConfig] = _profiles()

#: What each profile is for, and what quality to expect from it.
PROFILE_NOTES: dict[str, str] = {
    "gpu": "the real run, for a GPU such as a Colab T4: recognisable, diverse digits in minutes (3.3 on an H200); "
    "about 85 % of them confidently classified (chapter 8).",
    "cpu": "a reduced but real run for a 2-core CPU: recognisable, diverse digits in under 45 minutes; "
    "about 4 in 5 of them confidently classified (chapter 8).",
    "smoke": "seconds, for CI: checks that everything runs end to end; its samples are still noise.",
}


def resolve_profile(profile: str | None = None) -> str:
    """The profile to use: ``profile`` if given, else ``$DDPM_TUTOR_PROFILE``, else ``gpu`` with CUDA and ``cpu`` without."""
    name = profile or os.environ.get("DDPM_TUTOR_PROFILE") or ("gpu" if torch.cuda.is_available() else "cpu")
    if name not in PROFILES:
        raise ValueError(
            f"unknown profile {name!r} (from {'the argument' if profile else 'DDPM_TUTOR_PROFILE'}); "
            f"choose one of {sorted(PROFILES)}"
        )
    return name


def profile_config(profile: str | None = None, **overrides: Any) -> TrainConfig:
    """The :class:`TrainConfig` of a profile (see :func:`resolve_profile`), with fields overridden by keyword."""
    return replace(PROFILES[resolve_profile(profile)], **overrides)


def build_schedule(config: TrainConfig) -> NoiseSchedule:
    """The noise schedule a config trains with. A linear schedule with T != 1000 keeps beta_t * T fixed (Nichol & Dhariwal 2021)."""
    if config.schedule == "cosine":
        return cosine_schedule(config.T)
    scale = 1000 / config.T
    return linear_schedule(config.T, beta_1=1e-4 * scale, beta_T=min(0.02 * scale, 0.999))


def learning_rate(config: TrainConfig, step: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based): a linear warm-up to ``config.lr``, then constant
    or half a cosine down to 0 at ``config.steps`` (so a cosine run's rate depends on the steps it plans)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_decay == "cosine":
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.lr


def memory_format(config: TrainConfig) -> torch.memory_format:
    """The tensor layout a run trains in, and its models are loaded in."""
    return torch.channels_last if config.channels_last else torch.contiguous_format


def apply_overrides(config: TrainConfig, settings: list[str]) -> tuple[TrainConfig, dict[str, Any]]:
    """``config`` with fields set from ``["field=value", "unet.field=value", ...]`` (the ``train --set`` option).

    A value is read as the type of the field it replaces: ``16,64,128`` for a tuple, ``true``/``false`` for a
    bool, ``none`` for an optional field. ``T`` and ``unet.T`` move together (the schedule and the network
    must agree). The configs validate the result; their messages name the field. Returns the new config and
    the fields that were set, as ``{"name": value}`` (``"unet.name"`` for the network's).

    Raises:
        ValueError: a setting without ``=``, an unknown field (the message lists the known ones), a value
            that does not parse, or one the configs refuse.
    """
    top: dict[str, Any] = {}
    net: dict[str, Any] = {}
    for setting in settings:
        key, sep, text = setting.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {setting!r}: write FIELD=VALUE, e.g. ema_decay=0.9995 or unet.channels=16,64,128")
        target, owner, name = (net, config.unet, key[5:]) if key.startswith("unet.") else (top, config, key)
        known = {f.name: f for f in fields(owner)}
        if name == "unet" or name not in known:
            names = sorted(f"unet.{n}" for n in known) if owner is config.unet else sorted(set(known) - {"unet"})
            raise ValueError(f"--set {key}: {type(owner).__name__} has no field {name!r}; known fields: {', '.join(names)}")
        try:
            target[name] = _parse_value(text.strip(), getattr(owner, name), str(known[name].type))
        except ValueError as err:
            raise ValueError(f"--set {key}={text}: {err}") from None
    if "T" in top and "T" not in net:  # the schedule and the network's time embedding must agree on T
        net["T"] = top["T"]
    elif "T" in net and "T" not in top:
        top["T"] = net["T"]
    unet = replace(config.unet, **net) if net else config.unet
    new = replace(config, **top, unet=unet)
    return new, {**top, **{f"unet.{k}": v for k, v in net.items()}}


def _parse_value(text: str, current: Any, annotation: str) -> Any:
    """``text`` read as the type of ``current`` (or, where that is None, of the field's ``annotation``)."""
    if text.lower() == "none" and (current is None or "None" in annotation):
        return None
    if isinstance(current, bool) or (current is None and "bool" in annotation):
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"expected true or false, got {text!r}")
        return text.lower() in ("true", "1", "yes")
    if isinstance(current, tuple):
        kind = type(current[0]) if current else int
        try:
            return tuple(kind(v) for v in text.split(","))
        except ValueError:
            raise ValueError(f"expected comma-separated {kind.__name__}s such as 16,64,128, got {text!r}") from None
    kind = type(current) if current is not None else next(
        (k for k in (int, float, str) if k.__name__ in annotation), str)
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"expected {'an' if kind is int else 'a'} {kind.__name__}, got {text!r}") from None
