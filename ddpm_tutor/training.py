"""Training: Algorithm 1 of Ho et al. (2020) on MNIST, with checkpoints that survive a disconnect.

Chapter 7 of the book. The loop is short on purpose:

    repeat
        x_0 ~ q(x_0);  t ~ Uniform({1, ..., T});  eps ~ N(0, I)
        take a gradient step on  || eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t) ||^2
    until converged

Around it sit small opt-in helpers: AdamW with linear warm-up and cosine decay,
optional min-SNR-gamma loss weights, gradient clipping, an exponential moving
average (EMA) of the weights (``torch.optim.swa_utils``), mixed precision on CUDA,
and atomic checkpoints that resume.

Profiles (:data:`PROFILES`) size a run for where it executes: ``gpu`` (a Colab T4:
minutes), ``cpu`` (a 2-core laptop: under 45 minutes) and ``smoke`` (seconds, for
CI). :func:`resolve_profile` picks ``gpu`` when CUDA is present and ``cpu``
otherwise; the environment variable ``DDPM_TUTOR_PROFILE`` overrides it.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from ._files import check_writable_folder, default_mode
from ._tensor import resolve_device
from .losses import min_snr_weights, simple_loss
from .schedules import NoiseSchedule, cosine_schedule, linear_schedule
from .unet import UNet, UNetConfig

__all__ = [
    "TrainConfig",
    "PROFILES",
    "PROFILE_NOTES",
    "resolve_profile",
    "profile_config",
    "build_schedule",
    "train",
    "learning_rate",
    "TrainResult",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "load_pretrained",
    "export_checkpoint",
    "loss_by_t",
    "CheckpointMismatchError",
]

CHECKPOINT_FORMAT = 1

#: :func:`train` warns that a run has diverged when a logged loss exceeds its lowest one after the warm-up
#: by this factor (seen: 0.017 -> 0.65 at lr 4e-3 with the cosine noise schedule; NaN and inf stop training).
DIVERGENCE_FACTOR = 10.0

#: :func:`train` stops when a step's loss exceeds this (or is NaN or inf), warm-up included: predicting
#: eps_theta = 0 scores 1 (E eps^2 = 1), so a loss 100 times that means outputs about 10 times the noise
#: they predict, a run that has exploded (seen: 9e20 at step 10 with lr = 1e9).
EXPLODED_LOSS = 100.0


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
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 1.0  # clip the global gradient norm to this value (0 turns clipping off)
    ema_decay: float = 0.999  # EMA weight decay: ema = decay * ema + (1 - decay) * weights, every step
    ema_start: int = 0  # steps before the EMA starts averaging (it copies the weights until then)
    loss_weighting: str = "none"  # "none": L_simple, every t weighted 1 (Algorithm 1); "min_snr": min(SNR_t, gamma) / SNR_t
    min_snr_gamma: float = 5.0  # gamma of "min_snr" (Hang et al. 2023): steps with SNR_t above it are weighted down
    schedule: str = "linear"  # noise schedule: "linear" (Ho et al.) or "cosine" (Nichol & Dhariwal)
    T: int = 1000  # diffusion steps; a linear schedule with T != 1000 scales beta_1 and beta_T by 1000 / T
    data_limit: int | None = None  # use only the first N training images (None: all 60,000)
    seed: int = 0  # seeds the initial weights, the batches, t and eps
    mixed_precision: str = "auto"  # "auto" (bf16 if supported, else fp16, on CUDA; off on CPU), "bf16", "fp16", "off"
    channels_last: bool = True  # channels_last memory format (faster convolutions on CPU and recent GPUs)
    compile: bool = False  # torch.compile the model (pays off for long runs; first steps are slow)
    log_every: int = 50  # record the mean loss every this many steps
    sample_every: int = 0  # draw a small grid of samples every this many steps (0: never)
    sample_count: int = 16  # how many images each of those grids holds
    checkpoint_every: int = 500  # write a checkpoint every this many steps (and at the end)
    unet: UNetConfig = field(default_factory=UNetConfig)  # the network

    def __post_init__(self) -> None:
        if isinstance(self.unet, dict):
            object.__setattr__(self, "unet", UNetConfig.from_dict(self.unet))
        for name in ("steps", "batch_size", "T", "log_every", "checkpoint_every", "sample_count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive int, got {value!r}")
        for name in ("warmup_steps", "sample_every", "ema_start", "seed"):
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
        if self.unet.T != self.T:
            raise ValueError(
                f"TrainConfig.T={self.T} but unet.T={self.unet.T}; they must agree (use dataclasses.replace on both)"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["unet"] = self.unet.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
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


# ----------------------------------------------------------------------------- checkpoints


class CheckpointMismatchError(ValueError):
    """A checkpoint was loaded into a model or run with a different configuration."""


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, default_mode())  # mkstemp creates 0600; a checkpoint gets the mode of any other new file
        os.replace(tmp, path)  # atomic: readers see the old file or the new one, never half of one
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, OSError) or (isinstance(exc, RuntimeError) and "write" in str(exc)):
            raise _write_error(path, exc) from exc  # torch reports a full disk as "enforce fail ... file write failed"
        raise


def _write_error(path: Path, exc: BaseException) -> OSError:
    """An ``OSError`` saying why ``path`` could not be written (a full disk by name) and that nothing was lost."""
    free = shutil.disk_usage(path.parent).free if path.parent.is_dir() else 0
    full = getattr(exc, "errno", None) == errno.ENOSPC or "file write failed" in str(exc) or free < 1 << 20
    why = "the disk is full" if full else f"{type(exc).__name__}: {exc}"
    kept = f"the previous {path.name} there is unchanged" if path.exists() else "nothing was written"
    return OSError(errno.ENOSPC if full else getattr(exc, "errno", None) or errno.EIO,
                   f"could not write {path}: {why} ({free / 1e6:.0f} MB free in {path.parent}); {kept}. "
                   "Free some space (or write to another folder) and run again")


def _weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state_dict's names, dtypes, shapes and values (independent of device and memory format)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(state[name].shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _non_finite(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of a state_dict that hold NaN or inf."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _require(ckpt: dict[str, Any], path: Path, keys: tuple[str, ...], purpose: str, fix: str) -> None:
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise ValueError(f"{path} lacks {missing} (it holds {sorted(ckpt)}), which {purpose} needs; {fix}")


def _load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], which: str) -> None:
    """``model.load_state_dict(state)`` with a short message when the weights do not fit the network."""
    try:
        model.load_state_dict(state)
    except RuntimeError:
        here = model.state_dict()
        shapes = [f"{k}: {tuple(v.shape)} in the checkpoint, {tuple(here[k].shape)} here"
                  for k, v in state.items() if k in here and v.shape != here[k].shape]
        missing, extra = sorted(set(here) - set(state)), sorted(set(state) - set(here))
        raise CheckpointMismatchError(
            f"the checkpoint's {which!r} weights do not fit this network: {len(shapes)} tensor(s) of another shape"
            + (f" ({'; '.join(shapes[:3])}{'; ...' if len(shapes) > 3 else ''})" if shapes else "")
            + f", {len(missing)} missing{f' ({missing[:3]})' if missing else ''}, {len(extra)} unexpected"
            + f"{f' ({extra[:3]})' if extra else ''}. Its train_config does not describe its weights: the file was "
            "edited or written by another version of ddpm_tutor; load it with that version, or retrain"
        ) from None


def _diff_fields(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    keys = sorted(set(expected) | set(found))
    return [f"{k}: {found.get(k, '<missing>')!r} in the checkpoint, {expected.get(k, '<missing>')!r} here" for k in keys if expected.get(k) != found.get(k)]


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> Path:
    """Write a checkpoint dict atomically (a temporary file in the same folder, then ``os.replace``).

    The sha256 of its ``"model"`` and ``"ema"`` weights is recorded in it (``"weights_sha256"``), which
    :func:`load_checkpoint` verifies. Weights holding NaN or inf are not written (``FloatingPointError``), so
    the last good checkpoint at ``path`` stays; a full disk is an ``OSError`` that says so.
    """
    path = Path(path)
    weights = {k: checkpoint[k] for k in ("model", "ema") if k in checkpoint}
    bad = {k: names for k, names in ((k, _non_finite(v)) for k, v in weights.items()) if names}
    if bad:
        raise FloatingPointError(
            f"the weights hold NaN or inf ({'; '.join(f'{k}: {v[:3]}' for k, v in bad.items())}): not written, so "
            f"{path} keeps its last good checkpoint. Lower TrainConfig.lr, keep grad_clip on"
        )
    _atomic_torch_save({**checkpoint, "weights_sha256": {k: _weights_sha256(v) for k, v in weights.items()}}, path)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(..., weights_only=True)``; clear errors for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train one with `python -m ddpm_tutor train --out DIR`")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated file, pickle with code in it, ...
        raise ValueError(f"{path} is not a readable ddpm_tutor checkpoint ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a ddpm_tutor checkpoint (format {CHECKPOINT_FORMAT} expected)")
    _require(ckpt, path, ("step", "train_config", "ema"), "every use", "it is damaged: use an earlier copy, or retrain")
    for which, recorded in (ckpt.get("weights_sha256") or {}).items():  # checkpoints from before the record load as they are
        if which in ckpt and _weights_sha256(ckpt[which]) != recorded:
            raise ValueError(
                f"{path} is corrupt: its {which!r} weights differ from the sha256 recorded when it was saved "
                "(the file changed after it was written); use an earlier copy, or retrain"
            )
    for which in ("model", "ema"):
        bad = _non_finite(ckpt[which]) if which in ckpt else []
        if bad:
            raise ValueError(f"{path}: its {which!r} weights hold NaN or inf ({bad[:3]}); use an earlier checkpoint of the run")
    return ckpt


def _load_weights(model: UNet, checkpoint: dict[str, Any], which: str) -> None:
    found = checkpoint["train_config"]["unet"]
    differing = _diff_fields(model.config.to_dict(), found)
    if differing:
        raise CheckpointMismatchError(
            "the checkpoint was trained with a different UNetConfig; differing fields: " + "; ".join(differing)
            + ". Build the model with UNetConfig.from_dict(checkpoint['train_config']['unet'])."
        )
    if which not in checkpoint:
        raise ValueError(f"the checkpoint holds no {which!r} weights (it holds {sorted(checkpoint)}); "
                         "an exported checkpoint keeps both 'model' and 'ema': use which='ema'")
    _load_state(model, checkpoint[which], which)


def _memory_format(config: TrainConfig) -> torch.memory_format:
    """The tensor layout a run trains in, and its models are loaded in."""
    return torch.channels_last if config.channels_last else torch.contiguous_format


def load_model(
    path: str | os.PathLike, which: str = "ema", device: str | torch.device = "cpu"
) -> tuple[UNet, NoiseSchedule, dict[str, Any]]:
    """Rebuild ``(model, schedule, checkpoint)`` from a checkpoint; ``which`` is ``"ema"`` or ``"model"`` (the raw weights).

    The model comes back in the memory format its run trained in: ``channels_last`` where the run's
    ``TrainConfig.channels_last`` is set, which also makes sampling faster on CPUs.
    """
    if which not in ("ema", "model"):
        raise ValueError(f"which must be 'ema' or 'model', got {which!r}")
    device = resolve_device(device)
    ckpt = load_checkpoint(path, map_location=device)
    config = TrainConfig.from_dict(ckpt["train_config"])
    model = UNet(config.unet)
    _load_weights(model, ckpt, which)
    return model.to(device, memory_format=_memory_format(config)).eval(), build_schedule(config), ckpt


#: The reference checkpoint shipped with the package: the ``gpu`` profile with batch 512
#: (``python -m ddpm_tutor train --profile gpu --batch-size 512``; README: how it was trained and judged).
PRETRAINED = Path(__file__).parent / "weights" / "mnist_ddpm.pt"


def load_pretrained(device: str | torch.device = "cpu") -> tuple[UNet, NoiseSchedule]:
    """The reference MNIST model shipped in the package, as ``(model, schedule)`` (EMA weights, eval mode).

    The file's sha256 is checked against ``weights/mnist_ddpm.json`` before loading.
    """
    model, schedule, _ = load_model(_verified_pretrained(), which="ema", device=device)
    return model, schedule


def _verified_pretrained() -> Path:
    """:data:`PRETRAINED`, after checking its sha256 against ``weights/mnist_ddpm.json`` (every load goes through here)."""
    meta_path = PRETRAINED.with_suffix(".json")
    if not PRETRAINED.is_file() or not meta_path.is_file():
        raise FileNotFoundError(
            f"the reference checkpoint {PRETRAINED.name} is missing from the installed package; reinstall ddpm-tutor"
        )
    meta = json.loads(meta_path.read_text())
    digest = hashlib.sha256(PRETRAINED.read_bytes()).hexdigest()
    if digest != meta["sha256"]:
        raise ValueError(
            f"{PRETRAINED.name} has sha256 {digest}, expected {meta['sha256']}: the file is corrupt; reinstall ddpm-tutor"
        )
    return PRETRAINED


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, note: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write a slim copy of a checkpoint for shipping (weights and configs; no optimiser state),
    plus ``dst`` with suffix ``.json`` recording its sha256, step, training time and ``note``.

    Returns the JSON record. Both files are written atomically; ``dst`` may be neither ``src`` (the training
    checkpoint would be lost) nor a name whose record would land on it (a ``.json``) or on ``src``.
    """
    dst, record_path = Path(dst), Path(dst).with_suffix(".json")
    if record_path == dst:
        raise ValueError(f"dst={str(dst)!r}: the record of the export is written to dst with suffix .json, which would "
                         "replace the export itself; name the export with another suffix, e.g. .pt")
    for target in (dst, record_path):
        if Path(src).resolve() == target.resolve():
            raise ValueError(f"exporting {str(src)!r} would overwrite it with {'the slim copy' if target == dst else 'the record'} "
                             f"({target}); the training checkpoint would be lost: write the export under another name")
    ckpt = load_checkpoint(src)
    slim = {k: ckpt[k] for k in ("format", "step", "train_config", "model", "ema", "history", "train_seconds", "torch_version", "init_from") if k in ckpt}
    save_checkpoint(dst, slim)
    record = {
        "sha256": hashlib.sha256(dst.read_bytes()).hexdigest(),
        "bytes": dst.stat().st_size,
        "step": int(ckpt["step"]),
        "train_seconds": round(float(ckpt.get("train_seconds", 0.0)), 1),
        "profile": ckpt["train_config"]["profile"],
        "torch_version": ckpt.get("torch_version"),
        **(note or {}),
    }
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(record, fh, indent=2)
        fh.write("\n")
    os.chmod(tmp, default_mode())
    os.replace(tmp, record_path)
    return record


