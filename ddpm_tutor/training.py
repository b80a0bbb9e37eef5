"""Training: Algorithm 1 of Ho et al. (2020) on MNIST, with checkpoints that survive a disconnect.

Chapter 7 of the book. The loop in :func:`train` is short on purpose:

    repeat
        x_0 ~ q(x_0);  t ~ Uniform({1, ..., T});  eps ~ N(0, I)              (lines 2-4: _draw_batch)
        take a gradient step on  || eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t) ||^2
                                                                             (line 5: _optimisation_step)
    until converged

Around it sit small helpers named beside it: :func:`_resume` (continue a run from its checkpoint),
:class:`EMA` (an exponential moving average of the weights), :func:`_log` (the mean loss every
``log_every`` steps; every step's loss is checked there for NaN, inf or an explosion, rather than at
every step, so a GPU is never made to wait for the CPU), and :func:`_checkpoint` (an atomic checkpoint).
The run's settings live in :mod:`ddpm_tutor.config`, the checkpoint files in :mod:`ddpm_tutor.checkpoints`.

Started by ``torchrun --nproc_per_node=N``, the same loop runs in N processes (chapter 13): each draws the whole
global batch from the shared seed and trains on its slice, ``DistributedDataParallel`` averages the gradients,
and rank 0 alone writes; :mod:`ddpm_tutor.distributed` and :func:`train` say what that keeps the same.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from ._tensor import resolve_device
from .checkpoints import (
    CHECKPOINT_FORMAT,
    PRETRAINED,  # noqa: F401  (chapter 8 reads dt.training.PRETRAINED)
    CheckpointMismatchError,
    diff_fields,
    load_checkpoint,
    load_init_weights,
    load_state,
    load_weights,
    require_keys,
    save_checkpoint,
)
from .distributed import World, all_mean, setup, shard
from .config import (  # noqa: F401  (chapters 7 and 8 read PROFILES, PROFILE_NOTES, build_schedule here)
    PROFILE_NOTES,
    PROFILES,
    TrainConfig,
    build_schedule,
    learning_rate,
    memory_format,
    profile_config,
)
from .files import check_writable_folder, remove_orphans
from .losses import min_snr_weights, simple_loss
from .schedules import NoiseSchedule
from .unet import UNet

__all__ = ["train", "TrainResult", "EMA", "loss_by_t", "DIVERGENCE_FACTOR", "EXPLODED_LOSS"]

#: :func:`train` warns that a run has diverged when a logged loss exceeds its lowest one after the warm-up
#: by this factor (seen: 0.017 -> 0.65 at lr 4e-3 with the cosine noise schedule; NaN and inf stop training).
DIVERGENCE_FACTOR = 10.0

#: :func:`train` stops when a step's loss exceeds this (or is NaN or inf), warm-up included: predicting
#: eps_theta = 0 scores 1 (E eps^2 = 1), so a loss 100 times that means outputs about 10 times the noise
#: they predict, a run that has exploded (seen: 9e20 at step 10 with lr = 1e9).
EXPLODED_LOSS = 100.0


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


class EMA:
    """An exponential moving average of a model's weights: ``ema = decay * ema + (1 - decay) * weights``.

    The first update copies the weights. The count of updates is a Python int, so an update never
    reads a tensor back to the CPU (``torch.optim.swa_utils.AveragedModel`` compares a tensor with 0
    at every step, which makes a GPU wait); the arithmetic is the same ``lerp``.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.decay = decay
        self.n_averaged = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        ema, current = list(self.module.state_dict().values()), list(model.state_dict().values())
        if self.n_averaged == 0:
            torch._foreach_copy_(ema, current)
        else:
            floats = [(e, c) for e, c in zip(ema, current) if e.is_floating_point()]
            torch._foreach_lerp_([e for e, _ in floats], [c for _, c in floats], 1.0 - self.decay)
        self.n_averaged += 1


@dataclass
class _Run:
    """The state a run carries from step to step, and saves in its checkpoint."""

    model: UNet
    ema: EMA
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    origin: dict[str, Any] | None  # where fine-tuning started (init_from), else None
    start_step: int = 0
    seconds_before: float = 0.0  # wall time of the earlier calls of a resumed run
    history: dict[str, list] = field(default_factory=lambda: {"step": [], "loss": [], "lr": [], "samples": []})
    interval: list[float] = field(default_factory=list)  # losses since the last logged mean
    warned: bool = False  # the divergence warning was given


