"""Batches of a model pass: automatic batch size, and halving the batch on CUDA out-of-memory
while retrying the same rows (every row's result depends only on that row)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from kdmem.progress import Meter

__all__ = ["auto_batch_size", "is_oom", "run_batches"]


def is_oom(e: BaseException) -> bool:
    """A CUDA (or other accelerator) out-of-memory error."""
    if isinstance(e, torch.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


def auto_batch_size(device: str, per_example_bytes: int, cap: int = 1024) -> int:
    """Largest power of two whose estimated activations fit 70% of free CUDA memory; 32 on
    CPU (throughput flattens there and memory is rarely the limit)."""
    if not device.startswith("cuda"):
        return 32
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    n = max(1, int(0.7 * free) // max(1, per_example_bytes))
    bs = 1
    while bs * 2 <= min(n, cap):
        bs *= 2
    return bs


def run_batches(
    fn: Callable[[int, int], None], n: int, batch_size: int, meter: Meter | None = None
) -> list[int]:
    """Call ``fn(start, stop)`` over ``[0, n)`` in batches; halve the batch on out-of-memory
    and retry the same rows. ``meter`` advances by the rows of each finished batch. Returns
    the batch sizes used, in the order first used."""
    used: list[int] = []
    i = 0
    bs = max(1, batch_size)
    while i < n:
        stop = min(n, i + bs)
        try:
            fn(i, stop)
        except Exception as e:
            if not is_oom(e) or bs == 1:
                raise
            torch.cuda.empty_cache()
            bs = max(1, bs // 2)
            continue
        if bs not in used:
            used.append(bs)
        if meter is not None:
            meter.advance(stop - i)
        i = stop
    return used
