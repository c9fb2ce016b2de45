"""Chunked, resumable Parquet output of a model pass, independent of the world size.

The examples (sorted by id) are cut into fixed blocks of ``chunk_size`` examples; chunk ``k``
belongs to rank ``k % world_size``. Chunk contents therefore never depend on the world size,
each finished chunk is one atomic Parquet file in a hidden ``.parts`` directory next to the
output, a rerun skips the chunks already there, and rank 0 merges them (in id order) into the
final file, whose ``kdmem`` metadata carries the run's fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from kdmem.atomic import write_json_atomic, write_parquet_atomic
from kdmem.distributed import Dist
from kdmem.errors import KdmemIOError
from kdmem.rundir import read_table_meta, table_meta, with_table_meta

__all__ = ["PARTS_VERSION", "ChunkedRun", "data_fingerprint", "made_from"]

PARTS_VERSION = 1


def data_fingerprint(ids: npt.NDArray[np.int64], tokens: npt.NDArray[np.int64]) -> str:
    """SHA-256 of example ids and tokens (little-endian int64) and the token matrix shape."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(ids, dtype="<i8").tobytes())
    h.update(str(tokens.shape).encode())
    h.update(np.ascontiguousarray(tokens, dtype="<i8").tobytes())
    return h.hexdigest()


def made_from(path: Path, fingerprint: str) -> bool:
    """``path`` is a finished kdmem table whose metadata carries ``fingerprint``."""
    if not path.is_file():
        return False
    try:
        return read_table_meta(path).get("fingerprint") == fingerprint
    except Exception:  # unreadable: not ours to trust, so not finished
        return False


@dataclass
class ChunkedRun:
    """Resumable output split into chunks of examples (see the module docstring)."""

    out: Path
    fingerprint: str
    n_examples: int
    chunk_size: int
    dist: Dist

    @property
    def parts(self) -> Path:
        return self.out.with_name(f".{self.out.name}.parts")

    @property
    def n_chunks(self) -> int:
        return max(1, -(-self.n_examples // self.chunk_size))

    def done(self) -> bool:
        """The final file exists and was made from exactly these inputs and options."""
        return made_from(self.out, self.fingerprint)

    def prepare(self) -> list[int]:
        """Rank 0 clears stale parts (other inputs/options); every rank then syncs. Returns
        this rank's unfinished chunks (:meth:`my_chunks`)."""
        if self.dist.rank == 0:
            stamp = self.parts / "run.json"
            stale = True
            if stamp.is_file():
                try:
                    stale = json.loads(stamp.read_text()).get("fingerprint") != self.fingerprint
                except (OSError, ValueError):
                    stale = True
            if stale and self.parts.exists():
                shutil.rmtree(self.parts)
            self.parts.mkdir(parents=True, exist_ok=True)
            if stale:
                write_json_atomic(stamp, {"fingerprint": self.fingerprint, "v": PARTS_VERSION})
        self.dist.barrier()
        return self.my_chunks()

    def chunk_path(self, k: int) -> Path:
        return self.parts / f"chunk-{k:06d}.parquet"

    def my_chunks(self) -> list[int]:
        """Chunks of this rank that are not finished yet."""
        return [
            k
            for k in range(self.n_chunks)
            if k % self.dist.world_size == self.dist.rank and not self.chunk_path(k).is_file()
        ]

    def rows(self, k: int) -> slice:
        return slice(k * self.chunk_size, min(self.n_examples, (k + 1) * self.chunk_size))

    def n_rows(self, chunks: list[int]) -> int:
        """Examples in ``chunks`` (the progress total)."""
        return sum(self.rows(k).stop - self.rows(k).start for k in chunks)

    def write_chunk(self, k: int, table: pa.Table, meta: dict[str, Any]) -> None:
        """Publish chunk ``k`` atomically with its own metadata."""
        write_parquet_atomic(self.chunk_path(k), with_table_meta(table, meta))

    def merge(self) -> tuple[pa.Table | None, list[dict[str, Any]]]:
        """After a barrier, rank 0 concatenates the chunks (returns the table and per-chunk
        metadata); other ranks return (None, [])."""
        self.dist.barrier()
        if self.dist.rank != 0:
            return None, []
        tables, metas = [], []
        for k in range(self.n_chunks):
            p = self.chunk_path(k)
            if not p.is_file():
                raise KdmemIOError(f"missing chunk {p}; rerun the same command to finish it")
            t = pq.read_table(p)
            metas.append(table_meta(t))
            tables.append(t.replace_schema_metadata(None))
        table = pa.concat_tables(tables) if tables else None
        return table, metas

    def finish(self, table: pa.Table, meta: dict[str, Any]) -> None:
        """Publish the merged table with ``meta`` plus the fingerprint; drop the parts."""
        write_parquet_atomic(
            self.out, with_table_meta(table, dict(meta, fingerprint=self.fingerprint))
        )
        shutil.rmtree(self.parts, ignore_errors=True)