def train(
    config: TrainConfig | str | None = None,
    *,
    data: torch.Tensor | None = None,
    data_root: str | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = True,
    device: str | torch.device | None = None,
    progress: bool = True,
    init_from: str | os.PathLike | None = None,
    labels: torch.Tensor | None = None,
) -> TrainResult:
    """Train an epsilon-prediction U-Net with L_simple (Algorithm 1 of Ho et al. 2020).

    Args:
        config: a :class:`TrainConfig`, a profile name, or None for :func:`resolve_profile`'s choice.
        data: optional float images ``(N, C, H, W)`` in [-1, 1]; by default the training split of
            ``config.dataset`` (MNIST unless set; see :func:`ddpm_tutor.datasets.load_dataset`).
        data_root: where that dataset lives (see :func:`ddpm_tutor.datasets.load_dataset`), when ``data`` is None.
        out_dir: folder for ``checkpoint.pt``; with ``resume=True`` an existing checkpoint there is
            continued from its step (a Colab session that disconnects resumes where it stopped).
        device: defaults to CUDA when available, else CPU.
        progress: show a tqdm progress bar.
        init_from: fine-tune: start from the EMA weights of this checkpoint (``"pretrained"``: the reference
            checkpoint) instead of random weights, with a fresh optimiser, learning-rate schedule and EMA.
            Its network and noise schedule must be ``config``'s; a smaller ``lr`` than a run from scratch
            suits it. The run's checkpoints record the source's sha256, step and config (``"init_from"``).
        labels: int64 ``(N,)`` class of each image of ``data``, for a conditional network (``config.unet.num_classes``
            set); MNIST's training labels when ``data`` is None. Ignored by an unconditional network.

    Several processes: started by ``torchrun --nproc_per_node=N`` (``RANK`` and ``WORLD_SIZE`` set), ``train`` joins
    the process group (:func:`ddpm_tutor.distributed.setup`: NCCL on CUDA, one GPU per process, gloo on the CPU)
    and trains the model wrapped in ``DistributedDataParallel``; without them it trains in one process, with no
    process group. ``config.batch_size`` stays the global batch: each rank trains on its ``1/N`` slice of the batch
    a single process would draw (see :func:`_draw_batch`), and the gradients are averaged over the ranks, so a
    recipe means the same at any N and N processes take, up to the order of floating-point sums, the steps one
    process takes. The weights, the optimiser and the EMA are therefore identical on every rank (each rank keeps
    its own EMA of the same weights); the logged loss is the mean over the ranks. Only rank 0 writes checkpoints,
    draws the sample grids of ``history["samples"]`` and shows the progress bar. Checkpoints hold the unwrapped
    network's ``state_dict`` (no ``module.`` prefixes) and the number of processes that wrote them
    (``"world_size"``): a checkpoint written by N processes loads, samples and resumes in one, and the other way
    round. With ``dropout > 0`` each rank draws its own dropout masks, so there the agreement with one process is
    in distribution only.

    Raises:
        FloatingPointError: a step's loss became NaN, inf or above :data:`EXPLODED_LOSS`, warm-up included
            (every step's loss is checked every ``log_every`` steps and before every checkpoint, so the last
            checkpoint written holds good weights; the message names it and says what to try).
        CheckpointMismatchError: ``out_dir`` holds a checkpoint of a different configuration.
        ValueError: ``out_dir`` cannot be written (checked before training), ``device`` is not there,
            ``out_dir`` holds a checkpoint that cannot be resumed (an export, or more steps than ``config.steps``),
            or ``config.batch_size`` does not divide among the processes of a ``torchrun`` run.
        OSError: the disk filled up while checkpointing (the previous checkpoint is kept).
    """
    if config is None or isinstance(config, str):
        config = profile_config(config)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig or a profile name, got {type(config).__name__}")
    world, device = setup(device)  # torchrun: join the process group (NCCL or gloo); else one process, no group
    device = resolve_device(device)
    part = shard(config.batch_size, world)  # this rank's slice of each global batch (refuses one that does not divide)
    if out_dir is not None:  # before any training: a read-only or mistyped out_dir fails now, not at the first checkpoint
        check_writable_folder(out_dir, "out_dir")
    split = _TrainingSplit(config, data_root)  # read on first use, once
    images = _training_images(config, data, split).to(device)
    classes = _training_labels(config, images.shape[0], data, labels, split).to(device) if config.unet.num_classes else None
    schedule = build_schedule(config).to(device)
    run = _new_run(config, device, init_from)
    ckpt_path = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None
    if ckpt_path is not None:
        if world.is_main:
            remove_orphans(ckpt_path)  # the temporary files of a run that was killed while writing a checkpoint
        if resume and ckpt_path.exists():
            _resume(run, config, ckpt_path, device)

    step_model = _parallel(run.model, world, device)  # DistributedDataParallel under torchrun, else the model itself
    step_model = torch.compile(step_model) if config.compile else step_model
    amp_dtype = _autocast_dtype(config, device)
    # lambda_t for every step, computed once: the loop only indexes it (no per-step schedule maths or syncs).
    loss_weights = None
    if config.loss_weighting == "min_snr":
        loss_weights = min_snr_weights(schedule, torch.arange(schedule.T, device=device), config.min_snr_gamma)
    generator = torch.Generator(device=device)
    pending: list[torch.Tensor] = []  # this interval's losses, still on the device
    last_ckpt: Path | None = None
    run.model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(run.start_step, config.steps), desc=f"training ({config.profile})",
               disable=not progress or not world.is_main, initial=run.start_step, total=config.steps)
    for step in bar:
        x0, t, eps, c = _draw_batch(images, classes, schedule.T, config, step, generator, part)  # Algorithm 1, lines 2-4
        loss = _optimisation_step(run, step_model, schedule, x0, t, eps, c, config, step, loss_weights, amp_dtype)  # line 5
        run.ema.update(run.model)
        pending.append(loss)
        done = step + 1
        log_now = done % config.log_every == 0 or done == config.steps
        sample_now = config.sample_every and (done % config.sample_every == 0 or done == config.steps)
        ckpt_now = done % config.checkpoint_every == 0 or done == config.steps
        if log_now or sample_now or ckpt_now:  # the only places the loop waits for the device
            _log(run, config, done, pending, bar, last_ckpt, record=log_now, world=world)
            pending = []
        if sample_now and world.is_main:
            _snapshot(run, schedule, config, done, device)
        if ckpt_now and ckpt_path is not None:
            last_ckpt = _checkpoint(run, config, ckpt_path, done, device, time.perf_counter() - t0, world)
    bar.close()
    seconds = time.perf_counter() - t0

    run.model.eval()
    if ckpt_path is not None and last_ckpt is None and ckpt_path.exists():
        last_ckpt = ckpt_path
    return TrainResult(
        model=run.model, ema_model=copy.deepcopy(run.ema.module).eval(), schedule=schedule, config=config,
        history=run.history, seconds=seconds, total_seconds=run.seconds_before + seconds,
        steps_run=config.steps - run.start_step, checkpoint=last_ckpt,
    )


