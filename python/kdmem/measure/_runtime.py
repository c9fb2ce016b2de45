"""Plumbing shared by ``measure`` and ``generate``: devices, torch.distributed sharding by
example id, chunked resumable Parquet output, batch-size back-off, progress bars, model
loading with one-line errors and the tokenizer check.

Chunks: the examples (sorted by id) are cut into fixed blocks of ``chunk_size`` examples;
chunk ``k`` belongs to rank ``k % world_size``. Chunk contents therefore never depend on
the world size, each finished chunk is one atomic Parquet file in a hidden ``.parts``
directory next to the output, a rerun skips the chunks already there, and rank 0 merges
them (in id order) into the final file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from kdmem import _dist
from kdmem._dist import Dist
from kdmem.errors import (
    InvalidArgumentError,
    KdmemIOError,
    TokenizerMismatchError,
    TokenRangeError,
)

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    from transformers import PreTrainedModel

PARTS_VERSION = 1


# ---- devices and distributed ------------------------------------------------------------


def init_distributed(device: str | None) -> Dist:
    """Join the process group under torchrun / accelerate (:mod:`kdmem._dist`); a long
    measurement chunk must not trip the default 30-minute barrier timeout."""
    return _dist.init_distributed(device, timeout=timedelta(hours=24))


# ---- models -------------------------------------------------------------------------------


def load_causal_lm(
    id_or_dir: str, *, dtype: str, device: str, attn_implementation: str | None
) -> PreTrainedModel:
    """:func:`kdmem.models.load_model` with every failure turned into one kdmem line."""
    from kdmem.models import load_model

    p = Path(id_or_dir)
    looks_local = p.is_absolute() or id_or_dir.startswith(".") or id_or_dir.count("/") > 1
    if not p.exists() and looks_local:
        raise KdmemIOError(f"cannot load model {id_or_dir}: no such directory; check --model")
    if dtype not in ("float32", "bfloat16", "float16"):
        raise InvalidArgumentError(f"invalid dtype = {dtype!r}: use float32, bfloat16 or float16")
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    if not sys.stderr.isatty():  # "Loading weights" bars would fill logs and test output
        hf_logging.disable_progress_bar()
    try:
        model = load_model(
            id_or_dir, dtype=dtype, device=device, attn_implementation=attn_implementation
        )
    except (OSError, ValueError) as e:
        if isinstance(e, (KdmemIOError, InvalidArgumentError)):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise KdmemIOError(
            f"cannot load model {id_or_dir}: {first}; pass a local directory with "
            "config.json and *.safetensors, or a hub id already in the local cache"
        ) from None
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    return model


def weights_hash(id_or_dir: str, model: PreTrainedModel) -> str:
    """SHA-256 of the ``*.safetensors`` files (local dir or cached hub snapshot); of the
    in-memory state dict when the files cannot be found."""
    from kdmem.models import model_hash

    p = Path(id_or_dir)
    if p.is_dir():
        return model_hash(p)
    try:
        from huggingface_hub import snapshot_download

        snap = snapshot_download(
            id_or_dir, local_files_only=True, allow_patterns=["*.safetensors", "*.json"]
        )
        return model_hash(snap)
    except Exception:  # the hub cache layout is not ours; fall back to hashing tensors
        return "state:" + model_hash(model)


def lm_head_rows(model: PreTrainedModel) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


def check_token_range(tokens: npt.NDArray[np.int64], rows: int, what: str) -> None:
    if tokens.size and (int(tokens.max()) >= rows or int(tokens.min()) < 0):
        bad = int(tokens.max()) if int(tokens.max()) >= rows else int(tokens.min())
        raise TokenRangeError(
            f"token {bad} is out of range for {what} ({rows} lm-head rows); the data was "
            "tokenized for a different model: re-shard it with this model's tokenizer"
        )


# ---- tokenizer hash -------------------------------------------------------------------------


def tokenizer_hash_of(tok: Any) -> str:
    """The tokenizer hash of docs/formats.md (one implementation: kdmem.corpus)."""
    from kdmem.corpus import tokenizer_hash

    return str(tokenizer_hash(tok))


def model_tokenizer(id_or_dir: str) -> Any | None:
    """The model's tokenizer if it ships one (local dir or cached hub id), else None."""
    p = Path(id_or_dir)
    if p.is_dir() and not any(
        (p / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")
    ):
        return None
    try:
        from kdmem.models import load_tokenizer

        return load_tokenizer(id_or_dir)
    except Exception:  # a model without a tokenizer is fine: the check is then skipped
        return None


def check_tokenizer(data_hash: str, tok: Any | None, data: str, model: str) -> str:
    """Compare the data's tokenizer hash with the model's; returns the check's outcome."""
    if tok is None or not data_hash or set(data_hash) == {"0"}:
        return "skipped"
    mh = tokenizer_hash_of(tok)
    if mh != data_hash:
        raise TokenizerMismatchError(
            f"tokenizer mismatch: {data} was tokenized with tokenizer {data_hash[:12]} but "
            f"{model} uses {mh[:12]}; re-shard the data with the model's tokenizer"
        )
    return "ok"


# ---- batches, progress --------------------------------------------------------------------


def is_oom(e: BaseException) -> bool:
    import torch

    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


def auto_batch_size(device: str, per_example_bytes: int, cap: int = 1024) -> int:
    """Largest power of two whose estimated activations fit 70% of free CUDA memory; 32 on
    CPU (throughput flattens there and memory is rarely the limit)."""
    if not device.startswith("cuda"):
        return 32
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    n = max(1, int(0.7 * free) // max(1, per_example_bytes))
    bs = 1
    while bs * 2 <= min(n, cap):
        bs *= 2
    return bs


def run_batches(
    fn: Callable[[int, int], None], n: int, batch_size: int, bar: Any | None, tokens_per: int
) -> list[int]:
    """Call ``fn(start, stop)`` over ``[0, n)`` in batches; halve the batch on CUDA OOM and
    retry the same rows. Returns the batch sizes used (the last one first kept)."""
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
            import torch

            torch.cuda.empty_cache()
            bs = max(1, bs // 2)
            continue
        if bs not in used:
            used.append(bs)
        if bar is not None:
            bar.update(stop - i)
            el = max(1e-9, time.perf_counter() - bar.kdmem_t0)
            bar.set_postfix_str(f"{bar.n * tokens_per / el:,.0f} tok/s")
        i = stop
    return used


@contextmanager
def progress(total: int, desc: str, enabled: Any) -> Iterator[Any]:
    """tqdm bar in sequences/s with tokens/s as postfix; silent unless stderr is a TTY.
    ``enabled``: True, False, None (= TTY) or an open bar to reuse (left open)."""
    from tqdm.auto import tqdm

    if not isinstance(enabled, (bool, type(None))):
        yield enabled
        return
    show = sys.stderr.isatty() if enabled is None else enabled
    bar = tqdm(total=total, desc=desc, unit="seq", disable=not show, dynamic_ncols=True)
    bar.kdmem_t0 = time.perf_counter()
    try:
        yield bar
    finally:
        bar.close()


# ---- chunked, resumable Parquet output -----------------------------------------------------


def data_fingerprint(ids: npt.NDArray[np.int64], tokens: npt.NDArray[np.int64]) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(ids, dtype="<i8").tobytes())
    h.update(str(tokens.shape).encode())
    h.update(np.ascontiguousarray(tokens, dtype="<i8").tobytes())
    return h.hexdigest()


def write_table_atomic(table: pa.Table, out: Path) -> None:
    from kdmem._io import write_parquet_atomic

    write_parquet_atomic(out, table)


def read_meta(path: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    return dict(json.loads(meta.get(b"kdmem", b"{}")))


def made_from(path: Path, fingerprint: str) -> bool:
    """``path`` is a finished kdmem table whose metadata carries ``fingerprint``."""
    if not path.is_file():
        return False
    try:
        return read_meta(path).get("fingerprint") == fingerprint
    except Exception:
        return False


def with_meta(table: pa.Table, meta: dict[str, Any]) -> pa.Table:
    return table.replace_schema_metadata({"kdmem": json.dumps(meta, sort_keys=True)})


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
                tmp = stamp.with_name(f".run.json.tmp-{os.getpid()}")
                tmp.write_text(json.dumps({"fingerprint": self.fingerprint, "v": PARTS_VERSION}))
                os.replace(tmp, stamp)
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
        """Examples in ``chunks`` (the progress bar's total)."""
        return sum(self.rows(k).stop - self.rows(k).start for k in chunks)

    def merge(self, meta: dict[str, Any]) -> tuple[pa.Table | None, list[dict[str, Any]]]:
        """After a barrier, rank 0 concatenates the chunks (returns the table and per-chunk
        metadata); other ranks return (None, [])."""
        self.dist.barrier()
        if self.dist.rank != 0:
            return None, []
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables, metas = [], []
        for k in range(self.n_chunks):
            p = self.chunk_path(k)
            if not p.is_file():
                raise KdmemIOError(f"missing chunk {p}; rerun the same command to finish it")
            t = pq.read_table(p)
            metas.append(read_meta(p))
            tables.append(t.replace_schema_metadata(None))
        table = pa.concat_tables(tables) if tables else None
        return table, metas

    def finish(self, table: pa.Table, meta: dict[str, Any]) -> None:
        meta = dict(meta, fingerprint=self.fingerprint)
        write_table_atomic(with_meta(table, meta), self.out)
        shutil.rmtree(self.parts, ignore_errors=True)
