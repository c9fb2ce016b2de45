"""Verbatim spans of generations in a corpus (``kdmem scan``).

For every generation (a model's output, or any token sequence) and every *maximal* span of at
least ``min_len`` tokens that occurs verbatim inside one document of the index: its position,
length, number of occurrences and (up to ``max_locations``) where it occurs.

Maximal spans come straight from matching statistics ``lm`` (``Index.longest_match``): the
span ``[i, i + lm[i])`` is right-maximal by definition, and left-maximal unless the span at
``i - 1`` already covers it, i.e. unless ``lm[i-1] == lm[i] + 1``. So the maximal spans are
the positions with ``lm[i] >= min_len`` and (``i == 0`` or ``lm[i-1] <= lm[i]``). Spans may
overlap (two different verbatim sources).

**Scale-out** (docs/scaleout.md) takes two rounds over the index's shards: per shard, the
matching statistics of every generation (:func:`scan_lm_partial`); then per shard, with the
merged statistics (elementwise max) fixing the spans, each span's count and first locations
in that shard (:func:`scan_hits_partial`); finally :func:`scan_merge` adds the counts and
concatenates the locations in shard order before truncating. The local path runs the same
three steps with one partial over all shards; :func:`run_scan` picks the mode the CLI asks for.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from kdmem.atomic import write_parquet_atomic
from kdmem.corpus.examples import load_token_examples
from kdmem.corpus.fanout import map_shards, read_parts, write_part
from kdmem.corpus.featurize import (
    check_partition,
    merge_longest_match,
    partial_meta,
)
from kdmem.corpus.index import Index, n_shard_files
from kdmem.corpus.partcache import PartCache, digest, runs, stored_task
from kdmem.errors import InvalidArgumentError
from kdmem.lock import locks_output
from kdmem.progress import Meter, Progress
from kdmem.rundir import with_table_meta

SPANS_FORMAT = "kdmem-spans"
LM_PARTIAL_FORMAT = "kdmem-scan-lm-partial"
HITS_PARTIAL_FORMAT = "kdmem-scan-hits-partial"


def maximal_spans(lm: npt.NDArray[np.int64], min_len: int) -> list[tuple[int, int]]:
    """``(start, length)`` of every maximal span of length >= ``min_len`` (see module doc)."""
    prev = np.concatenate([[-1], lm[:-1]]) if len(lm) else lm
    starts = np.flatnonzero((lm >= min_len) & (prev <= lm))
    return [(int(i), int(lm[i])) for i in starts]


def _open(
    generations: str | os.PathLike[str],
    index: str | os.PathLike[str],
    shards: Sequence[int] | None,
    tokenizer: str | None,
    text_field: str,
    threads: int | None,
) -> tuple[npt.NDArray[np.int64], list[npt.NDArray[np.int64]], Index]:
    ids, tokens, _texts, tok_hash = load_token_examples(generations, tokenizer, text_field)
    idx = Index(index, threads=threads, shards=shards)
    if tok_hash and set(tok_hash) != {"0"} and set(idx.tokenizer_hash) != {"0"}:
        idx.check_tokenizer(tok_hash)
    return ids, tokens, idx


def _meta(
    fmt: str, idx: Index, index: str | os.PathLike[str], shards: object, **kw: Any
) -> dict[str, Any]:
    n = n_shard_files(index) if shards is not None else idx.n_shards
    return {"format": fmt, "version": 1, "shards": idx.shard_ids, "n_shards": n, **kw}


def scan_lm_partial(
    generations: str | os.PathLike[str],
    index: str | os.PathLike[str],
    *,
    shards: Sequence[int] | None = None,
    tokenizer: str | None = None,
    text_field: str = "text",
    threads: int | None = None,
    chunk: int = 1024,
    progress: Progress | None = None,
) -> pa.Table:
    """Round 1: ``example_id``, ``longest_match`` (list<int32>) of every generation against
    the shards ``shards`` (default all). Stateless; ``kdmem scan --shard K --partial-out``."""
    ids, tokens, idx = _open(generations, index, shards, tokenizer, text_field, threads)
    lms: list[npt.NDArray[np.int64]] = []
    meter = Meter(progress, "scan", len(ids), "seq")
    for lo in range(0, len(ids), chunk):
        batch = tokens[lo : lo + chunk]
        lms += idx.longest_match_many(batch)
        meter.advance(len(batch))
    lengths = np.fromiter((len(t) for t in tokens), np.int64, count=len(tokens))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = np.concatenate(lms).astype(np.int32) if lms else np.zeros(0, np.int32)
    table = pa.table(
        {
            "example_id": pa.array(ids, pa.int64()),
            "longest_match": pa.ListArray.from_arrays(
                pa.array(offsets, pa.int32()), pa.array(values, pa.int32())
            ),
        }
    )
    return with_table_meta(
        table,
        _meta(LM_PARTIAL_FORMAT, idx, index, shards, index_tokenizer_hash=idx.tokenizer_hash),
    )


def merged_spans(
    lm_partials: Sequence[pa.Table], min_len: int
) -> tuple[npt.NDArray[np.int64], list[tuple[int, int, int]]]:
    """``(example_ids, spans)`` from round-1 tables covering every shard once: ``spans`` are
    ``(row, start, length)`` of the maximal spans of the merged matching statistics."""
    metas = [partial_meta(t, LM_PARTIAL_FORMAT) for t in lm_partials]
    order = check_partition(metas, ("index_tokenizer_hash",))
    ids, lm = merge_longest_match([lm_partials[i] for i in order])
    offsets = lm.offsets.to_numpy()
    values = lm.values.to_numpy(zero_copy_only=False).astype(np.int64)
    spans: list[tuple[int, int, int]] = []
    for j in range(len(ids)):
        row = values[offsets[j] : offsets[j + 1]]
        spans += [(j, st, n) for st, n in maximal_spans(row, min_len)]
    return ids, spans


def scan_hits_partial(
    generations: str | os.PathLike[str],
    index: str | os.PathLike[str],
    lm_partials: Sequence[pa.Table],
    *,
    shards: Sequence[int] | None = None,
    min_len: int = 50,
    max_locations: int = 16,
    tokenizer: str | None = None,
    text_field: str = "text",
    threads: int | None = None,
    chunk: int = 4096,
) -> pa.Table:
    """Round 2: one row per maximal span (fixed by the merged ``lm_partials``) with its
    ``count`` in the shards ``shards`` and its first ``max_locations`` locations there.
    Stateless; ``kdmem scan --shard K --lm LM_DIR --partial-out``."""
    _check_options(min_len, max_locations)
    ids, tokens, idx = _open(generations, index, shards, tokenizer, text_field, threads)
    span_ids, spans = merged_spans(lm_partials, min_len)
    if not np.array_equal(span_ids, ids):
        raise InvalidArgumentError(
            "the round-1 results were computed on other generations; pass the same GENERATIONS"
        )
    queries = [tokens[j][st : st + n] for j, st, n in spans]
    counts = np.zeros(len(queries), np.int64)
    cols: dict[str, list[list[int]]] = {"shard": [], "document": [], "offset": []}
    for lo in range(0, len(queries), chunk):
        batch = queries[lo : lo + chunk]
        counts[lo : lo + len(batch)] = idx.count_many(batch)
        locs = idx.locate_many(batch, max_locations) if max_locations else None
        for k in range(len(batch)):
            for c in cols:
                cols[c].append([] if locs is None else getattr(locs[k], c).tolist())
    table = pa.table(
        {
            "example_id": pa.array([int(ids[j]) for j, _, _ in spans], pa.int64()),
            "start": pa.array([st for _, st, _ in spans], pa.int32()),
            "length": pa.array([n for _, _, n in spans], pa.int32()),
            "count": pa.array(counts, pa.int64()),
            "shard": pa.array(cols["shard"], pa.list_(pa.int32())),
            "document": pa.array(cols["document"], pa.list_(pa.int64())),
            "offset": pa.array(cols["offset"], pa.list_(pa.int64())),
        }
    )
    return with_table_meta(
        table,
        _meta(
            HITS_PARTIAL_FORMAT,
            idx,
            index,
            shards,
            min_len=min_len,
            max_locations=max_locations,
            n_generations=len(ids),
        ),
    )


def scan_merge(
    hits_partials: Sequence[pa.Table], out: str | os.PathLike[str], *, index: str | os.PathLike[str]
) -> Path:
    """Write ``out`` from round-2 tables covering every shard once: counts add, locations
    are merged in shard order and truncated to ``max_locations``. A part truncated to its
    first ``max_locations`` still holds every location of the merged first ones (a part's
    order is corpus order restricted to its shards), so the result is a local run's."""
    metas = [partial_meta(t, HITS_PARTIAL_FORMAT) for t in hits_partials]
    order = check_partition(metas, ("min_len", "max_locations", "n_generations"))
    parts = [hits_partials[i] for i in order]
    first = parts[0]
    for p in parts[1:]:
        for c in ("example_id", "start", "length"):
            if not p.column(c).equals(first.column(c)):
                raise InvalidArgumentError(
                    "round-2 results hold different spans; rerun every shard with the same "
                    "round-1 results"
                )
    max_locations = int(metas[0]["max_locations"])
    counts = np.sum([p.column("count").to_numpy() for p in parts], axis=0)
    names = ("shard", "document", "offset")
    per = [[cast("list[list[int]]", p.column(c).to_pylist()) for c in names] for p in parts]
    rows: list[list[tuple[int, int, int]]] = []
    for r in range(first.num_rows):
        # Each part lists its own shards' locations in corpus order; a part's shards need
        # not be contiguous (a task of several groups, t, t + T, ...), so order the union by
        # shard (stable: a shard's locations all come from one part) before truncating.
        locs: list[tuple[int, int, int]] = []
        for shard, document, offset in per:
            locs += zip(shard[r], document[r], offset[r], strict=True)
        locs.sort(key=lambda x: x[0])
        rows.append(locs[:max_locations])
    loc_cols: dict[str, Any] = {
        c: pa.array([[x[i] for x in row] for row in rows], pa.list_(typ))
        for i, (c, typ) in enumerate(zip(names, (pa.int32(), pa.int64(), pa.int64()), strict=True))
    }
    cols: dict[str, Any] = {c: first.column(c) for c in ("example_id", "start", "length")}
    table = pa.table({**cols, "count": pa.array(counts, pa.int64()), **loc_cols})
    meta = {
        "format": SPANS_FORMAT,
        "version": 1,
        "index": str(index),
        "min_len": int(metas[0]["min_len"]),
        "max_locations": max_locations,
        "n_generations": int(metas[0]["n_generations"]),
    }
    out_p = Path(out)
    write_parquet_atomic(out_p, with_table_meta(table, meta))
    return out_p


