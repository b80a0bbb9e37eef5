"""Training in several processes: ``torchrun`` and ``DistributedDataParallel`` (chapter 13).

``torchrun --nproc_per_node=N -m ddpm_tutor train ...`` starts N copies of the command, one per GPU (or
N on a CPU), and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each.
:func:`setup` reads them and joins the copies into one process group (NCCL on CUDA, gloo on the CPU);
without them it does nothing, so the plain command trains in one process with no process group at all.

What each rank does, and why the recipe means the same at any N:

* the **global batch** is ``TrainConfig.batch_size``, split evenly: rank ``r`` of ``N`` trains on images
  ``r * B/N .. (r+1) * B/N - 1`` of it (:func:`shard`). Every rank draws the whole batch's indices, ``t`` and
  ``eps`` from a generator seeded alike on every rank, and keeps its slice, so the global batch is the one a
  single process draws (``ddpm_tutor.training._draw_batch``);
* ``DistributedDataParallel`` averages the ranks' gradients (an all-reduce in backward), and the mean of N
  equal shards' mean losses is the global batch's mean loss: every rank takes the optimiser step one process
  would take, up to the order of floating-point sums;
* so the weights, and therefore the EMA every rank keeps of them, are identical on every rank; only rank 0
  writes checkpoints, draws sample grids and shows a progress bar.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = ["World", "setup", "teardown", "shard", "launched_by_torchrun", "all_mean"]

#: The variables ``torchrun`` (and ``torch.distributed``'s ``env://`` initialisation) reads.
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """Where this process stands: its ``rank`` among ``size`` processes (0 of 1 without a process group)."""

    rank: int = 0  # this process's index, 0..size-1
    size: int = 1  # the number of processes training together (world_size)
    local_rank: int = 0  # its index on this machine: which GPU it uses

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """A process group is in use (``size`` may still be 1 under ``torchrun --nproc_per_node=1``)."""
        return torch.distributed.is_available() and torch.distributed.is_initialized()


def launched_by_torchrun() -> bool:
    """``RANK`` and ``WORLD_SIZE`` are set, as ``torchrun`` (or another launcher using ``env://``) sets them."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device: torch.device | None) -> tuple[World, torch.device | None]:
    """Join the process group ``torchrun`` describes (a no-op without it) and pick this rank's device.

    An existing process group (one the caller initialised) is used as it is. Under ``torchrun`` a CUDA device
    given without an index (``None`` or ``"cuda"``) becomes ``cuda:LOCAL_RANK``, one GPU per process.
    Returns ``(world, device)``; ``device`` is returned unchanged in one process.
    """
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        world = World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
        return world, _rank_device(device, world)
    if not launched_by_torchrun():
        return World(), device
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed, which torchrun training needs; "
                           "train in one process (python -m ddpm_tutor train ...)")
    missing = [v for v in ENV_VARS if v not in os.environ and v != "LOCAL_RANK"]
    if missing:
        raise RuntimeError(f"RANK and WORLD_SIZE are set but {missing} are not: start the run with "
                           "`torchrun --nproc_per_node=N -m ddpm_tutor train ...`, which sets them all")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), local_rank)
    device = _rank_device(device, world)
    cuda = device is not None and torch.device(device).type == "cuda"
    if cuda:
        if not torch.cuda.is_available() or device.index >= torch.cuda.device_count():
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            raise ValueError(
                f"process {world.local_rank} on this machine trains on {device}, but the machine has {count} CUDA "
                f"device(s): start one process per GPU (torchrun --nproc_per_node={max(count, 1)}), or pass --device cpu"
            )
        torch.cuda.set_device(device)
    # NCCL between GPUs, gloo between CPU processes; env:// reads MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE
    dist.init_process_group("nccl" if cuda else "gloo", init_method="env://", rank=world.rank, world_size=world.size,
                            **({"device_id": torch.device(device)} if cuda else {}))
    return world, device


def _rank_device(device: torch.device | str | None, world: World) -> torch.device | None:
    """``cuda:LOCAL_RANK`` for a CUDA device named without an index when several processes train; else ``device``."""
    if device is None:
        if not torch.cuda.is_available():
            return torch.device("cpu")
        device = "cuda"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", world.local_rank)
    return device


def teardown() -> None:
    """Destroy the process group, if there is one (the command line, after training under ``torchrun``)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def shard(batch_size: int, world: World) -> slice:
    """This rank's slice of a global batch of ``batch_size`` images: ``batch_size / world.size`` of them.

    ``ValueError`` naming ``--batch-size`` when the batch does not divide among the processes: unequal shards
    would weigh the images of the smaller shards more in the averaged gradient.
    """
    if batch_size % world.size:
        below, above = batch_size - batch_size % world.size, batch_size + world.size - batch_size % world.size
        raise ValueError(
            f"the global batch (TrainConfig.batch_size, --batch-size) is {batch_size}, which does not divide among "
            f"{world.size} processes (the world size, --nproc_per_node): every process trains on an equal share of "
            f"it. Choose a multiple of {world.size}, e.g. --batch-size {above}" + (f" or {below}" if below else "")
        )
    per_rank = batch_size // world.size
    return slice(world.rank * per_rank, (world.rank + 1) * per_rank)


def all_mean(values: torch.Tensor, world: World) -> torch.Tensor:
    """The mean of ``values`` over the ranks (one all-reduce); ``values`` itself in one process."""
    if not world.distributed or world.size == 1:
        return values
    total = values.clone()
    torch.distributed.all_reduce(total)  # sum over ranks
    return total / world.size
