"""Memory accounting for tests and benchmarks: live tensor bytes and the CPU allocator's peak.

:class:`TensorMeter` is a ``TorchDispatchMode`` that sees every tensor an aten op returns
while it is active, and tracks the storages they live in until the last tracked tensor
on each storage is garbage-collected. It reports the peak of live bytes and the largest
single storage, on CPU as on CUDA (``torch.cuda.max_memory_allocated`` needs a GPU).
Kernel-internal scratch buffers are invisible to it; tensors created before the mode
started (weights) are not counted.

:class:`AllocatorMeter` is the CPU counterpart of ``torch.cuda.max_memory_allocated``: the
peak of bytes held by PyTorch's CPU allocator, integrated from the allocation and free
events that ``torch.autograd.profiler.profile(profile_memory=True)`` records. It sees what
:class:`TensorMeter` misses (workspaces and temporaries that kernels allocate and free
inside one op, autograd's own buffers, oneDNN scratchpads), not memory that bypasses
PyTorch's allocator (BLAS packing buffers, Python objects, memory-mapped files).
"""

from __future__ import annotations

import weakref
from types import TracebackType
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class TensorMeter(TorchDispatchMode):
    """``with TensorMeter() as m: ...`` then ``m.peak_bytes``, ``m.largest_bytes``."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._live: dict[int, list[int]] = {}  # storage ptr -> [nbytes, tracked tensors]
        self.current_bytes = 0
        self.peak_bytes = 0
        self.largest_bytes = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out

    def _track(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        key, nbytes = st.data_ptr(), st.nbytes()
        if key == 0 or nbytes == 0:
            return
        entry = self._live.get(key)
        if entry is None:
            self._live[key] = [nbytes, 1]
            self.current_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.current_bytes)
        else:
            entry[1] += 1
        self.largest_bytes = max(self.largest_bytes, nbytes)
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current_bytes -= entry[0]
            del self._live[key]


_RESET = "kdmem.AllocatorMeter.reset_peak"
_STOP = "kdmem.AllocatorMeter.stop_peak"


class AllocatorMeter:
    """``with AllocatorMeter() as m: ...`` then ``m.peak_bytes``: the peak of bytes that
    PyTorch's CPU allocator (c10's ``DefaultCPUAllocator``) holds for blocks allocated
    since the meter started, as ``torch.cuda.max_memory_allocated`` counts on a GPU.

    ``reset_peak()`` starts the peak window anew (from the bytes live then, as
    ``torch.cuda.reset_peak_memory_stats``); ``stop_peak()`` ends it (later allocations do
    not count). The figures are computed when the ``with`` block exits, by integrating the
    profiler's allocation events (address and exact request size in bytes, signed: a free
    is negative) in time order; ``peak_bytes``, ``bytes_at_reset`` and ``current_bytes``
    (at exit) are then set, ``events`` is the number of events counted. Costs one profiler
    record per op and per allocation while active, and a pass over them at exit.

    Limits, all from how PyTorch reports to its profiler: blocks allocated before the
    meter started are not counted and their frees are ignored; allocation events are
    reported only by threads that carry the profiler's thread-local state (the thread
    that entered the meter, and autograd's worker threads), so blocks allocated inside
    an intra-op parallel region on an OpenMP worker thread are missed
    (``torch.set_num_threads(1)`` runs every region on the calling thread, which makes
    the count complete).
    """

    def __init__(self) -> None:
        self.peak_bytes = 0
        self.bytes_at_reset = 0
        self.current_bytes = 0
        self.events = 0  # allocation and free events seen
        self._prof: Any = None

    def __enter__(self) -> AllocatorMeter:
        from torch.autograd.profiler import profile

        self._prof = profile(profile_memory=True)
        self._prof.__enter__()
        return self

    def reset_peak(self) -> None:
        """Start the peak window here: the peak restarts from the bytes live now."""
        with torch.autograd.profiler.record_function(_RESET):
            pass

    def stop_peak(self) -> None:
        """End the peak window here (the first stop after the last reset counts)."""
        with torch.autograd.profiler.record_function(_STOP):
            pass

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        from torch._C._profiler import _ExtraFields_Allocation

        self._prof.__exit__(exc_type, exc, tb)
        result = self._prof.kineto_results
        self._prof = None
        blocks: list[tuple[int, int, int]] = []  # (time ns, signed bytes, address)
        resets: list[int] = []
        stops: list[int] = []
        todo = list(result.experimental_event_tree()) if result is not None else []
        while todo:
            e = todo.pop()
            todo.extend(e.children)
            f = e.extra_fields
            if isinstance(f, _ExtraFields_Allocation):
                if f.device.type == "cpu":
                    blocks.append((e.start_time_ns, f.alloc_size, f.ptr))
            elif e.name == _RESET:
                resets.append(e.start_time_ns)
            elif e.name == _STOP:
                stops.append(e.start_time_ns)
        # In time order; at one instant frees first (an address is freed before its reuse).
        blocks.sort(key=lambda b: (b[0], b[1] > 0))
        memory: list[tuple[int, int]] = []
        live: dict[int, int] = {}  # address -> bytes, of blocks allocated under the meter
        for t, nbytes, ptr in blocks:
            if nbytes > 0:
                live[ptr] = nbytes
                memory.append((t, nbytes))
            elif ptr in live:  # a block from before the meter (or an earlier one): ignored
                memory.append((t, -live.pop(ptr)))
        self.events = len(memory)
        start = max(resets, default=None)
        end = min((t for t in stops if start is None or t >= start), default=None)
        self.peak_bytes, self.bytes_at_reset, self.current_bytes = peak_of(
            memory, start=start, end=end
        )


def peak_of(
    memory: list[tuple[int, int]], *, start: int | None = None, end: int | None = None
) -> tuple[int, int, int]:
    """``(peak, live at start, live after the last event)`` of time-ordered ``(time ns,
    signed bytes)`` allocation events: the largest running sum of bytes over the window
    ``start <= time < end`` (``None``: unbounded), counted from the bytes live at
    ``start``. O(events)."""
    at_start = sum(n for t, n in memory if start is not None and t < start)
    live = peak = at_start
    for t, n in memory:
        if (start is None or t >= start) and (end is None or t < end):
            live += n
            peak = max(peak, live)
    return peak, at_start, sum(n for _, n in memory)
