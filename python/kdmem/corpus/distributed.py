"""Fan corpus work out as stateless per-shard Ray tasks (``--ray``; docs/scaleout.md).

Every task gets a shard number and paths, opens what it needs itself (one shard of the index,
the examples) and returns a small Arrow table, so the tasks share nothing but a filesystem
that every worker can read (the index directory, the examples; ``kdmem index`` also writes
there). The merge runs in the driver and is the same code as the local path's, so ``--ray``
output is identical to a local run. A Slurm array runs the same tasks as plain CLI calls.

Ray is imported only here. ``ray.init()`` is called when no Ray session exists: it joins the
cluster named by ``RAY_ADDRESS`` (or one started with ``ray start``) and otherwise starts a
local one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def _ray() -> Any:
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=False)
    return ray


def _shards(index: str | os.PathLike[str], shards: Sequence[int] | None = None) -> list[int]:
    from kdmem.corpus.index import n_shard_files

    n = n_shard_files(index)
    if n == 0:
        from kdmem.errors import InvalidArgumentError

        raise InvalidArgumentError(
            f"invalid index = {str(index)!r}: no shard-*.kdt files to fan out over "
            "(--ray needs a kdmem index directory)"
        )
    return list(range(n)) if shards is None else sorted(set(int(k) for k in shards))


def map_shards(
    fn: Callable[..., Any], first: Any, index: str | os.PathLike[str], *args: Any, **kw: Any
) -> list[Any]:
    """``[fn(first, index, *args, shards=[k], **kw) for k in shards]`` as one Ray task per
    shard of ``index``, results in shard order. Large arguments (``args``) are put in the
    object store once."""
    ray = _ray()
    task = ray.remote(num_cpus=1)(fn)
    args_refs = [ray.put(a) for a in args]
    refs = [task.remote(first, index, *args_refs, shards=[k], **kw) for k in _shards(index)]
    return list(ray.get(refs))


def _build_one(shards_dir: Path, threads: int | None, k: int) -> dict[str, Any]:
    from kdmem.corpus.index import build_index

    return build_index(shards_dir, threads, shards=[k])


def build_index_ray(
    shards_dir: Path, threads: int | None, shards: Sequence[int] | None
) -> dict[str, Any]:
    """``build_index`` with one Ray task per shard; returns the summed report (``seconds``:
    wall time of the whole fan-out)."""
    import time

    t0 = time.perf_counter()
    ray = _ray()
    task = ray.remote(num_cpus=1)(_build_one)
    reports = ray.get([task.remote(shards_dir, threads, k) for k in _shards(shards_dir, shards)])
    out = {k: sum(r[k] for r in reports) for k in ("shards", "built", "skipped", "tokens_built")}
    out["seconds"] = time.perf_counter() - t0
    return out