def _check_options(min_len: int, max_locations: int) -> None:
    if min_len < 1:
        raise InvalidArgumentError(f"invalid min_len = {min_len}: spans need at least 1 token")
    if max_locations < 0:
        raise InvalidArgumentError(f"invalid max_locations = {max_locations}: use >= 0")


@locks_output("kdmem scan")
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
    progress: Progress | None = None,
    ray: bool = False,
    cache: bool = True,
) -> Path:
    """Write ``out`` (Parquet): one row per maximal span, sorted by (example_id, start).

    Columns: ``example_id``, ``start``, ``length``, ``count`` (occurrences in the index),
    ``shard``, ``document``, ``offset`` (lists of at most ``max_locations`` locations, corpus
    order). Generations are read like featurize's examples (shards, Parquet or JSONL with
    ``input_ids`` or text plus ``--tokenizer``, 2-D ``.npy``). ``ray``: both rounds run as one
    Ray task per shard (identical output). ``cache``: keep each shard's round-1 result (and
    round-2 result, reused while the spans are unchanged) in ``OUT.parts/``, so a rerun after
    an append queries only the new shards in round 1 (:mod:`kdmem.corpus.partcache`).
    """
    _check_options(min_len, max_locations)
    kw: dict[str, Any] = dict(tokenizer=tokenizer, text_field=text_field, threads=threads)
    hits_kw: dict[str, Any] = dict(min_len=min_len, max_locations=max_locations, **kw)
    if cache:
        ids, tokens, _texts, _hash = load_token_examples(generations, tokenizer, text_field)
        base = digest(LM_PARTIAL_FORMAT, ids, [digest(t.astype(np.int64)) for t in tokens])
        lm_store = PartCache.beside(out, index, "scan-lm", base)
        if lm_store is not None:
            hits_store = PartCache(
                lm_store.directory,
                "scan-hits",
                digest(HITS_PARTIAL_FORMAT, base, min_len, max_locations),
                lm_store.keys,
            )
            lm = _cached_parts(
                lm_store,
                scan_lm_partial,
                generations,
                index,
                (),
                ray,
                dict(chunk=chunk, **kw),
                progress,
            )
            hits = _cached_parts(
                hits_store,
                scan_hits_partial,
                generations,
                index,
                (lm,),
                ray,
                hits_kw,
                None,
                spans=merged_spans(lm, min_len),
            )
            return scan_merge(hits, out, index=index)
    if ray:
        lm = map_shards(scan_lm_partial, generations, index, chunk=chunk, **kw)
        hits = map_shards(scan_hits_partial, generations, index, lm, **hits_kw)
    else:
        lm = [scan_lm_partial(generations, index, chunk=chunk, progress=progress, **kw)]
        hits = [scan_hits_partial(generations, index, lm, **hits_kw)]
    return scan_merge(hits, out, index=index)


