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
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kdmem.errors import InvalidArgumentError, KdmemIOError, MalformedRecordError

FEATURES_FORMAT = "kdmem-features"


def load_token_examples(
    path: str | os.PathLike[str], tokenizer: str | None = None, text_field: str = "text"
) -> tuple[npt.NDArray[np.int64], list[npt.NDArray[np.int64]], list[str] | None, str]:
    """Examples of any length: ``(example_ids, token arrays, texts or None, tokenizer hash)``.

    Accepts a kdmem shard directory, Parquet or JSONL with ``example_id`` (optional: row
    number) and ``input_ids`` and/or a text column (text alone needs ``tokenizer``), or a 2-D
    ``.npy``.
    """
    p = Path(path)
    if not p.exists():
        raise KdmemIOError(f"cannot read {p}: no such file or directory; check EXAMPLES")
    if p.is_dir():
        from kdmem.corpus import open_shards

        ss = open_shards(p)
        ids = np.arange(len(ss), dtype=np.int64)
        return (
            ids,
            [np.asarray(ss[i], dtype=np.int64) for i in range(len(ss))],
            None,
            ss.tokenizer_hash,
        )
    if p.suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
            raise MalformedRecordError(
                f"{p}: expected a 2-D integer array of token ids, got shape {arr.shape} "
                f"dtype {arr.dtype}"
            )
        return np.arange(len(arr), dtype=np.int64), [r.astype(np.int64) for r in arr], None, ""
    rows: dict[str, list[Any]]
    tok_hash = ""
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(p)
        rows = {c: table.column(c).to_pylist() for c in table.column_names}
        meta = table.schema.metadata or {}
        tok_hash = json.loads(meta.get(b"kdmem", b"{}")).get("tokenizer_hash", "")
    elif p.name.endswith(".jsonl"):
        rows = {}
        with open(p, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as e:
                    raise MalformedRecordError(
                        f"{p}:{lineno}: malformed JSON ({e}); fix or remove that line"
                    ) from None
                if not isinstance(rec, dict):
                    raise MalformedRecordError(f"{p}:{lineno}: expected a JSON object per line")
                for k, v in rec.items():
                    rows.setdefault(k, []).append(v)
    else:
        raise InvalidArgumentError(
            f"invalid EXAMPLES = {str(p)!r}: expected a shard directory, .parquet, .jsonl or .npy"
        )
    n = max((len(v) for v in rows.values()), default=0)
    ids = np.asarray(rows.get("example_id", range(n)), dtype=np.int64)
    texts = rows.get(text_field)
    if "input_ids" in rows:
        tokens = [np.asarray(t, dtype=np.int64) for t in rows["input_ids"]]
    elif texts is not None:
        if tokenizer is None:
            raise InvalidArgumentError(
                f"{p} has text but no input_ids; pass --tokenizer (the index's tokenizer.json)"
            )
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tokenizer))
        tokens = [
            np.asarray(e.ids, dtype=np.int64)
            for e in tok.encode_batch(texts, add_special_tokens=False)
        ]
    else:
        raise MalformedRecordError(
            f"{p}: no input_ids and no {text_field!r} column (found {sorted(rows)}); "
            "write token ids as input_ids or text as --text-field"
        )
    if len(np.unique(ids)) != len(ids):
        raise MalformedRecordError(f"{p}: example_id has duplicates; ids must be unique")
    order = np.argsort(ids, kind="stable")
    return (
        ids[order],
        [tokens[i] for i in order],
        None if texts is None else [texts[i] for i in order],
        tok_hash,
    )


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
    progress: bool | None = None,
) -> Path:
    """Write ``out`` (Parquet, one row per example of at least ``prefix + suffix`` tokens).

    ``tokenizer`` (a tokenizer.json or HF directory) decodes token ids for the zlib features
    when the examples carry no text. Raises ``TokenizerMismatchError`` when the examples'
    tokenizer differs from the index's.
    """
    import pyarrow as pa
    from tqdm import tqdm

    from kdmem.analysis.rundir import write_parquet_atomic
    from kdmem.corpus.index import Index
    from kdmem.zlib import zlib_bytes

    if prefix < 0 or suffix < 1:
        raise InvalidArgumentError(f"invalid prefix/suffix = {prefix}/{suffix}: need >= 0 / >= 1")
    if any(n < 1 for n in ngram):
        raise InvalidArgumentError(f"invalid ngram = {list(ngram)}: n-grams need n >= 1")
    ids, tokens, texts, tok_hash = load_token_examples(examples, tokenizer, text_field)
    idx = Index(index, threads=threads)
    if tok_hash and set(tok_hash) != {"0"} and set(idx.tokenizer_hash) != {"0"}:
        idx.check_tokenizer(tok_hash)
    w = prefix + suffix
    keep = np.asarray([len(t) >= w for t in tokens], dtype=bool)
    n_short = int((~keep).sum())
    ids = ids[keep]
    tokens = [t for t, k in zip(tokens, keep, strict=True) if k]
    if texts is None:
        if tokenizer is None:
            raise InvalidArgumentError(
                "the examples are token ids without text; pass --tokenizer so kdmem can decode "
                "them for zlib_bytes (the tokenizer.json the shards were made with)"
            )
        from tokenizers import Tokenizer

        tok_path = Path(tokenizer)
        tok_file = tok_path / "tokenizer.json" if tok_path.is_dir() else tok_path
        tok = Tokenizer.from_file(str(tok_file))
        texts = tok.decode_batch([t.tolist() for t in tokens], skip_special_tokens=False)
    else:
        texts = [t for t, k in zip(texts, keep, strict=True) if k]

    n = len(ids)
    cols: dict[str, Any] = {
        "zlib_bytes": zlib_bytes(texts, threads),
        "suffix_count": np.zeros(n, np.int64),
        "window_count": np.zeros(n, np.int64),
        "longest_match_max": np.zeros(n, np.int32),
        "longest_match_mean": np.zeros(n, np.float64),
    }
    raw = np.fromiter((len(t.encode("utf-8")) for t in texts), dtype=np.float64, count=n)
    cols["zlib_ratio"] = np.divide(cols["zlib_bytes"], raw, out=np.zeros(n), where=raw > 0).astype(
        np.float64
    )
    for k in ngram:
        cols[f"ngram_overlap_{k}"] = np.zeros(n, np.float64)
    bar = tqdm(
        total=n, desc="featurize", unit="ex", disable=None if progress is None else not progress
    )
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        windows = np.stack([t[:w] for t in tokens[lo:hi]])
        sfx = windows[:, prefix:w]
        cols["suffix_count"][lo:hi] = idx.count_many(sfx)
        cols["window_count"][lo:hi] = idx.count_many(windows)
        for j, lm in enumerate(idx.longest_match_many(windows)):
            cols["longest_match_max"][lo + j] = int(lm.max())
            cols["longest_match_mean"][lo + j] = float(lm.mean())
            for k in ngram:
                total = w - k + 1
                cols[f"ngram_overlap_{k}"][lo + j] = (
                    float((lm[:total] >= k).sum()) / total if total > 0 else float("nan")
                )
        bar.update(hi - lo)
    bar.close()
    if exclude_self:
        cols["suffix_count"] = np.maximum(cols["suffix_count"] - 1, 0)
        cols["window_count"] = np.maximum(cols["window_count"] - 1, 0)
    order = ["zlib_bytes", "zlib_ratio", "suffix_count", "window_count", "longest_match_max"]
    order += ["longest_match_mean"] + [f"ngram_overlap_{k}" for k in ngram]
    table = pa.table({"example_id": pa.array(ids, pa.int64()), **{c: cols[c] for c in order}})
    meta = {
        "format": FEATURES_FORMAT,
        "version": 1,
        "index": str(index),
        "index_tokenizer_hash": idx.tokenizer_hash,
        "prefix": prefix,
        "suffix": suffix,
        "ngram": list(ngram),
        "exclude_self": exclude_self,
        "n_short": n_short,
    }
    table = table.replace_schema_metadata({"kdmem": json.dumps(meta)})
    out_p = Path(out)
    write_parquet_atomic(out_p, table)
    return out_p
