"""Checkpoint files: save, load, verify, export, and the reference weights shipped with the package.

A checkpoint is a plain dict of tensors and numbers (``torch.load(..., weights_only=True)`` reads it,
so a file cannot run code) that carries the :class:`~ddpm_tutor.config.TrainConfig` of the run
that wrote it and the sha256 of its weights, verified on every load. Every write is atomic
(:func:`ddpm_tutor.files.atomic_write`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from ._tensor import resolve_device
from .config import TrainConfig, build_schedule, memory_format
from .files import atomic_write, atomic_write_text, load_verified, sha256_file
from .schedules import NoiseSchedule
from .unet import UNet

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointMismatchError",
    "PRETRAINED",
    "PRETRAINED_CONDITIONAL",
    "PRETRAINED_COMMANDS",
    "pretrained_path",
    "save_checkpoint",
    "load_checkpoint",
    "load_weights",
    "load_model",
    "load_pretrained",
    "load_init_weights",
    "export_checkpoint",
]

CHECKPOINT_FORMAT = 1

#: The reference checkpoint shipped with the package: the ``gpu`` profile with batch 512
#: (``python -m ddpm_tutor train --profile gpu --batch-size 512``; README: how it was trained and judged).
PRETRAINED = Path(__file__).parent / "weights" / "mnist_ddpm.pt"

#: The class-conditional reference (chapter 12): the ``cpu`` profile with ``--conditional``.
PRETRAINED_CONDITIONAL = Path(__file__).parent / "weights" / "mnist_ddpm_conditional.pt"

#: The names :func:`load_pretrained` accepts, and the command that trains each one.
PRETRAINED_COMMANDS = {
    "mnist": "python -m ddpm_tutor train --profile gpu --batch-size 512 --out runs/reference",
    "mnist-conditional": "python -m ddpm_tutor train --profile cpu --conditional --out runs/cond",
    "fashion-mnist": "python -m ddpm_tutor train --profile cpu --dataset fashion-mnist --out runs/fashion",
}


def pretrained_path(name: str = "mnist") -> Path:
    """The shipped checkpoint file of ``name`` (one of :data:`PRETRAINED_COMMANDS`); it may be missing."""
    if name not in PRETRAINED_COMMANDS:
        raise ValueError(
            f"unknown pretrained model {name!r}; the names are {sorted(PRETRAINED_COMMANDS)} "
            "(pass the device as device=..., e.g. load_pretrained(device='cuda'))"
        )
    return {"mnist": PRETRAINED, "mnist-conditional": PRETRAINED_CONDITIONAL}.get(
        name, PRETRAINED.with_name(f"{name.replace('-', '_')}_ddpm.pt"))  # fashion-mnist: fashion_mnist_ddpm.pt


class CheckpointMismatchError(ValueError):
    """A checkpoint was loaded into a model or run with a different configuration."""


def diff_fields(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """``"name: <checkpoint's> in the checkpoint, <ours> here"`` for every field on which two config dicts differ."""
    keys = sorted(set(expected) | set(found))
    return [f"{k}: {found.get(k, '<missing>')!r} in the checkpoint, {expected.get(k, '<missing>')!r} here"
            for k in keys if expected.get(k) != found.get(k)]


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


def require_keys(ckpt: dict[str, Any], path: Path, keys: tuple[str, ...], purpose: str, fix: str) -> None:
    """``ValueError`` naming ``path``, the keys of ``keys`` that ``ckpt`` lacks, ``purpose`` and ``fix``."""
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise ValueError(f"{path} lacks {missing} (it holds {sorted(ckpt)}), which {purpose} needs; {fix}")


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], which: str) -> None:
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


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> Path:
    """Write a checkpoint dict atomically (a temporary file in the same folder, fsync, then ``os.replace``).

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
    recorded = {**checkpoint, "weights_sha256": {k: _weights_sha256(v) for k, v in weights.items()}}
    return atomic_write(path, lambda tmp: torch.save(recorded, tmp))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(..., weights_only=True)``; clear errors for a missing or foreign file,
    one that lacks its configuration or weights, weights that differ from the sha256 recorded at save (a
    corrupted file), and weights holding NaN or inf."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train one with `python -m ddpm_tutor train --out DIR`")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated file, pickle with code in it, ...
        raise ValueError(f"{path} is not a readable ddpm_tutor checkpoint ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a ddpm_tutor checkpoint (format {CHECKPOINT_FORMAT} expected)")
    require_keys(ckpt, path, ("step", "train_config", "ema"), "every use", "it is damaged: use an earlier copy, or retrain")
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