def _draw_batch(
    images: torch.Tensor, classes: torch.Tensor | None, T: int, config: TrainConfig, step: int, generator: torch.Generator,
    part: slice = slice(None),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Algorithm 1, lines 2-4: ``x0 ~ q(x0)``, ``t ~ Uniform`` (code steps 0..T-1), ``eps ~ N(0, I)``; for a
    conditional network also ``x0``'s label ``c``, replaced by "no label" (index ``num_classes``) with probability
    ``config.label_dropout`` (classifier-free guidance, chapter 12), else ``c`` is None.

    Each step's draw depends only on ``(config.seed, step)``, so a resumed run draws what an uninterrupted one would.
    Under ``torchrun`` every rank draws the whole global batch of ``config.batch_size`` (the same on every rank)
    and returns its slice ``part`` of it (:func:`ddpm_tutor.distributed.shard`): the ranks' slices together are
    the batch one process draws, whatever the number of processes.
    """
    generator.manual_seed(config.seed * 1_000_003 + step)
    device, layout = images.device, memory_format(config)
    B, shape = config.batch_size, (config.batch_size, *images.shape[1:])  # the global batch
    idx = torch.randint(0, images.shape[0], (B,), generator=generator, device=device)[part]
    x0 = images[idx].contiguous(memory_format=layout)  # (B / world_size, C, H, W) in [-1, 1]
    t = torch.randint(0, T, (B,), generator=generator, device=device)[part]  # (B / world_size,) int64
    eps = torch.randn(shape, generator=generator, device=device)[part].contiguous(memory_format=layout)
    if classes is None:
        return x0, t, eps, None
    drop = (torch.rand(B, generator=generator, device=device) < config.label_dropout)[part]
    c = torch.where(drop, config.unet.num_classes, classes[idx])  # (B / world_size,) int64
    return x0, t, eps, c


def _optimisation_step(
    run: _Run, step_model: torch.nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor,
    eps: torch.Tensor, c: torch.Tensor | None, config: TrainConfig, step: int, loss_weights: torch.Tensor | None,
    amp_dtype: torch.dtype | None,
) -> torch.Tensor:
    """Algorithm 1, line 5: one AdamW step on L_simple (min-SNR weighted if asked), with the learning-rate
    schedule, mixed precision and gradient clipping. Returns the loss as a detached 0-dim tensor (no sync)."""
    for group in run.optimizer.param_groups:
        group["lr"] = learning_rate(config, step)
    eps_theta = step_model if c is None else functools.partial(step_model, labels=c)  # eps_theta(x_t, t[, c])
    with torch.autocast(x0.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        if loss_weights is not None:
            per_image = simple_loss(eps_theta, schedule, x0, t=t, noise=eps, reduction="none")
            loss = (per_image * loss_weights[t]).mean()
        else:
            loss = simple_loss(eps_theta, schedule, x0, t=t, noise=eps)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if config.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), config.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return loss.detach()


def _log(run: _Run, config: TrainConfig, done: int, pending: list[torch.Tensor], bar, last_ckpt: Path | None,
         record: bool, world: World = World()) -> None:
    """Read the losses of the steps since the last call (one sync), stop at the first that is NaN, inf or above
    :data:`EXPLODED_LOSS` (warm-up included), and every ``log_every`` steps record their mean and warn if it
    jumped far above the lowest mean after the warm-up. Under ``torchrun`` each step's loss is first averaged over
    the ranks (one all-reduce per call): the global batch's loss, the same on every rank, so all ranks stop together."""
    losses = all_mean(torch.stack(pending).float(), world).tolist()
    first = done - len(losses)
    bad = next((i for i, v in enumerate(losses) if not v < EXPLODED_LOSS), None)  # NaN < x is False
    if bad is not None:
        raise FloatingPointError(
            f"the loss became {losses[bad]:.4g} at step {first + bad} (NaN, inf or above {EXPLODED_LOSS:g}: the run "
            "exploded): training stopped instead of producing noise or black images. "
            f"Lower TrainConfig.lr (now {config.lr:g}), keep grad_clip on, or set mixed_precision='off'"
            + (f"; the last good checkpoint is {last_ckpt}" if last_ckpt else "")
        )
    run.interval.extend(losses)  # a checkpoint or a snapshot may come between two log steps
    if not record:
        return
    mean = sum(run.interval) / len(run.interval)
    run.interval = []
    # the lowest logged loss after the warm-up (a resumed run continues from its history)
    lowest = min((v for at, v in zip(run.history["step"], run.history["loss"]) if at > config.warmup_steps), default=math.inf)
    run.history["step"].append(done)
    run.history["loss"].append(mean)
    run.history["lr"].append(learning_rate(config, done - 1))
    bar.set_postfix(loss=f"{mean:.4f}")
    if mean > DIVERGENCE_FACTOR * lowest and not run.warned and world.is_main:
        run.warned = True
        warnings.warn(
            f"the training loss jumped to {mean:.4f} at step {done}, more than {DIVERGENCE_FACTOR:g} times its "
            f"lowest value after the warm-up ({lowest:.4f}): training has probably diverged, and its samples "
            f"will be noise. Lower TrainConfig.lr (now {config.lr:g}) and train again in a new out_dir",
            RuntimeWarning, stacklevel=3,
        )


def _snapshot(run: _Run, schedule: NoiseSchedule, config: TrainConfig, done: int, device: torch.device) -> None:
    """Draw ``config.sample_count`` images with the EMA weights (the same seed every time) into the history."""
    from .sampling import sample

    g = torch.Generator(device=device).manual_seed(config.seed)
    shape = (config.sample_count, config.unet.in_channels, config.unet.image_size, config.unet.image_size)
    k = config.unet.num_classes
    shown = torch.arange(config.sample_count, device=device) % k if k else None  # a conditional run shows 0, 1, 2, ...
    x = sample(run.ema.module, schedule, shape, generator=g, progress=False, labels=shown)
    run.history["samples"].append((done, x.clamp(-1, 1).cpu()))
    run.model.train()


def _checkpoint(run: _Run, config: TrainConfig, path: Path, done: int, device: torch.device, seconds: float,
                world: World = World()) -> Path:
    """Write the run's state after ``done`` steps to ``path`` (atomically); weights that are not finite are refused.

    Under ``torchrun`` every rank checks its weights (the same on every rank) and only rank 0 writes."""
    params = list(run.model.parameters())
    if not bool(torch.stack([p.isfinite().all() for p in params]).all()):  # one sync per checkpoint
        raise FloatingPointError(
            f"the weights are no longer finite at step {done}: the checkpoint was not written, so {path} keeps "
            "the last good one. Lower TrainConfig.lr, keep grad_clip on, or set mixed_precision='off'"
        )
    if not world.is_main:
        return path
    history = {k: v for k, v in run.history.items() if k != "samples"}
    return save_checkpoint(path, {
        "format": CHECKPOINT_FORMAT,
        "step": done,
        "train_config": config.to_dict(),
        "model": run.model.state_dict(),
        "ema": run.ema.module.state_dict(),
        "ema_n_averaged": run.ema.n_averaged,
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else {},
        "history": history,
        "sample_steps": [s for s, _ in run.history["samples"]],
        "sample_images": [x for _, x in run.history["samples"]],
        "train_seconds": run.seconds_before + seconds,
        "world_size": world.size,  # the processes that trained it (its last call's, after a resume)
        "cpu_rng_state": torch.get_rng_state(),
        **({"cuda_rng_state": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
        "torch_version": str(torch.__version__),
        **({"init_from": run.origin} if run.origin else {}),
    })


def _parallel(model: UNet, world: World, device: torch.device) -> torch.nn.Module:
    """``model`` wrapped in ``DistributedDataParallel`` when a process group is in use, else ``model`` itself.

    The wrapper shares the model's parameters (the optimiser, the EMA and the checkpoints use the model itself,
    so saved names carry no ``module.`` prefix); at construction it broadcasts rank 0's weights, and in backward
    it all-reduces the gradients to their mean over the ranks."""
    if not world.distributed:
        return model
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _new_run(config: TrainConfig, device: torch.device, init_from: str | os.PathLike | None) -> _Run:
    """Fresh weights (seeded by ``config.seed``, or those of ``init_from``), EMA, AdamW and gradient scaler."""
    torch.manual_seed(config.seed)
    model = UNet(config.unet).to(device)
    origin = load_init_weights(model, config, init_from) if init_from is not None else None
    model = model.to(memory_format=memory_format(config))
    amp_dtype = _autocast_dtype(config, device)
    return _Run(
        model=model,
        ema=EMA(model, config.ema_decay),
        optimizer=torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0),
        scaler=torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16),
        origin=origin,
    )


def _resume(run: _Run, config: TrainConfig, ckpt_path: Path, device: torch.device) -> None:
    """Continue ``run`` from the checkpoint at ``ckpt_path``, after checking it was written by the same run."""
    ckpt = load_checkpoint(ckpt_path, map_location=device)
    require_keys(ckpt, ckpt_path, ("model", "optimizer", "ema_n_averaged", "history", "cpu_rng_state"), "resuming",
                 "an exported (slim) checkpoint cannot be resumed: fine-tune from it with init_from in another out_dir")
    # Fields that only say how long to run or how often to log may change on resume (e.g. more steps,
    # unless the learning rate decays over them: checked below).
    free = {"steps", "log_every", "sample_every", "sample_count", "checkpoint_every", "compile"}
    planned = TrainConfig.from_dict(ckpt["train_config"])
    differing = diff_fields(
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
    if ckpt.get("init_from", {}).get("sha256") != (run.origin or {}).get("sha256"):
        raise CheckpointMismatchError(
            f"{ckpt_path} was started from {_describe_origin(ckpt.get('init_from'))}, but this run starts from "
            f"{_describe_origin(run.origin)}. Resume with the init_from it started from, or use another out_dir."
        )
    load_weights(run.model, ckpt, "model")
    load_state(run.ema.module, ckpt["ema"], "ema")
    run.ema.n_averaged = int(ckpt["ema_n_averaged"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
    run.start_step = int(ckpt["step"])
    run.seconds_before = float(ckpt.get("train_seconds", 0.0))
    torch.set_rng_state(ckpt["cpu_rng_state"])  # dropout's randomness continues where it stopped
    if device.type == "cuda" and "cuda_rng_state" in ckpt:
        torch.cuda.set_rng_state(ckpt["cuda_rng_state"].cpu(), device)
    run.history = {k: list(v) for k, v in ckpt["history"].items()}
    run.history["samples"] = [(s, x) for s, x in zip(ckpt["sample_steps"], ckpt["sample_images"])]


def _describe_origin(origin: dict[str, Any] | None) -> str:
    if not origin:
        return "random weights"
    return f"a checkpoint's weights (sha256 {origin['sha256'][:12]}..., step {origin['step']})"


def _autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run: ``"auto"`` is bf16 (or fp16 where bf16 is missing) on CUDA and off elsewhere;
    ``"bf16"`` also runs on the CPU; ``"fp16"`` needs CUDA (its gradient scaler is CUDA's)."""
    if config.mixed_precision == "off" or (config.mixed_precision == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        if config.mixed_precision == "fp16":
            raise ValueError(f"TrainConfig.mixed_precision='fp16' needs a CUDA device, got {device}; use 'bf16' or 'off'")
        return torch.bfloat16
    if config.mixed_precision == "bf16" or (config.mixed_precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def _training_labels(
    config: TrainConfig, n: int, data: torch.Tensor | None, labels: torch.Tensor | None, split: _TrainingSplit
) -> torch.Tensor:
    """The class of each of the ``n`` training images, for a conditional network (checked against num_classes)."""
    if labels is None:
        if data is not None:
            raise ValueError("a conditional U-Net (unet.num_classes set) needs labels=... (one class per image of data)")
        _, labels = split()
        if labels is None:
            raise ValueError(f"a conditional U-Net (unet.num_classes set) needs labels, and {config.dataset} has none")
    if isinstance(labels, torch.Tensor) and config.data_limit:
        labels = labels[: config.data_limit]  # as _training_images keeps the first data_limit images
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.long or tuple(labels.shape) != (n,):
        raise ValueError(
            f"labels must be an int64 tensor of shape ({n},), one class per training image, got "
            f"{getattr(labels, 'dtype', type(labels).__name__)} {tuple(getattr(labels, 'shape', ()))}"
        )
    k = config.unet.num_classes
    if n and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ValueError(f"labels must lie in 0..{k - 1} (unet.num_classes={k}), got [{int(labels.min())}, {int(labels.max())}]")
    return labels


class _TrainingSplit:
    """The training split of ``config.dataset`` under ``root``: uint8 ``(N, C, H, W)`` and its labels (None for a
    folder), read and verified on first use and only once, so a conditional run takes its images and labels
    from one read."""

    def __init__(self, config: TrainConfig, root: str | os.PathLike | None):
        self.config, self.root, self._split = config, root, None

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._split is None:
            from .datasets import load_dataset

            folder = self.config.dataset.startswith("folder:")
            size = self.config.unet.image_size if folder else None
            self._split = load_dataset(self.config.dataset, "train", root=self.root, image_size=size)
        return self._split


def _training_images(config: TrainConfig, data: torch.Tensor | None, split: _TrainingSplit) -> torch.Tensor:
    if data is None:
        from .data import to_model_range

        images, _ = split()
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
    expected = (config.unet.in_channels, config.unet.image_size, config.unet.image_size)
    if tuple(data.shape[1:]) != expected:
        raise ValueError(
            f"data has images of shape {tuple(data.shape[1:])}, but the UNetConfig expects {expected}; set "
            "unet.in_channels, unet.out_channels and unet.image_size from the data (train --dataset does)"
        )
    return data[: config.data_limit] if config.data_limit else data


@torch.inference_mode()
def loss_by_t(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    num_bins: int = 20,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_simple of ``model`` (``model(xt, t) -> eps_hat``; a module is put in eval mode) on ``x0`` at ``num_bins``
    evenly spaced code steps.

    Returns ``(t, loss)``: int64 ``(num_bins,)`` code steps and float64 ``(num_bins,)`` mean
    squared errors, each averaged over all of ``x0`` (same eps draws for every t).
    """
    if isinstance(model, torch.nn.Module):
        model.eval()
    steps = torch.linspace(0, schedule.T - 1, num_bins).round().long()
    eps = torch.randn(x0.shape, generator=generator, device=generator.device if generator else x0.device).to(x0.device)
    losses = []
    for step in steps.tolist():
        t = torch.full((x0.shape[0],), step, dtype=torch.long, device=x0.device)
        losses.append(simple_loss(model, schedule, x0, t=t, noise=eps).double().item())
    return steps, torch.tensor(losses, dtype=torch.float64)
