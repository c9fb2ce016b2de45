"""Per-shard partial results kept next to an output and reused while their shards are
unchanged: after ``kdmem shard --append`` and ``kdmem index``, ``kdmem featurize`` and
``kdmem scan`` compute only the new shards' parts and merge them with the stored ones (counts
add, matching statistics take the maximum, locations concatenate in shard order), which is
exactly what a full rerun computes.

A stored part is the partial table of a contiguous run of shards (``OUT.parts/KIND-...
.parquet``, written atomically). It is reused when its *key* matches: the kind and everything
that shapes the result (a digest of the query inputs as loaded, the options, the index's
tokenizer) and, for each shard it covers, the shard's number, first document id, data
checksum and token count from ``shards.json``. Directories without a kdmem manifest
(infini-gram indexes), or whose ``*.kdt`` files disagree with their manifest, are never
cached. The directory may be deleted at any time; parts of other keys stay until a run of the
same key finds them stale and removes them.

Ray tasks and local runs store their parts the same way (:func:`stored_task`), so a rerun after
a failed run (a killed task that exhausted its retries, a lost driver) recomputes only what
is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from kdmem.atomic import write_parquet_atomic
from kdmem.rundir import table_meta, with_table_meta

__all__ = ["PartCache", "digest", "runs", "shard_keys", "stored_task"]

SUFFIX = ".parts"
ENV_TEST_LOG = "KDMEM_TEST_TASK_LOG"
"""Test hook: a directory where each stored task records one file per attempt, and where a
file ``kill-KIND-K`` makes the next attempt on shard K kill its own process (once)."""


def shard_keys(index: str | os.PathLike[str]) -> list[list[int]] | None:
    """``[number, first_doc, checksum, n_tokens]`` of every shard of a kdmem shard directory,
    from ``shards.json``; None when there is no usable manifest."""
    d = Path(index)
    try:
        m = json.loads((d / "shards.json").read_text())
        shards = m["shards"]
        names = [s["name"] for s in shards]
        keys = [
            [k, int(s["first_doc"]), int(s["checksum"]), int(s["n_tokens"])]
            for k, s in enumerate(shards)
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not m.get("complete") or names != sorted(p.name for p in d.glob("*.kdt")):
        return None
    return keys


def digest(*parts: Any) -> str:
    """SHA-256 (hex) of ``parts``: bytes-like values (numpy arrays) as their bytes, the rest
    as JSON."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, bytes | bytearray | memoryview):
            h.update(b"b%d:" % len(p))
            h.update(p)
        elif hasattr(p, "tobytes"):
            b = p.tobytes()
            h.update(f"a{getattr(p, 'dtype', '')}{getattr(p, 'shape', '')}{len(b)}:".encode())
            h.update(b)
        else:
            s = json.dumps(p, sort_keys=True).encode()
            h.update(b"j%d:" % len(s))
            h.update(s)
    return h.hexdigest()


def runs(shards: Iterable[int]) -> list[list[int]]:
    """``shards`` (sorted) in contiguous runs, e.g. ``[0, 1, 2, 5, 6] -> [[0, 1, 2], [5, 6]]``."""
    out: list[list[int]] = []
    for k in sorted(shards):
        if out and out[-1][-1] == k - 1:
            out[-1].append(k)
        else:
            out.append([k])
    return out


