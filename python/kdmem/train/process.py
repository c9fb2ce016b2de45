"""Processes of a training run: the process group and this rank's device, DDP / FSDP2
wrapping of the student, FSDP2 sharding of a frozen teacher, gradient-sync and autocast
contexts (torchrun / accelerate launch; one process needs none of it)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

from kdmem.config import OptimConfig
from kdmem.distributed import TRAIN_TIMEOUT, Dist, init_distributed
from kdmem.errors import KdmemIOError

__all__ = [
    "autocast",
    "check_path_writable",
    "is_fsdp",
    "no_sync",
    "setup_distributed",
    "shard_fsdp",
    "torch_device",
    "wrap_student",
]


def setup_distributed(device: str | None) -> Dist:
    """Join the process group when launched by torchrun / accelerate launch (``WORLD_SIZE``
    > 1): NCCL on CUDA, gloo on CPU. ``Dist.device`` is the device this rank trains on."""
    d = init_distributed(device, timeout=TRAIN_TIMEOUT)
    if torch_device(d).type == "cuda":
        torch.cuda.set_device(torch_device(d))
    return d


def torch_device(d: Dist) -> torch.device:
    """``d.device`` as a ``torch.device``."""
    return torch.device(d.device)


def autocast(precision: str, device: str | torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast (fp32 master weights) or nothing."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def no_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager[Any]:
    """Skip the gradient all-reduce on accumulation micro-batches (DDP and FSDP2)."""
    if sync:
        return contextlib.nullcontext()
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2

        @contextlib.contextmanager
        def _off() -> Iterator[None]:
            set_sync = cast(Callable[[bool], None], model.set_requires_gradient_sync)
            set_sync(False)
            try:
                yield
            finally:
                set_sync(True)

        return _off()
    return contextlib.nullcontext()


def is_fsdp(model: nn.Module) -> bool:
    return hasattr(model, "set_requires_gradient_sync")


def _layers(lm: nn.Module) -> list[nn.Module]:
    names = set(getattr(lm, "_no_split_modules", None) or [])
    return [m for m in lm.modules() if type(m).__name__ in names]


def shard_fsdp(module: nn.Module, lm: nn.Module, offload: bool = False) -> nn.Module:
    """FSDP2 (``fully_shard``): each decoder layer (``lm._no_split_modules``) is its own
    unit, then the root; parameters stay fp32 (bf16 compute comes from autocast).
    ``offload`` keeps sharded parameters in CPU memory between uses (``CPUOffloadPolicy``)."""
    policy = CPUOffloadPolicy() if offload else OffloadPolicy()
    for layer in _layers(lm):
        fully_shard(layer, offload_policy=policy)
    fully_shard(module, offload_policy=policy)
    return module


def wrap_student(student: nn.Module, cfg: OptimConfig, dist: Dist) -> nn.Module:
    """DDP or FSDP2 around the student under torchrun; the module itself for one process."""
    if dist.world_size == 1:
        return student
    if cfg.distributed == "fsdp":
        return shard_fsdp(student, student.lm)  # type: ignore[arg-type]
    dev = torch_device(dist)
    ids = [dev.index] if dev.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(student, device_ids=ids)


def check_path_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KdmemIOError(f"cannot create output directory {out}: {e.strerror}") from None