def _same_spans(table: pa.Table, spans: list[tuple[int, int, int]], ids: Any) -> bool:
    if table.num_rows != len(spans):
        return False
    want = [(int(ids[j]), st, n) for j, st, n in spans]
    got = zip(
        table.column("example_id").to_pylist(),
        table.column("start").to_pylist(),
        table.column("length").to_pylist(),
        strict=True,
    )
    return all(g == w for g, w in zip(got, want, strict=True))


def _cached_parts(
    store: PartCache,
    task: Any,
    generations: str | os.PathLike[str],
    index: str | os.PathLike[str],
    args: tuple[Any, ...],
    ray: bool,
    kw: dict[str, Any],
    progress: Progress | None,
    spans: tuple[Any, list[tuple[int, int, int]]] | None = None,
) -> list[pa.Table]:
    """Stored parts of unchanged shards, plus ``task`` run on the others (one Ray task per
    shard, or locally one call per contiguous run), each stored. With ``spans`` (round 2:
    ``merged_spans``' example ids and spans), a stored part counts only if it holds exactly
    these spans."""
    parts, missing = store.lookup()
    if spans is not None:
        ids, current = spans
        keep = [p for p in parts if _same_spans(p, current, ids)]
        for p in parts:
            if not any(p is q for q in keep):
                missing += partial_meta(p, HITS_PARTIAL_FORMAT)["shards"]
        parts, missing = keep, sorted(missing)
    if missing and ray:
        parts += map_shards(
            stored_task,
            generations,
            index,
            *args,
            shards=missing,
            task=task,
            cache=store.spec,
            **kw,
        )
    for run in runs(missing) if not ray else []:
        extra = {} if progress is None else {"progress": progress}
        part = task(generations, index, *args, shards=run, **kw, **extra)
        store.store(part, run)
        parts.append(part)
    return parts


