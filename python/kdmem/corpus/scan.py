"""Verbatim spans of generations in a corpus (``kdmem scan``).

For every generation (a model's output, or any token sequence) and every *maximal* span of at
least ``min_len`` tokens that occurs verbatim inside one document of the index: its position,
length, number of occurrences and (up to ``max_locations``) where it occurs.

Maximal spans come straight from matching statistics ``lm`` (``Index.longest_match``): the
span ``[i, i + lm[i])`` is right-maximal by definition, and left-maximal unless the span at
``i - 1`` already covers it, i.e. unless ``lm[i-1] == lm[i] + 1``. So the maximal spans are
the positions with ``lm[i] >= min_len`` and (``i == 0`` or ``lm[i-1] <= lm[i]``). Spans may
overlap (two different verbatim sources).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

from kdmem.errors import InvalidArgumentError

SPANS_FORMAT = "kdmem-spans"


def maximal_spans(lm: npt.NDArray[np.int64], min_len: int) -> list[tuple[int, int]]:
    """``(start, length)`` of every maximal span of length >= ``min_len`` (see module doc)."""
    prev = np.concatenate([[-1], lm[:-1]]) if len(lm) else lm
    starts = np.flatnonzero((lm >= min_len) & (prev <= lm))
    return [(int(i), int(lm[i])) for i in starts]


def scan(
    generations: str | os.PathLike[str],
    index: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    min_len: int = 50,
    max_locations: int = 16,
    tokenizer: str | None = None,
    text_field: str = "text",
    threads: int | None = None,
    chunk: int = 1024,
    progress: bool | None = None,
) -> Path:
    """Write ``out`` (Parquet): one row per maximal span, sorted by (example_id, start).

    Columns: ``example_id``, ``start``, ``length``, ``count`` (occurrences in the index),
    ``shard``, ``document``, ``offset`` (lists of at most ``max_locations`` locations, corpus
    order). Generations are read like featurize's examples (shards, Parquet or JSONL with
    ``input_ids`` or text plus ``--tokenizer``, 2-D ``.npy``).
    """
    import pyarrow as pa
    from tqdm import tqdm

    from kdmem.analysis.rundir import write_parquet_atomic
    from kdmem.corpus.featurize import load_token_examples
    from kdmem.corpus.index import Index

    if min_len < 1:
        raise InvalidArgumentError(f"invalid min_len = {min_len}: spans need at least 1 token")
    if max_locations < 0:
        raise InvalidArgumentError(f"invalid max_locations = {max_locations}: use >= 0")
    ids, tokens, _texts, tok_hash = load_token_examples(generations, tokenizer, text_field)
    idx = Index(index, threads=threads)
    if tok_hash and set(tok_hash) != {"0"} and set(idx.tokenizer_hash) != {"0"}:
        idx.check_tokenizer(tok_hash)
    rows: dict[str, list[object]] = {
        k: [] for k in ("example_id", "start", "length", "count", "shard", "document", "offset")
    }
    bar = tqdm(
        total=len(ids), desc="scan", unit="seq", disable=None if progress is None else not progress
    )
    for lo in range(0, len(ids), chunk):
        batch = tokens[lo : lo + chunk]
        spans: list[tuple[int, int, int]] = []
        for j, lm in enumerate(idx.longest_match_many(batch)):
            spans += [(j, s, n) for s, n in maximal_spans(lm, min_len)]
        queries = [batch[j][s : s + n] for j, s, n in spans]
        counts = idx.count_many(queries) if queries else np.zeros(0, np.int64)
        locs = idx.locate_many(queries, max_locations) if queries and max_locations else []
        for k, (j, s, n) in enumerate(spans):
            rows["example_id"].append(int(ids[lo + j]))
            rows["start"].append(s)
            rows["length"].append(n)
            rows["count"].append(int(counts[k]))
            loc = locs[k] if locs else None
            rows["shard"].append([] if loc is None else loc.shard.tolist())
            rows["document"].append([] if loc is None else loc.document.tolist())
            rows["offset"].append([] if loc is None else loc.offset.tolist())
        bar.update(len(batch))
    bar.close()
    table = pa.table(
        {
            "example_id": pa.array(rows["example_id"], pa.int64()),
            "start": pa.array(rows["start"], pa.int32()),
            "length": pa.array(rows["length"], pa.int32()),
            "count": pa.array(rows["count"], pa.int64()),
            "shard": pa.array(rows["shard"], pa.list_(pa.int32())),
            "document": pa.array(rows["document"], pa.list_(pa.int64())),
            "offset": pa.array(rows["offset"], pa.list_(pa.int64())),
        }
    )
    meta = {
        "format": SPANS_FORMAT,
        "version": 1,
        "index": str(index),
        "min_len": min_len,
        "max_locations": max_locations,
        "n_generations": len(ids),
    }
    table = table.replace_schema_metadata({"kdmem": json.dumps(meta)})
    out_p = Path(out)
    write_parquet_atomic(out_p, table)
    return out_p
