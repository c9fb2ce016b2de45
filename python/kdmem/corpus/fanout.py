"""Corpus work fanned out per shard: Ray tasks (``--ray``) or a Slurm array of plain CLI calls
(``--shard K --partial-out DIR``, then ``--merge DIR``); docs/scaleout.md.

Every task gets a shard number and paths, opens what it needs itself (one shard of the index,
the examples) and returns a small Arrow table, so the tasks share nothing but a filesystem
that every worker can read. The merge runs in the driver and is the same code as the local
path's, so either way of fanning out writes the output of a local run.

This module knows how to run a per-shard function, not what it computes: ``index``,
``featurize`` and ``scan`` pass their own task functions in, so nothing here imports them.
Ray is imported only here (``pip install "kdmem[ray]"``); ``ray.init()`` is called when no Ray
session exists: it joins the cluster named by ``RAY_ADDRESS`` (or one started with ``ray
start``) and otherwise starts a local one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from kdmem import _core, extras
from kdmem.atomic import write_parquet_atomic
from kdmem.errors import InvalidArgumentError, KdmemError

__all__ = ["map_shards", "read_parts", "shard_numbers", "task_groups", "write_part"]


def _ray() -> Any:
    extras.require("ray", why="--ray")
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=False)
    return ray


def shard_numbers(index: str | os.PathLike[str], shards: Sequence[int] | None = None) -> list[int]:
    """``shards`` (sorted, unique), or every shard number of the directory ``index``."""
    n = len(list(Path(index).glob("shard-*.kdt")))
    if n == 0:
        raise InvalidArgumentError(
            f"invalid index = {str(index)!r}: no shard-*.kdt files to fan out over "
            "(--ray needs a kdmem shard directory)"
        )
    return list(range(n)) if shards is None else sorted({int(k) for k in shards})


def task_groups(
    index: str | os.PathLike[str], shards: Sequence[int] | None = None
) -> list[list[int]]:
    """``shards`` (default: every shard) grouped by the index's units, so that each task
    searches one unit once (a unit may hold many small shards); one group per shard while
    the index is not built."""
    sel = shard_numbers(index, shards)
    try:
        units = _core.Index(Path(index)).units
    except KdmemError:
        return [[k] for k in sel]
    want = set(sel)
    groups: list[list[int]] = []
    for unit in units:
        g = [k for k in unit if k in want]
        if g and (not groups or groups[-1] != g):
            groups.append(g)
    return groups


def map_shards(
    fn: Callable[..., Any],
    first: Any,
    index: str | os.PathLike[str],
    *args: Any,
    shards: Sequence[int] | None = None,
    groups: Sequence[Sequence[int]] | None = None,
    **kw: Any,
) -> list[Any]:
    """``[fn(first, index, *args, shards=group, **kw) for group in task_groups(index,
    shards)]`` as one Ray task per unit of ``index`` (per shard before it is built; ``groups``
    given: one task per given group), results in shard order. Large arguments (``args``) are
    put in the object store once."""
    ray = _ray()
    task = ray.remote(num_cpus=1)(fn)
    args_refs = [ray.put(a) for a in args]
    todo = [list(g) for g in groups] if groups is not None else task_groups(index, shards)
    refs = [task.remote(first, index, *args_refs, shards=g, **kw) for g in todo]
    return list(ray.get(refs))


def read_parts(directory: str | os.PathLike[str]) -> list[pa.Table]:
    """The per-shard tables (``*.parquet``) that ``--partial-out`` wrote into ``directory``."""
    paths = sorted(Path(directory).glob("*.parquet"))
    if not paths:
        raise InvalidArgumentError(f"{directory} holds no per-shard .parquet results")
    return [pq.read_table(p) for p in paths]


def write_part(table: pa.Table, directory: str | os.PathLike[str], shards: Sequence[int]) -> Path:
    """Write one task's table as ``directory/shard-<first shard>.parquet`` (atomically)."""
    out = Path(directory) / f"shard-{min(shards):05d}.parquet"
    write_parquet_atomic(out, table)
    return out
