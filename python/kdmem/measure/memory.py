"""Device-independent tensor memory accounting for tests and benchmarks.

:class:`TensorMeter` is a ``TorchDispatchMode`` that sees every tensor an aten op returns
while it is active, and tracks the storages they live in until the last tracked tensor
on each storage is garbage-collected. It reports the peak of live bytes and the largest
single storage, on CPU as on CUDA (``torch.cuda.max_memory_allocated`` needs a GPU).
Kernel-internal scratch buffers are invisible to it; tensors created before the mode
started (weights) are not counted.
"""

from __future__ import annotations

import weakref
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