# ----------------------------------------------------------------------------- training


def learning_rate(config: TrainConfig, step: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based): a linear warm-up to ``config.lr``, then constant
    or half a cosine down to 0 at ``config.steps`` (so a cosine run's rate depends on the steps it plans)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_decay == "cosine":
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.lr


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: UNet  #: the raw weights after the last step (train mode off)
    ema_model: UNet  #: the EMA weights, what sampling should use
    schedule: NoiseSchedule  #: the schedule the model was trained with
    config: TrainConfig  #: the run's settings
    history: dict[str, list]  #: "step", "loss" (mean over log_every steps), "lr", and "samples": [(step, images)]
    seconds: float  #: wall time of the steps run in this call
    total_seconds: float  #: wall time of the whole run, earlier (resumed) calls included
    steps_run: int  #: steps run in this call (fewer than config.steps after a resume)
    checkpoint: Path | None  #: the last checkpoint written, if out_dir was given


def _autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or config.mixed_precision == "off":
        return None
    if config.mixed_precision == "bf16" or (config.mixed_precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def _training_images(config: TrainConfig, data: torch.Tensor | None, data_root: str | None) -> torch.Tensor:
    if data is None:
        from .data import load_mnist, to_model_range

        images, _ = load_mnist("train", root=data_root)
        data = to_model_range(images)
    if not isinstance(data, torch.Tensor) or data.dim() != 4 or not data.is_floating_point():
        raise ValueError(
            f"data must be a float tensor of images (N, C, H, W) in [-1, 1], got "
            f"{getattr(data, 'shape', type(data).__name__)}; use ddpm_tutor.data.to_model_range(images)"
        )
    if data.min() < -1.001 or data.max() > 1.001:
        raise ValueError(
            f"data must be scaled to [-1, 1] (got values in [{data.min().item():.3g}, {data.max().item():.3g}]); "
            "use ddpm_tutor.data.to_model_range(images)"
        )
    return data[: config.data_limit] if config.data_limit else data


def _start_from(model: UNet, config: TrainConfig, init_from: str | os.PathLike) -> dict[str, Any]:
    """Load the EMA weights of checkpoint ``init_from`` into ``model``; return the record of where they came from."""
    path = _verified_pretrained() if str(init_from) == "pretrained" else Path(init_from)
    source = load_checkpoint(path)
    def network_and_schedule(c: TrainConfig) -> dict[str, Any]:  # T is unet.T (TrainConfig checks they agree)
        return {"schedule": c.schedule, **{f"unet.{k}": v for k, v in c.unet.to_dict().items()}}

    differing = _diff_fields(network_and_schedule(config), network_and_schedule(TrainConfig.from_dict(source["train_config"])))
    if differing:
        raise CheckpointMismatchError(
            f"init_from={str(init_from)!r} holds a network or noise schedule other than this run's; differing fields: "
            + "; ".join(differing) + ". Fine-tune with the config it was trained with (its profile and overrides)."
        )
    _load_state(model, source["ema"], "ema")
    return {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "step": int(source["step"]),
            "train_config": source["train_config"]}


def _describe_origin(origin: dict[str, Any] | None) -> str:
    if not origin:
        return "random weights"
    return f"a checkpoint's weights (sha256 {origin['sha256'][:12]}..., step {origin['step']})"


def _ema_model(model: UNet, decay: float) -> AveragedModel:
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def train(
    config: TrainConfig | str | None = None,
    *,
    data: torch.Tensor | None = None,
    data_root: str | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = True,
    device: str | torch.device | None = None,
    progress: bool = True,
    callback: Callable[[int, float], None] | None = None,
    init_from: str | os.PathLike | None = None,
) -> TrainResult:
    """Train an epsilon-prediction U-Net with L_simple (Algorithm 1 of Ho et al. 2020).

    Args:
        config: a :class:`TrainConfig`, a profile name, or None for :func:`resolve_profile`'s choice.
        data: optional float images ``(N, C, H, W)`` in [-1, 1]; MNIST's training split by default.
        data_root: where MNIST lives (see :func:`ddpm_tutor.data.load_mnist`), when ``data`` is None.
        out_dir: folder for ``checkpoint.pt``; with ``resume=True`` an existing checkpoint there is
            continued from its step (a Colab session that disconnects resumes where it stopped).
        device: defaults to CUDA when available, else CPU.
        progress: show a tqdm progress bar.
        callback: optional ``callback(step, loss)`` after every step.
        init_from: fine-tune: start from the EMA weights of this checkpoint (``"pretrained"``: the reference
            checkpoint) instead of random weights, with a fresh optimiser, learning-rate schedule and EMA.
            Its network and noise schedule must be ``config``'s; a smaller ``lr`` than a run from scratch
            suits it. The run's checkpoints record the source's sha256, step and config (``"init_from"``).

    Raises:
        FloatingPointError: the loss became NaN or inf (the message says what to try).
        CheckpointMismatchError: ``out_dir`` holds a checkpoint of a different configuration.
    """
    if config is None or isinstance(config, str):
        config = profile_config(config)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig or a profile name, got {type(config).__name__}")
    device = resolve_device(device)
    if out_dir is not None:  # before any training: a read-only or mistyped out_dir fails now, not at the first checkpoint
        check_writable_folder(out_dir, "out_dir")
    images = _training_images(config, data, data_root).to(device)
    if tuple(images.shape[1:]) != (config.unet.in_channels, config.unet.image_size, config.unet.image_size):
        raise ValueError(f"data has images of shape {tuple(images.shape[1:])}, but the UNetConfig expects "
                         f"({config.unet.in_channels}, {config.unet.image_size}, {config.unet.image_size})")
    schedule = build_schedule(config).to(device)

    torch.manual_seed(config.seed)
    model = UNet(config.unet).to(device)
    origin = _start_from(model, config, init_from) if init_from is not None else None
    memory_format = _memory_format(config)
    model = model.to(memory_format=memory_format)
    ema = _ema_model(model, config.ema_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    amp_dtype = _autocast_dtype(config, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    history: dict[str, list] = {"step": [], "loss": [], "lr": [], "samples": []}
    start_step, seconds_before = 0, 0.0

    ckpt_path = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None
    if ckpt_path is not None and resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, map_location=device)
        _require(ckpt, ckpt_path, ("model", "optimizer", "ema_n_averaged", "history", "cpu_rng_state"), "resuming",
                 "an exported (slim) checkpoint cannot be resumed: fine-tune from it with init_from in another out_dir")
        # Fields that only say how long to run or how often to log may change on resume (e.g. more steps,
        # unless the learning rate decays over them: checked below).
        free = {"steps", "log_every", "sample_every", "sample_count", "checkpoint_every", "compile"}
        planned = TrainConfig.from_dict(ckpt["train_config"])
        differing = _diff_fields(
            {k: v for k, v in config.to_dict().items() if k not in free},
            {k: v for k, v in planned.to_dict().items() if k not in free},
        )
        if differing:
            raise CheckpointMismatchError(
                f"{ckpt_path} was written by a run with a different configuration; differing fields: "
                + "; ".join(differing) + ". Use another out_dir, or resume=False to start over."
            )
        if int(ckpt["step"]) > config.steps:
            raise ValueError(
                f"{ckpt_path} has already trained {int(ckpt['step'])} steps, more than steps={config.steps}: there is "
                f"nothing to train, and fewer steps cannot undo steps taken. Resume with steps >= {int(ckpt['step'])}, "
                "or use another out_dir (or resume=False to start over)"
            )
        if config.lr_decay == "cosine" and config.steps != planned.steps:
            at = int(ckpt["step"])
            raise CheckpointMismatchError(
                f"{ckpt_path} was trained with a cosine learning-rate decay planned over steps={planned.steps}; "
                f"resuming it with steps={config.steps} would move the learning rate at step {at} from "
                f"{learning_rate(planned, at):.3g} to {learning_rate(config, at):.3g} (a warm restart, which can "
                f"undo a finished run). Resume with steps={planned.steps}, or train with more steps in another "
                "out_dir (or resume=False to start over)."
            )
        if ckpt.get("init_from", {}).get("sha256") != (origin or {}).get("sha256"):
            raise CheckpointMismatchError(
                f"{ckpt_path} was started from {_describe_origin(ckpt.get('init_from'))}, but this run starts from "
                f"{_describe_origin(origin)}. Resume with the init_from it started from, or use another out_dir."
            )
        _load_weights(model, ckpt, "model")
        _load_state(ema.module, ckpt["ema"], "ema")
        ema.n_averaged.fill_(int(ckpt["ema_n_averaged"]))
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_step = int(ckpt["step"])
        seconds_before = float(ckpt.get("train_seconds", 0.0))
        torch.set_rng_state(ckpt["cpu_rng_state"])  # dropout's randomness continues where it stopped
        if device.type == "cuda" and "cuda_rng_state" in ckpt:
            torch.cuda.set_rng_state(ckpt["cuda_rng_state"].cpu(), device)
        history = {k: list(v) for k, v in ckpt["history"].items()}
        history["samples"] = [(s, x) for s, x in zip(ckpt["sample_steps"], ckpt["sample_images"])]

    step_model = torch.compile(model) if config.compile else model
    generator = torch.Generator(device=device)

    def snapshot(step: int) -> None:
        from .sampling import sample

        g = torch.Generator(device=device).manual_seed(config.seed)
        shape = (config.sample_count, config.unet.in_channels, config.unet.image_size, config.unet.image_size)
        x = sample(ema.module, schedule, shape, generator=g, progress=False)
        history["samples"].append((step, x.clamp(-1, 1).cpu()))

    def checkpoint(step: int) -> Path | None:
        if ckpt_path is None:
            return None
        return save_checkpoint(ckpt_path, {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "train_config": config.to_dict(),
            "model": model.state_dict(),
            "ema": ema.module.state_dict(),
            "ema_n_averaged": int(ema.n_averaged.item()),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "history": {k: v for k, v in history.items() if k != "samples"},
            "sample_steps": [s for s, _ in history["samples"]],
            "sample_images": [x for _, x in history["samples"]],
            "train_seconds": seconds_before + time.perf_counter() - t0,
            "cpu_rng_state": torch.get_rng_state(),
            **({"cuda_rng_state": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
            "torch_version": str(torch.__version__),
            **({"init_from": origin} if origin else {}),
        })

    # lambda_t for every step, computed once: the loop only indexes it (no per-step schedule maths or syncs).
    loss_weights = None
    if config.loss_weighting == "min_snr":
        loss_weights = min_snr_weights(schedule, torch.arange(schedule.T, device=device), config.min_snr_gamma)
    model.train()
    running, running_n, last_ckpt, warned = 0.0, 0, None, False
    # the lowest logged loss after the warm-up (a resumed run continues from its history), for the divergence warning
    lowest = min((v for at, v in zip(history["step"], history["loss"]) if at > config.warmup_steps), default=math.inf)
    t0 = time.perf_counter()
    bar = tqdm(range(start_step, config.steps), desc=f"training ({config.profile})", disable=not progress,
               initial=start_step, total=config.steps)
    for step in bar:
        generator.manual_seed(config.seed * 1_000_003 + step)  # each step's batch, t and eps depend only on (seed, step)
        idx = torch.randint(0, images.shape[0], (config.batch_size,), generator=generator, device=device)
        x0 = images[idx].contiguous(memory_format=memory_format)  # (B, C, H, W) in [-1, 1]
        t = torch.randint(0, schedule.T, (config.batch_size,), generator=generator, device=device)
        eps = torch.randn(x0.shape, generator=generator, device=device).contiguous(memory_format=memory_format)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            if loss_weights is not None:
                per_image = simple_loss(step_model, schedule, x0, t=t, noise=eps, reduction="none")
                loss = (per_image * loss_weights[t]).mean()
            else:
                loss = simple_loss(step_model, schedule, x0, t=t, noise=eps)  # Algorithm 1, line 5
        if not loss < EXPLODED_LOSS:  # NaN, inf, or exploded (warm-up included); NaN < x is False
            raise FloatingPointError(
                f"the loss became {loss.item():.4g} at step {step} (NaN, inf or above {EXPLODED_LOSS:g}: the run "
                "exploded): training stopped instead of producing noise or black images. "
                f"Lower TrainConfig.lr (now {config.lr:g}), keep grad_clip on, or set mixed_precision='off'"
                + (f"; the last good checkpoint is {last_ckpt}" if last_ckpt else "")
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if step < config.ema_start:
            ema.module.load_state_dict(model.state_dict())
        else:
            ema.update_parameters(model)

        value = loss.item()
        running, running_n = running + value, running_n + 1
        if callback is not None:
            callback(step, value)
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            mean = running / running_n
            history["step"].append(done)
            history["loss"].append(mean)
            history["lr"].append(learning_rate(config, step))
            bar.set_postfix(loss=f"{mean:.4f}")
            running, running_n = 0.0, 0
            if not warned and mean > DIVERGENCE_FACTOR * lowest:
                warned = True
                warnings.warn(
                    f"the training loss jumped to {mean:.4f} at step {done}, more than {DIVERGENCE_FACTOR:g} times its "
                    f"lowest value after the warm-up ({lowest:.4f}): training has probably diverged, and its samples "
                    f"will be noise. Lower TrainConfig.lr (now {config.lr:g}) and train again in a new out_dir",
                    RuntimeWarning, stacklevel=2,
                )
            if done > config.warmup_steps:
                lowest = min(lowest, mean)
        if config.sample_every and (done % config.sample_every == 0 or done == config.steps):
            snapshot(done)
            model.train()
        if done % config.checkpoint_every == 0 or done == config.steps:
            last_ckpt = checkpoint(done)
    bar.close()
    seconds = time.perf_counter() - t0

    model.eval()
    ema_model = copy.deepcopy(ema.module).eval()
    if ckpt_path is not None and last_ckpt is None and ckpt_path.exists():
        last_ckpt = ckpt_path
    return TrainResult(
        model=model, ema_model=ema_model, schedule=schedule, config=config, history=history,
        seconds=seconds, total_seconds=seconds_before + seconds, steps_run=config.steps - start_step, checkpoint=last_ckpt,
    )


@torch.inference_mode()
def loss_by_t(
    model: torch.nn.Module,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    num_bins: int = 20,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_simple of ``model`` on ``x0`` at ``num_bins`` evenly spaced code steps.

    Returns ``(t, loss)``: int64 ``(num_bins,)`` code steps and float64 ``(num_bins,)`` mean
    squared errors, each averaged over all of ``x0`` (same eps draws for every t).
    """
    model.eval()
    steps = torch.linspace(0, schedule.T - 1, num_bins).round().long()
    eps = torch.randn(x0.shape, generator=generator, device=generator.device if generator else x0.device).to(x0.device)
    losses = []
    for step in steps.tolist():
        t = torch.full((x0.shape[0],), step, dtype=torch.long, device=x0.device)
        losses.append(simple_loss(model, schedule, x0, t=t, noise=eps).double().item())
    return steps, torch.tensor(losses, dtype=torch.float64)