class PartCache:
    """The stored parts of one kind and key next to ``out`` (see the module docs)."""

    def __init__(
        self, directory: str | os.PathLike[str], kind: str, base: str, keys: list[list[int]]
    ):
        self.directory = Path(directory)
        self.kind = kind
        self.base = base
        self.keys = keys

    @classmethod
    def beside(
        cls, out: str | os.PathLike[str], index: str | os.PathLike[str], kind: str, base: str
    ) -> PartCache | None:
        """The cache of ``out`` (``OUT.parts/``) for ``index``, or None if ``index`` cannot be
        cached (no kdmem manifest)."""
        keys = shard_keys(index)
        if keys is None:
            return None
        o = Path(out)
        return cls(o.with_name(o.name + SUFFIX), kind, base, keys)

    @property
    def spec(self) -> tuple[str, str, str, list[list[int]]]:
        """What a task needs to store into this cache (picklable)."""
        return (str(self.directory), self.kind, self.base, self.keys)

    def _prefix(self) -> str:
        return f"{self.kind}-{self.base[:16]}-"

    def _path(self, shards: Sequence[int]) -> Path:
        group = digest([self.keys[k] for k in shards])
        return self.directory / f"{self._prefix()}{group[:16]}.parquet"

    def lookup(self) -> tuple[list[pa.Table], list[int]]:
        """``(tables, missing)``: stored parts whose shards are unchanged (disjoint, each
        marked with the directory's current shard count) and the shard numbers none covers.
        Parts of this key that no longer match are removed."""
        found: list[tuple[list[int], Path]] = []
        for p in sorted(self.directory.glob(f"{self._prefix()}*.parquet")):
            try:
                info = table_meta(pq.read_schema(p)).get("cache", {})
            except (OSError, pa.ArrowInvalid):
                info = {}
            group = info.get("shards", [])
            ok = (
                info.get("kind") == self.kind
                and info.get("base") == self.base
                and group
                and all(0 <= g[0] < len(self.keys) and self.keys[g[0]] == g for g in group)
            )
            if ok:
                found.append(([g[0] for g in group], p))
            else:
                p.unlink(missing_ok=True)
        found.sort(key=lambda f: (f[0][0], -len(f[0])))
        covered: set[int] = set()
        tables = []
        for shards, p in found:
            if covered.isdisjoint(shards):
                covered.update(shards)
                tables.append(self._load(p))
        missing = [k for k in range(len(self.keys)) if k not in covered]
        return tables, missing

    def _load(self, path: Path) -> pa.Table:
        table = pq.read_table(path)
        meta = table_meta(table)
        meta.pop("cache", None)
        meta["n_shards"] = len(self.keys)
        return with_table_meta(table, meta)

    def store(self, table: pa.Table, shards: Sequence[int]) -> Path:
        """Write ``table``, the partial result of ``shards``, as this cache's part for them."""
        shards = sorted(int(k) for k in shards)
        meta = table_meta(table)
        meta["cache"] = {
            "kind": self.kind,
            "base": self.base,
            "shards": [self.keys[k] for k in shards],
        }
        path = self._path(shards)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_parquet_atomic(path, with_table_meta(table, meta))
        return path


def _test_hook(kind: str, shards: Sequence[int]) -> None:
    log = os.environ.get(ENV_TEST_LOG)
    if not log:
        return
    import signal
    import uuid

    d = Path(log)
    tag = f"{kind}-{min(shards)}"
    node = ""
    try:
        import ray

        if ray.is_initialized():
            node = ray.get_runtime_context().get_node_id()
    except ImportError:
        pass
    (d / f"attempt-{tag}-{uuid.uuid4().hex}").write_text(node)
    kill = d / f"kill-{tag}"
    if kill.exists():
        kill.unlink()
        os.kill(os.getpid(), signal.SIGKILL)


def stored_task(
    first: Any,
    index: str | os.PathLike[str],
    *args: Any,
    shards: Sequence[int],
    task: Callable[..., pa.Table],
    cache: tuple[str, str, str, list[list[int]]] | None,
    **kw: Any,
) -> pa.Table:
    """``task(first, index, *args, shards=shards, **kw)``, stored into the cache ``cache``
    (:attr:`PartCache.spec`) before it is returned: one Ray task (or local run) whose result
    survives the run that asked for it."""
    _test_hook(cache[1] if cache else task.__name__, shards)
    table = task(first, index, *args, shards=shards, **kw)
    if cache is not None:
        PartCache(*cache).store(table, shards)
    return table
