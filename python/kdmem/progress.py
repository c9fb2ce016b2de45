"""The one progress protocol of every long stage (shard, index, featurize, scan, measure,
generate): library functions take ``progress: Progress | None`` and call it with a
:class:`Tick`; drawing (tqdm) happens at the CLI edge only (``kdmem.cli``).

A stage reports cumulative counts, so a callback may drop ticks (or see them from several
threads' work at once) without drifting. ``None`` means no reporting at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Meter", "Progress", "Tick"]


@dataclass(frozen=True)
class Tick:
    """Where a stage stands: ``done`` of ``total`` ``unit`` (``total`` None when unknown);
    ``info`` holds extra counters to show beside it (documents, tokens, tokens/s)."""

    stage: str
    done: float
    total: float | None
    unit: str
    info: Mapping[str, Any] = field(default_factory=dict)


Progress = Callable[[Tick], None]
"""A callback receiving :class:`Tick` s; it must be cheap (it runs on the working thread)."""


class Meter:
    """Counts work for one stage and reports it: ``advance(n, **info)`` adds ``n`` units and
    calls the callback with the cumulative count and a ``tok/s`` figure when ``tokens_per``
    (tokens per unit) is given. A ``None`` callback makes every call a no-op."""

    def __init__(
        self,
        progress: Progress | None,
        stage: str,
        total: float | None,
        unit: str,
        *,
        tokens_per: int = 0,
    ) -> None:
        self.progress = progress
        self.stage = stage
        self.total = total
        self.unit = unit
        self.tokens_per = tokens_per
        self.done = 0.0
        self._t0 = time.perf_counter()
        if progress is not None:
            progress(Tick(stage, 0, total, unit))

    def advance(self, n: float, **info: Any) -> None:
        self.done += n
        if self.progress is None:
            return
        if self.tokens_per:
            rate = self.done * self.tokens_per / max(1e-9, time.perf_counter() - self._t0)
            info = {"tok/s": f"{rate:,.0f}", **info}
        self.progress(Tick(self.stage, self.done, self.total, self.unit, info))
