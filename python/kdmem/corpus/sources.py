"""Corpus sources read in Python and fed to the Rust shard writer in batches.

The natively read formats (``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``, ``.txt``) never come
here; these are the rest:

- ``.parquet`` files: the text column read with ``pyarrow.parquet.ParquetFile.iter_batches``;
- a local Hugging Face ``datasets`` directory written by ``save_to_disk`` (``load_from_disk``;
  for a ``DatasetDict`` the ``split`` is taken);
- a hub dataset ``hf:NAME`` or ``hf:NAME:CONFIG`` (``datasets.load_dataset(NAME, CONFIG,
  split=split, streaming=True)``, e.g. ``hf:Salesforce/wikitext:wikitext-103-raw-v1``); any
  other existing directory is passed to ``load_dataset`` the same way (a folder of json/csv/
  parquet files), which is how the tests exercise the hub path without a download.

A *record* is one row; rows are numbered across all sources in the order given, which is what
the resume bookkeeping counts, exactly as for the native readers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from kdmem import extras
from kdmem.errors import InvalidArgumentError, KdmemIOError, MissingFieldError

HF_PREFIX = "hf:"


@dataclass(frozen=True)
class Source:
    """One input read in Python: how to name it, identify it and iterate its texts."""

    kind: str
    """``parquet``, ``disk`` (save_to_disk directory) or ``hub`` (load_dataset, streamed)."""
    spec: str
    """The path or dataset name as given."""
    text_field: str
    split: str

    @property
    def name(self) -> str:
        return self.spec

    def identity(self) -> str:
        """A string that changes when the data changes (for the resume config hash)."""
        if self.kind == "hub" and self.spec.startswith(HF_PREFIX):
            return f"hub {self.spec} split={self.split}"
        p = Path(self.spec).resolve()
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
        h = hashlib.sha256()
        for f in files:
            st = f.stat()
            h.update(f"{f.relative_to(p) if f != p else f.name}\t{st.st_size}\n".encode())
        return f"{self.kind} {p} split={self.split} {h.hexdigest()}"

    def batches(self, batch_size: int) -> Iterator[list[Any]]:
        """Lists of text values (``None`` where a row has no value), in row order."""
        if self.kind == "parquet":
            yield from _parquet_batches(Path(self.spec), self.text_field, batch_size)
            return
        extras.require("datasets", why="hub and datasets-directory inputs")
        import datasets

        try:
            if self.kind == "disk":
                ds: Any = datasets.load_from_disk(self.spec)
            else:
                name, _, config = self.spec.removeprefix(HF_PREFIX).partition(":")
                ds = datasets.load_dataset(name, config or None, split=self.split, streaming=True)
        except (OSError, ValueError) as e:  # datasets' own errors derive from these
            raise KdmemIOError(
                f"cannot read {self.spec}: {str(e).splitlines()[0] if str(e) else type(e).__name__}; "
                "pass a datasets directory (save_to_disk), a folder of data files, or hf:NAME "
                "of a dataset available offline"
            ) from e
        if isinstance(ds, datasets.DatasetDict):
            ds = _pick_split(ds, self.split, self.spec)
        cols = getattr(ds, "column_names", None)
        if cols is not None and self.text_field not in cols:
            raise MissingFieldError(
                f"{self.spec}: no string field {self.text_field!r} in the records (found: "
                f"columns {list(cols)[:8]}); pass --text-field with the right name"
            )
        for batch in ds.iter(batch_size=batch_size):
            if self.text_field not in batch:
                raise MissingFieldError(
                    f"{self.spec}: no string field {self.text_field!r} in the records (found: "
                    f"columns {list(batch)[:8]}); pass --text-field with the right name"
                )
            yield list(batch[self.text_field])


def _pick_split(dd: Any, split: str, spec: str) -> Any:
    if split not in dd:
        raise InvalidArgumentError(
            f"invalid split = {split!r}: {spec} has splits {sorted(dd)}; pass --split with one of them"
        )
    return dd[split]


def _parquet_batches(path: Path, field: str, batch_size: int) -> Iterator[list[Any]]:
    try:
        pf = pq.ParquetFile(path)
    except OSError as e:
        raise KdmemIOError(
            f"cannot read {path}: {e}; check that the path exists and is a Parquet file"
        ) from e
    names = pf.schema_arrow.names
    if field not in names:
        raise MissingFieldError(
            f"{path}: no string field {field!r} in the records (found: columns {names[:8]}); "
            "pass --text-field with the right name"
        )
    for rb in pf.iter_batches(batch_size=batch_size, columns=[field]):
        yield rb.column(0).to_pylist()


def classify_source(spec: str, text_field: str, split: str) -> Source | None:
    """The :class:`Source` for ``spec``, or ``None`` if the Rust core reads it natively."""
    if spec.startswith(HF_PREFIX):
        return Source("hub", spec, text_field, split)
    p = Path(spec)
    low = p.name.lower()
    if p.is_dir():
        if (p / "state.json").exists() or (p / "dataset_dict.json").exists():
            return Source("disk", spec, text_field, split)
        return Source("hub", spec, text_field, split)
    if low.endswith(".parquet"):
        return Source("parquet", spec, text_field, split)
    return None


def describe(sources: list[Source]) -> str:
    """Identity of all sources (JSON), for the config hash."""
    return json.dumps([s.identity() for s in sources])


__all__ = ["HF_PREFIX", "Source", "classify_source", "describe"]
