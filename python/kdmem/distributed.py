"""The process group under torchrun / accelerate launch, shared by training and measurement.

Rank, world size and local rank come from the launcher's environment (``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``); a single process needs no group at all. Backend: NCCL on CUDA,
gloo on CPU. kdmem joins an existing group instead of creating a second one, and only
destroys a group it created (:func:`close_distributed`) or, at the end of a CLI command,
whatever group is left (:func:`shutdown`).

torch is imported only when a group is needed, so single-process callers of this module
(and ``import kdmem``) stay light.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "BACKEND_ENV",
    "MEASURE_TIMEOUT",
    "TRAIN_TIMEOUT",
    "Dist",
    "close_distributed",
    "init_distributed",
    "is_main_process",
    "nccl_available",
    "pick_backend",
    "pick_device",
    "shutdown",
]

# Every collective waits at most this long. Training: rank 0 alone writes checkpoints and
# validates while the others wait at a barrier. Measurement: a long chunk on one rank.
TRAIN_TIMEOUT = timedelta(hours=4)
MEASURE_TIMEOUT = timedelta(hours=24)


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: ``rank`` of ``world_size``; ``device`` it computes on
    (``cpu``, ``cuda:1``); ``initialized_here`` when kdmem called ``init_process_group``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of ``t`` over ranks (``t`` itself for one process; never modified in place)."""
        if self.world_size > 1:
            import torch.distributed as dist

            t = t.clone()
            dist.all_reduce(t)
        return t


def is_main_process() -> bool:
    """Rank 0 of a launch (or a plain process), from the launcher's environment."""
    return int(os.environ.get("RANK", "0")) == 0


def pick_device(device: str | None, local_rank: int = 0) -> str:
    """``device`` if given, else ``cuda:<local_rank>`` when CUDA is available, else cpu."""
    if device:
        return device
    import torch

    return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"


BACKEND_ENV = "KDMEM_DIST_BACKEND"


def pick_backend(use_cuda: bool, requested: str | None = None) -> str:
    """The process-group backend: ``requested`` (default: ``$KDMEM_DIST_BACKEND``, which
    ``kdmem run`` sets from ``launch.backend``) or ``auto``: NCCL on CUDA, gloo on CPU.
    NCCL without CUDA (or a torch built without it) falls back to gloo with a warning."""
    want = requested or os.environ.get(BACKEND_ENV, "auto")
    if want == "gloo":
        return "gloo"
    if want == "nccl" and not (use_cuda and nccl_available()):
        warnings.warn(
            "kdmem: NCCL needs CUDA devices and a torch built with NCCL, and this process "
            "computes on cpu: using gloo instead",
            stacklevel=2,
        )
        return "gloo"
    return "nccl" if use_cuda else "gloo"


def nccl_available() -> bool:
    import torch.distributed as dist

    return bool(dist.is_available() and dist.is_nccl_available())


def init_distributed(device: str | None, *, timeout: timedelta) -> Dist:
    """Join (or create) the process group when ``WORLD_SIZE`` > 1 and pick this rank's
    device (:func:`pick_device`). ``timeout`` bounds every collective
    (:data:`TRAIN_TIMEOUT`, :data:`MEASURE_TIMEOUT`)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(device=pick_device(device))
    import torch
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    here = False
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend=pick_backend(use_cuda), timeout=timeout)
        here = True
    return Dist(dist.get_rank(), dist.get_world_size(), local, here, pick_device(device, local))


def close_distributed(d: Dist) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if d.initialized_here:
        import torch.distributed as dist

        dist.destroy_process_group()


def shutdown() -> None:
    """Destroy whatever process group is left (end of a CLI command)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