def load_weights(model: UNet, checkpoint: dict[str, Any], which: str) -> None:
    """Load ``checkpoint[which]`` (``"ema"`` or ``"model"``) into ``model`` after checking the UNetConfigs agree."""
    found = checkpoint["train_config"]["unet"]
    differing = diff_fields(model.config.to_dict(), found)
    if differing:
        raise CheckpointMismatchError(
            "the checkpoint was trained with a different UNetConfig; differing fields: " + "; ".join(differing)
            + ". Build the model with UNetConfig.from_dict(checkpoint['train_config']['unet'])."
        )
    if which not in checkpoint:
        raise ValueError(f"the checkpoint holds no {which!r} weights (it holds {sorted(checkpoint)}); "
                         "an exported checkpoint keeps both 'model' and 'ema': use which='ema'")
    load_state(model, checkpoint[which], which)


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
    model, schedule = _model_from(ckpt, which, device)
    return model, schedule, ckpt


def _model_from(ckpt: dict[str, Any], which: str, device: str | torch.device) -> tuple[UNet, NoiseSchedule]:
    config = TrainConfig.from_dict(ckpt["train_config"])
    model = UNet(config.unet)
    load_weights(model, ckpt, which)
    return model.to(device, memory_format=memory_format(config)).eval(), build_schedule(config)


def _verified_pretrained_checkpoint(name: str = "mnist") -> dict[str, Any]:
    """A reference checkpoint's dict, read only after its sha256 matched its ``.json`` record."""
    path = pretrained_path(name)
    if not path.is_file() or not path.with_suffix(".json").is_file():
        raise FileNotFoundError(
            f"the reference checkpoint {path.name} ({name!r}) is missing from the installed package; reinstall "
            f"ddpm-tutor, or train it with `{PRETRAINED_COMMANDS[name]}` and load it with load_model(...)"
        )
    return load_verified(path, path.with_suffix(".json"), load_checkpoint, fix="reinstall ddpm-tutor")


def load_pretrained(name: str = "mnist", device: str | torch.device = "cpu") -> tuple[UNet, NoiseSchedule]:
    """A reference MNIST model shipped in the package, as ``(model, schedule)`` (EMA weights, eval mode).

    ``name``: ``"mnist"`` (the default: the unconditional reference), ``"mnist-conditional"`` (the
    class-conditional one of chapter 12) or ``"fashion-mnist"`` (the ``cpu`` profile on Fashion-MNIST, chapter 13). The file's sha256 is checked against its ``.json`` record before loading.
    """
    device = resolve_device(device)
    return _model_from(_verified_pretrained_checkpoint(name), "ema", device)


def load_init_weights(model: UNet, config: TrainConfig, init_from: str | os.PathLike) -> dict[str, Any]:
    """Load the EMA weights of checkpoint ``init_from`` (``"pretrained"``: the reference, verified first) into
    ``model`` for fine-tuning; return the record of where they came from (sha256, step, train_config)."""
    path = PRETRAINED if str(init_from) == "pretrained" else Path(init_from)
    source = _verified_pretrained_checkpoint() if path == PRETRAINED else load_checkpoint(path)

    def network_and_schedule(c: TrainConfig) -> dict[str, Any]:  # T is unet.T (TrainConfig checks they agree)
        return {"schedule": c.schedule, **{f"unet.{k}": v for k, v in c.unet.to_dict().items()}}

    differing = diff_fields(network_and_schedule(config), network_and_schedule(TrainConfig.from_dict(source["train_config"])))
    if differing:
        raise CheckpointMismatchError(
            f"init_from={str(init_from)!r} holds a network or noise schedule other than this run's; differing fields: "
            + "; ".join(differing) + ". Fine-tune with the config it was trained with (its profile and overrides)."
        )
    load_state(model, source["ema"], "ema")
    return {"sha256": sha256_file(path), "step": int(source["step"]), "train_config": source["train_config"]}


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
    slim = {k: ckpt[k] for k in ("format", "step", "train_config", "model", "ema", "history", "train_seconds", "world_size",
                                 "torch_version", "init_from") if k in ckpt}
    dst = save_checkpoint(dst, slim)
    record = {
        "sha256": sha256_file(dst),
        "bytes": dst.stat().st_size,
        "step": int(ckpt["step"]),
        "train_seconds": round(float(ckpt.get("train_seconds", 0.0)), 1),
        "profile": ckpt["train_config"]["profile"],
        "torch_version": ckpt.get("torch_version"),
        **(note or {}),
    }
    atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
    return record
