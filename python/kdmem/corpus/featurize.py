"""Corpus features of study examples against a suffix-array index (``kdmem featurize``).

Per example (key ``example_id``; schema in docs/formats.md):

* ``zlib_bytes`` / ``zlib_ratio``: zlib entropy of the example's text (the decoded tokens, or
  the ``text`` column when given), the study's strongest single predictor;
* ``suffix_count``: occurrences in the index of the example's suffix ``tokens[P:P+S]``;
  ``window_count``: of its whole prefix+suffix window ``tokens[:P+S]`` (Carlini et al. 2022's
  duplicate counts);
* ``longest_match_max`` / ``longest_match_mean``: matching statistics of the window, i.e. for
  each position the longest verbatim span of the index starting there, then max and mean;
* ``ngram_overlap_<n>``: fraction of the window's n-grams that occur in the index.

**Self-occurrences.** When the examples were drawn from the indexed corpus (as in
``kdmem run``), each one occurs in the index at least once as itself. By default counts
include that occurrence (raw counts, what the index holds); ``exclude_self=True`` subtracts
one from both counts (the number of *other* copies, floored at 0). Longest-match and n-gram
features are then trivially full for such examples; they are meant for examples checked
against another corpus (a pretraining corpus, or generations against training data).

Examples shorter than ``P + S`` tokens are skipped and counted (``n_short`` in the metadata),
as ``kdmem measure`` does. The output does not depend on ``threads``.

**Scale-out.** The index work is split per shard: :func:`featurize_partial` answers for a
subset of the index's shards (counts and matching statistics of each window, a small Parquet
table), :func:`featurize_merge` adds the counts, takes the elementwise max of the matching
statistics (a match never crosses a document, hence never a shard) and derives the features.
The local path is one partial over all shards, so ``--ray`` and Slurm-array runs
(docs/scaleout.md) write the same table; :func:`run_featurize` picks the mode the CLI asks for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from tokenizers import Tokenizer

from kdmem.atomic import write_parquet_atomic
from kdmem.corpus.examples import load_token_examples
from kdmem.corpus.fanout import map_shards, read_parts, write_part
from kdmem.corpus.index import Index, n_shard_files
from kdmem.corpus.partcache import PartCache, digest, runs, stored_task
from kdmem.errors import InvalidArgumentError, MalformedRecordError
from kdmem.lock import locks_output
from kdmem.progress import Meter, Progress
from kdmem.rundir import table_meta, with_table_meta
from kdmem.zlib import zlib_bytes

FEATURES_FORMAT = "kdmem-features"
PARTIAL_FORMAT = "kdmem-featurize-partial"


class _Windows(NamedTuple):
    """The examples of at least ``w`` tokens, loaded once per featurize call."""

    ids: npt.NDArray[np.int64]
    tokens: list[npt.NDArray[np.int64]]
    texts: list[str] | None
    tok_hash: str
    n_short: int


def _windows(
    examples: str | os.PathLike[str],
    tokenizer: str | None,
    text_field: str,
    w: int,
) -> _Windows:
    """Examples of at least ``w`` tokens, with the number of shorter ones skipped."""
    ids, tokens, texts, tok_hash = load_token_examples(examples, tokenizer, text_field)
    keep = np.asarray([len(t) >= w for t in tokens], dtype=bool)
    ids = ids[keep]
    tokens = [t for t, k in zip(tokens, keep, strict=True) if k]
    if texts is not None:
        texts = [t for t, k in zip(texts, keep, strict=True) if k]
    return _Windows(ids, tokens, texts, tok_hash, int((~keep).sum()))


def _check_lengths(prefix: int, suffix: int) -> None:
    if prefix < 0 or suffix < 1:
        raise InvalidArgumentError(f"invalid prefix/suffix = {prefix}/{suffix}: need >= 0 / >= 1")


def featurize_partial(
    examples: str | os.PathLike[str],
    index: str | os.PathLike[str],
    *,
    shards: Sequence[int] | None = None,
    prefix: int = 50,
    suffix: int = 50,
    tokenizer: str | None = None,
    text_field: str = "text",
    threads: int | None = None,
    chunk: int = 4096,
    progress: Progress | None = None,
) -> pa.Table:
    """The index part of featurize for the shards ``shards`` (default: all of them).

    One row per example of at least ``prefix + suffix`` tokens, sorted by ``example_id``:
    ``suffix_count``, ``window_count`` (int64, occurrences in these shards) and
    ``longest_match`` (list<int32>, length P+S: matching statistics of the window against
    these shards). Metadata ``kdmem``: ``format`` (``kdmem-featurize-partial``), ``shards``,
    ``n_shards`` (of the directory), ``prefix``, ``suffix``, ``index_tokenizer_hash``.
    Stateless: one Ray task or one Slurm array element (``kdmem featurize --group K
    --partial-out DIR``: ``shards`` = :func:`kdmem.corpus.index.group_shards` of the planned
    group K, whole units of an index built by groups, so no unit is searched twice).
    """
    _check_lengths(prefix, suffix)
    win = _windows(examples, tokenizer, text_field, prefix + suffix)
    return _partial(win, index, shards, prefix, suffix, threads, chunk, progress)


def _partial(
    win: _Windows,
    index: str | os.PathLike[str],
    shards: Sequence[int] | None,
    prefix: int,
    suffix: int,
    threads: int | None,
    chunk: int,
    progress: Progress | None,
) -> pa.Table:
    """:func:`featurize_partial` on examples already loaded."""
    w = prefix + suffix
    ids, tokens, tok_hash = win.ids, win.tokens, win.tok_hash
    idx = Index(index, threads=threads, shards=shards)
    if tok_hash and set(tok_hash) != {"0"} and set(idx.tokenizer_hash) != {"0"}:
        idx.check_tokenizer(tok_hash)
    n = len(ids)
    suffix_count = np.zeros(n, np.int64)
    window_count = np.zeros(n, np.int64)
    lm = np.zeros((n, w), np.int32)
    meter = Meter(progress, "featurize", n, "examples")
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        windows = np.stack([t[:w] for t in tokens[lo:hi]])
        suffix_count[lo:hi] = idx.count_many(windows[:, prefix:w])
        window_count[lo:hi] = idx.count_many(windows)
        for j, m in enumerate(idx.longest_match_many(windows)):
            lm[lo + j] = m
        meter.advance(hi - lo)
    table = pa.table(
        {
            "example_id": pa.array(ids, pa.int64()),
            "suffix_count": suffix_count,
            "window_count": window_count,
            "longest_match": pa.FixedSizeListArray.from_arrays(
                pa.array(lm.reshape(-1), pa.int32()), w
            ).cast(pa.list_(pa.int32())),
        }
    )
    meta = {
        "format": PARTIAL_FORMAT,
        "version": 1,
        "shards": idx.shard_ids,
        "n_shards": n_shard_files(index) if shards is not None else idx.n_shards,
        "prefix": prefix,
        "suffix": suffix,
        "index_tokenizer_hash": idx.tokenizer_hash,
    }
    return with_table_meta(table, meta)


def partial_meta(table: pa.Table, fmt: str) -> dict[str, Any]:
    """The ``kdmem`` metadata of a partial table; error unless its format is ``fmt``."""
    meta = table_meta(table)
    if meta.get("format") != fmt:
        raise MalformedRecordError(
            f"not a {fmt} table (format {meta.get('format')!r}); pass the files the "
            "per-shard step wrote"
        )
    return meta


def check_partition(metas: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[int]:
    """Order of ``metas`` by first shard; errors unless their shards partition ``0..n-1`` and
    they agree on ``keys``."""
    if not metas:
        raise InvalidArgumentError("no partial results to merge; run the per-shard step first")
    for k in ("n_shards", *keys):
        vals = {json.dumps(m.get(k)) for m in metas}
        if len(vals) > 1:
            raise InvalidArgumentError(
                f"partial results disagree on {k} ({sorted(vals)}); rerun every shard with "
                "the same options"
            )
    n = int(metas[0]["n_shards"])
    seen = sorted(k for m in metas for k in m["shards"])
    if seen != list(range(n)):
        missing = sorted(set(range(n)) - set(seen))
        dup = sorted({k for k in seen if seen.count(k) > 1})
        raise InvalidArgumentError(
            f"partial results cover shards {seen} of 0..{n - 1} (missing {missing}, "
            f"duplicated {dup}); run the missing shards, remove the duplicates"
        )
    return sorted(range(len(metas)), key=lambda i: min(metas[i]["shards"]))


def merge_longest_match(tables: Sequence[pa.Table]) -> tuple[npt.NDArray[np.int64], Any]:
    """``(example_id, longest_match)`` merged over partial tables of one partition of the
    shards: the elementwise max (a verbatim match lies inside one document, so inside one
    shard). ``longest_match`` is a list<int32> ChunkedArray."""
    first = tables[0]
    ids = first.column("example_id").to_numpy()
    col = cast("pa.ListArray[Any]", first.column("longest_match").combine_chunks())
    values = col.values.to_numpy(zero_copy_only=False).copy()
    for t in tables[1:]:
        if not np.array_equal(t.column("example_id").to_numpy(), ids):
            raise InvalidArgumentError(
                "partial results hold different examples; rerun every shard on the same input"
            )
        other = cast("pa.ListArray[Any]", t.column("longest_match").combine_chunks())
        if not np.array_equal(other.offsets.to_numpy(), col.offsets.to_numpy()):
            raise InvalidArgumentError("partial results hold sequences of different lengths")
        np.maximum(values, other.values.to_numpy(zero_copy_only=False), out=values)
    merged = pa.ListArray.from_arrays(col.offsets, pa.array(values, pa.int32()))
    return ids, merged


def featurize_merge(
    examples: str | os.PathLike[str],
    partials: Sequence[pa.Table],
    out: str | os.PathLike[str],
    *,
    index: str | os.PathLike[str],
    ngram: Sequence[int] = (8,),
    exclude_self: bool = False,
    tokenizer: str | None = None,
    text_field: str = "text",
    threads: int | None = None,
) -> Path:
    """Write ``out`` from :func:`featurize_partial` tables covering every shard exactly once.

    Counts add over the partials and matching statistics take the elementwise max, so the
    result equals a single partial over all shards; zlib features are computed here.
    """
    if any(n < 1 for n in ngram):
        raise InvalidArgumentError(f"invalid ngram = {list(ngram)}: n-grams need n >= 1")
    metas = [partial_meta(t, PARTIAL_FORMAT) for t in partials]
    # Check the partials (metadata only) before reading EXAMPLES.
    check_partition(metas, ("prefix", "suffix", "index_tokenizer_hash"))
    w = int(metas[0]["prefix"]) + int(metas[0]["suffix"])
    win = _windows(examples, tokenizer, text_field, w)
    return _merge(win, partials, out, index, ngram, exclude_self, tokenizer, threads)


def _merge(
    win: _Windows,
    partials: Sequence[pa.Table],
    out: str | os.PathLike[str],
    index: str | os.PathLike[str],
    ngram: Sequence[int],
    exclude_self: bool,
    tokenizer: str | None,
    threads: int | None,
) -> Path:
    """:func:`featurize_merge` on examples already loaded (as windows of the partials' P+S)."""
    metas = [partial_meta(t, PARTIAL_FORMAT) for t in partials]
    order = check_partition(metas, ("prefix", "suffix", "index_tokenizer_hash"))
    partials = [partials[i] for i in order]
    prefix, suffix = int(metas[0]["prefix"]), int(metas[0]["suffix"])
    w = prefix + suffix
    ids, tokens, texts, n_short = win.ids, win.tokens, win.texts, win.n_short
    lm_ids, lm_list = merge_longest_match(partials)
    if not np.array_equal(lm_ids, ids):
        raise InvalidArgumentError(
            "the partial results were computed on other examples; pass the same EXAMPLES"
        )
    if texts is None:
        if tokenizer is None:
            raise InvalidArgumentError(
                "the examples are token ids without text; pass --tokenizer so kdmem can decode "
                "them for zlib_bytes (the tokenizer.json the shards were made with)"
            )
        tok_path = Path(tokenizer)
        tok_file = tok_path / "tokenizer.json" if tok_path.is_dir() else tok_path
        tok = Tokenizer.from_file(str(tok_file))
        texts = tok.decode_batch([t.tolist() for t in tokens], skip_special_tokens=False)

    n = len(ids)
    lm = lm_list.values.to_numpy(zero_copy_only=False).reshape(n, w).astype(np.int64)
    cols: dict[str, Any] = {
        "zlib_bytes": zlib_bytes(texts, threads),
        "suffix_count": sum(p.column("suffix_count").to_numpy() for p in partials),
        "window_count": sum(p.column("window_count").to_numpy() for p in partials),
        "longest_match_max": lm.max(axis=1).astype(np.int32) if w else np.zeros(n, np.int32),
        "longest_match_mean": lm.mean(axis=1) if w else np.zeros(n),
    }
    raw = np.fromiter((len(t.encode("utf-8")) for t in texts), dtype=np.float64, count=n)
    cols["zlib_ratio"] = np.divide(cols["zlib_bytes"], raw, out=np.zeros(n), where=raw > 0).astype(
        np.float64
    )
    for k in ngram:
        total = w - k + 1
        cols[f"ngram_overlap_{k}"] = (
            (lm[:, :total] >= k).sum(axis=1) / total if total > 0 else np.full(n, np.nan)
        ).astype(np.float64)
    if exclude_self:
        cols["suffix_count"] = np.maximum(cols["suffix_count"] - 1, 0)
        cols["window_count"] = np.maximum(cols["window_count"] - 1, 0)
    names = ["zlib_bytes", "zlib_ratio", "suffix_count", "window_count", "longest_match_max"]
    names += ["longest_match_mean"] + [f"ngram_overlap_{k}" for k in ngram]
    table = pa.table(
        {
            "example_id": pa.array(ids, pa.int64()),
            **{c: np.asarray(cols[c]) for c in names},
        }
    )
    meta = {
        "format": FEATURES_FORMAT,
        "version": 1,
        "index": str(index),
        "index_tokenizer_hash": metas[0]["index_tokenizer_hash"],
        "prefix": prefix,
        "suffix": suffix,
        "ngram": list(ngram),
        "exclude_self": exclude_self,
        "n_short": n_short,
    }
    out_p = Path(out)
    write_parquet_atomic(out_p, with_table_meta(table, meta))
    return out_p


@locks_output("kdmem featurize")
def featurize(
    examples: str | os.PathLike[str],
    index: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    prefix: int = 50,
    suffix: int = 50,
    ngram: Sequence[int] = (8,),
    exclude_self: bool = False,
    tokenizer: str | None = None,
    text_field: str = "text",
    threads: int | None = None,
    chunk: int = 4096,
    progress: Progress | None = None,
    ray: bool = False,
    cache: bool = True,
) -> Path:
    """Write ``out`` (Parquet, one row per example of at least ``prefix + suffix`` tokens).

    ``tokenizer`` (a tokenizer.json or HF directory) decodes token ids for the zlib features
    when the examples carry no text. Raises ``TokenizerMismatchError`` when the examples'
    tokenizer differs from the index's. ``ray``: one :func:`featurize_partial` Ray task per
    shard, then the same merge (identical output). ``cache``: keep each shard's partial
    result in ``OUT.parts/`` and reuse those of unchanged shards (after an append, only the
    new shards are queried; :mod:`kdmem.corpus.partcache`).
    """
    _check_lengths(prefix, suffix)
    if any(n < 1 for n in ngram):
        raise InvalidArgumentError(f"invalid ngram = {list(ngram)}: n-grams need n >= 1")
    kw: dict[str, Any] = dict(
        prefix=prefix, suffix=suffix, tokenizer=tokenizer, text_field=text_field, threads=threads
    )
    # EXAMPLES are read (and text tokenized) once here; Ray tasks read their own copy.
    win = _windows(examples, tokenizer, text_field, prefix + suffix)
    store = None
    if cache:
        w = prefix + suffix
        windows = np.stack([t[:w] for t in win.tokens]) if win.tokens else np.zeros((0, w))
        base = digest(PARTIAL_FORMAT, prefix, suffix, win.ids, windows.astype(np.int64))
        store = PartCache.beside(out, index, "featurize", base)
    if store is None:
        if ray:
            partials = map_shards(featurize_partial, examples, index, chunk=chunk, **kw)
        else:
            partials = [_partial(win, index, None, prefix, suffix, threads, chunk, progress)]
        return _merge(win, partials, out, index, ngram, exclude_self, tokenizer, threads)
    partials, missing = store.lookup()
    if win.tok_hash and set(win.tok_hash) != {"0"}:
        first = Index(index, shards=[0])  # the check _partial makes, for all-cached runs too
        if set(first.tokenizer_hash) != {"0"}:
            first.check_tokenizer(win.tok_hash)
    if missing and ray:
        partials += map_shards(
            stored_task,
            examples,
            index,
            shards=missing,
            task=featurize_partial,
            cache=store.spec,
            chunk=chunk,
            **kw,
        )
    for run in runs(missing) if not ray else []:
        part = _partial(win, index, run, prefix, suffix, threads, chunk, progress)
        store.store(part, run)
        partials.append(part)
    return _merge(win, partials, out, index, ngram, exclude_self, tokenizer, threads)


def run_featurize(
    examples: str | os.PathLike[str],
    index: str | os.PathLike[str],
    out: str | os.PathLike[str] | None,
    *,
    shards: Sequence[int] = (),
    partial_out: str | os.PathLike[str] | None = None,
    merge_dir: str | os.PathLike[str] | None = None,
    ray: bool = False,
    prefix: int = 50,
    suffix: int = 50,
    ngram: Sequence[int] = (8,),
    exclude_self: bool = False,
    tokenizer: str | None = None,
    text_field: str = "text",
    threads: int | None = None,
    progress: Progress | None = None,
    cache: bool = True,
) -> Path:
    """``kdmem featurize`` in any of its three modes; returns the file written.

    * one Slurm array element: ``shards`` (one planned group's, or any) + ``partial_out``
      -> the partial table of those shards;
    * the merge: ``merge_dir`` (every shard's partial) + ``out``;
    * locally (or ``ray``, one task per shard): ``out``.
    """
    if bool(shards) != bool(partial_out):
        raise InvalidArgumentError(
            "--shard (or --group) and --partial-out go together (one task of an array)"
        )
    if partial_out:
        if merge_dir or ray:
            raise InvalidArgumentError("--partial-out runs one task: drop --merge / --ray")
        table = featurize_partial(
            examples,
            index,
            shards=shards,
            prefix=prefix,
            suffix=suffix,
            tokenizer=tokenizer,
            text_field=text_field,
            threads=threads,
            progress=progress,
        )
        return write_part(table, partial_out, shards)
    if out is None:
        raise InvalidArgumentError(
            "missing --out (or --group K --partial-out DIR for one task of an array)"
        )
    if merge_dir:
        return featurize_merge(
            examples,
            read_parts(merge_dir),
            out,
            index=index,
            ngram=ngram,
            exclude_self=exclude_self,
            tokenizer=tokenizer,
            text_field=text_field,
            threads=threads,
        )
    return featurize(
        examples,
        index,
        out,
        prefix=prefix,
        suffix=suffix,
        ngram=ngram,
        exclude_self=exclude_self,
        tokenizer=tokenizer,
        text_field=text_field,
        threads=threads,
        progress=progress,
        ray=ray,
        cache=cache,
    )