def run_scan(
    generations: str | os.PathLike[str],
    index: str | os.PathLike[str],
    out: str | os.PathLike[str] | None,
    *,
    shards: Sequence[int] = (),
    lm_dir: str | os.PathLike[str] | None = None,
    partial_out: str | os.PathLike[str] | None = None,
    merge_dir: str | os.PathLike[str] | None = None,
    ray: bool = False,
    min_len: int = 50,
    max_locations: int = 16,
    tokenizer: str | None = None,
    text_field: str = "text",
    threads: int | None = None,
    progress: Progress | None = None,
    cache: bool = True,
) -> Path:
    """``kdmem scan`` in any of its modes; returns the file written.

    * Slurm round 1 (one array element): ``shards`` (one planned group's,
      :func:`kdmem.corpus.index.group_shards`, or any) + ``partial_out``;
    * Slurm round 2: ``shards`` + ``lm_dir`` (every shard's round 1) + ``partial_out``;
    * the merge: ``merge_dir`` (every shard's round 2) + ``out``;
    * locally (or ``ray``, one task per shard per round): ``out``.
    """
    common: dict[str, Any] = dict(tokenizer=tokenizer, text_field=text_field, threads=threads)
    if bool(shards) != bool(partial_out):
        raise InvalidArgumentError(
            "--shard (or --group) and --partial-out go together (one task of an array)"
        )
    if partial_out:
        if merge_dir or ray:
            raise InvalidArgumentError("--partial-out runs one task: drop --merge / --ray")
        if lm_dir is None:
            table = scan_lm_partial(generations, index, shards=shards, progress=progress, **common)
        else:
            table = scan_hits_partial(
                generations,
                index,
                read_parts(lm_dir),
                shards=shards,
                min_len=min_len,
                max_locations=max_locations,
                **common,
            )
        return write_part(table, partial_out, shards)
    if out is None:
        raise InvalidArgumentError(
            "missing --out (or --group K --partial-out DIR for one task of an array)"
        )
    if merge_dir:
        return scan_merge(read_parts(merge_dir), out, index=index)
    return scan(
        generations,
        index,
        out,
        min_len=min_len,
        max_locations=max_locations,
        progress=progress,
        ray=ray,
        cache=cache,
        **common,
    )
