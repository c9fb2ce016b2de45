"""Study examples: the fixed-length token sequences every model is trained and measured on.

A study set D is read from any of (see docs/formats.md):

* a kdmem shard directory (each document is one example; example_id = global document id),
* Parquet with ``example_id: int64`` and ``input_ids: list<int>`` columns (optional ``text``),
* a 2-D ``.npy`` array of token ids (example_id = row number).

:func:`load_examples` returns :class:`Examples`: ids plus a ``[N, L]`` int64 token matrix of
the first ``length`` tokens of each example. Examples shorter than ``length`` are dropped and
counted (or rejected with ``strict=True``), so downstream code sees one rectangular batch.
:func:`sample_study_set` draws D and a held-out set from a shard directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from kdmem.atomic import write_parquet_atomic
from kdmem.corpus.shards import ShardSet, open_shards
from kdmem.errors import (
    CorruptFileError,
    EmptyCorpusError,
    InvalidArgumentError,
    KdmemIOError,
    MalformedRecordError,
)
from kdmem.identity import check_same_tokenizer, is_known, tokenizer_hash
from kdmem.rundir import table_meta, with_table_meta

__all__ = [
    "Examples",
    "load_examples",
    "load_token_examples",
    "sample_study_set",
    "token_lists",
    "write_example_texts",
    "write_examples",
]


@dataclass(frozen=True)
class Examples:
    """``example_ids``: int64 ``[N]`` (strictly increasing); ``tokens``: int64 ``[N, L]``.

    ``tokenizer_hash`` is the 64-hex tokenizer hash of the source when known ("" if not);
    ``n_short`` counts source examples dropped for being shorter than ``L``.
    """

    example_ids: npt.NDArray[np.int64]
    tokens: npt.NDArray[np.int64]
    tokenizer_hash: str = ""
    n_short: int = 0
    source: str = ""
    meta: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.example_ids.shape[0])

    @property
    def length(self) -> int:
        """Tokens per example (``L``)."""
        return int(self.tokens.shape[1])

    def select(self, mask_or_index: npt.NDArray[np.bool_] | npt.NDArray[np.int64]) -> Examples:
        """A subset (boolean mask or integer positions), keeping ids and provenance."""
        return Examples(
            self.example_ids[mask_or_index],
            self.tokens[mask_or_index],
            self.tokenizer_hash,
            self.n_short,
            self.source,
            dict(self.meta),
        )


def _rectangular(
    ids: Sequence[int],
    seqs: Sequence[npt.NDArray[np.integer]],
    length: int | None,
    strict: bool,
    src: str,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], int]:
    if length is None:
        length = min((len(s) for s in seqs), default=0)
    keep = [i for i, s in enumerate(seqs) if len(s) >= length]
    n_short = len(seqs) - len(keep)
    if n_short and strict:
        first = next(i for i, s in enumerate(seqs) if len(s) < length)
        raise InvalidArgumentError(
            f"{src}: example {ids[first]} has {len(seqs[first])} tokens, fewer than the "
            f"{length} needed (prefix + suffix); drop --strict to skip short examples"
        )
    tokens = np.zeros((len(keep), length), dtype=np.int64)
    for row, i in enumerate(keep):
        tokens[row] = seqs[i][:length]
    return np.asarray([ids[i] for i in keep], dtype=np.int64), tokens, n_short


def load_examples(
    path: str | os.PathLike[str], length: int | None = None, *, strict: bool = False
) -> Examples:
    """Read a study set; keep the first ``length`` tokens of each example (default: the
    shortest example's length). See the module docstring for the accepted sources."""
    p = Path(path)
    src = str(p)
    if not p.exists():
        raise KdmemIOError(f"cannot read {p}: no such file or directory; check the --data path")
    if p.is_dir():
        ss = open_shards(p)
        ids = list(range(len(ss)))
        seqs = [ss[i] for i in ids]
        eid, tok, short = _rectangular(ids, seqs, length, strict, src)
        return Examples(eid, tok, ss.tokenizer_hash, short, src)
    if p.suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
            raise MalformedRecordError(
                f"{p}: expected a 2-D integer array of token ids, got shape {arr.shape} "
                f"dtype {arr.dtype}; save tokens as np.save(path, ids.astype(np.int64))"
            )
        seqs = list(arr)
        eid, tok, short = _rectangular(list(range(len(seqs))), seqs, length, strict, src)
        return Examples(eid, tok, "", short, src)
    if p.suffix == ".parquet":
        table = pq.read_table(p)
        missing = {"example_id", "input_ids"} - set(table.column_names)
        if missing:
            raise MalformedRecordError(
                f"{p}: missing column(s) {sorted(missing)} (found {table.column_names}); "
                "write example_id: int64 and input_ids: list<int>"
            )
        raw_ids = np.asarray(table.column("example_id").to_numpy(zero_copy_only=False))
        if not np.issubdtype(raw_ids.dtype, np.integer):
            raise MalformedRecordError(
                f"{p}: example_id has type {raw_ids.dtype}; write example_id as int64"
            )
        rows = token_lists(table.column("input_ids"), p)
        if len(np.unique(raw_ids)) != len(raw_ids):
            raise MalformedRecordError(f"{p}: example_id has duplicates; ids must be unique")
        order = np.argsort(raw_ids.astype(np.int64), kind="stable")
        tok_hash = str(table_meta(table).get("tokenizer_hash", ""))
        eid, tok, short = _rectangular(
            [int(raw_ids[i]) for i in order], [rows[i] for i in order], length, strict, src
        )
        return Examples(eid, tok, tok_hash, short, src)
    raise InvalidArgumentError(
        f"invalid data path = {src!r}: expected a kdmem shard directory, a .parquet with "
        "example_id/input_ids columns, or a 2-D .npy token array"
    )


def load_token_examples(
    path: str | os.PathLike[str], tokenizer: str | None = None, text_field: str = "text"
) -> tuple[npt.NDArray[np.int64], list[npt.NDArray[np.int64]], list[str] | None, str]:
    """Examples of any length: ``(example_ids, token arrays, texts or None, tokenizer hash)``.

    Accepts a kdmem shard directory, Parquet or JSONL with ``example_id`` (optional: row
    number) and ``input_ids`` and/or a text column (text alone needs ``tokenizer``), or a 2-D
    ``.npy``.

    The returned hash names the tokenizer the token ids are in, so that the caller can compare
    it with an index's: the one the input records (shards, Parquet metadata), else the hash of
    ``tokenizer`` (which tokenized the text, or which the caller decodes the ids with). Where
    the input records one and ``tokenizer`` is another, one-line ``TokenizerMismatchError``.
    """
    p = Path(path)
    if not p.exists():
        raise KdmemIOError(f"cannot read {p}: no such file or directory; check EXAMPLES")
    tok = _tokenizer(tokenizer) if tokenizer is not None else None
    given = tokenizer_hash(tok) if tok is not None else ""

    def vouched(recorded: str) -> str:
        check_same_tokenizer(
            recorded,
            f"EXAMPLES ({p})",
            given,
            f"--tokenizer ({tokenizer})",
            fix="pass the tokenizer the examples were tokenized with",
        )
        return recorded if is_known(recorded) else given

    if p.is_dir():
        ss = open_shards(p)
        ids = np.arange(len(ss), dtype=np.int64)
        return (
            ids,
            [np.asarray(ss[i], dtype=np.int64) for i in range(len(ss))],
            None,
            vouched(ss.tokenizer_hash),
        )
    if p.suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
            raise MalformedRecordError(
                f"{p}: expected a 2-D integer array of token ids, got shape {arr.shape} "
                f"dtype {arr.dtype}"
            )
        ids_ = np.arange(len(arr), dtype=np.int64)
        return ids_, [r.astype(np.int64) for r in arr], None, given
    rows: dict[str, list[Any]]
    tok_hash = ""
    if p.suffix == ".parquet":
        table = pq.read_table(p)
        rows = {
            c: (
                token_lists(table.column(c), p) if c == "input_ids" else table.column(c).to_pylist()
            )
            for c in table.column_names
        }
        tok_hash = str(table_meta(table).get("tokenizer_hash", ""))
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
        tok_hash = vouched(tok_hash)
    elif texts is not None:
        if tok is None:
            raise InvalidArgumentError(
                f"{p} has text but no input_ids; pass --tokenizer (the index's tokenizer.json)"
            )
        tok_hash = given  # the ids are the ones this tokenizer gives the text
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


def _tokenizer(tokenizer: str | os.PathLike[str]) -> Tokenizer:
    """A ``tokenizer.json`` (or a directory holding one), one-line error when unreadable."""
    p = Path(tokenizer)
    f = p / "tokenizer.json" if p.is_dir() else p
    if not f.is_file():
        raise KdmemIOError(f"cannot read {f}: no such file; pass a tokenizer.json or its directory")
    try:
        return Tokenizer.from_file(str(f))
    except Exception as e:  # tokenizers raises a bare Exception on bad JSON
        raise CorruptFileError(
            f"{f} is not a readable tokenizer.json ({e}); pass the tokenizer.json itself"
        ) from None


def token_lists(col: Any, path: Path) -> list[npt.NDArray[np.int64]]:
    """A Parquet ``list<integer>`` column as int64 arrays, without a Python int per token
    (a study set of 1M x 256 tokens stays a few numpy buffers). One-line
    ``MalformedRecordError`` for another type, a null row or a null token id."""
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)) or not (
        pa.types.is_integer(arr.type.value_type)
    ):
        raise MalformedRecordError(
            f"{path}: input_ids must be a list of integers per row, got {arr.type}; write token "
            "ids as list<int64>"
        )
    if arr.null_count:
        row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise MalformedRecordError(f"{path}: input_ids is null in row {row}; drop or fix that row")
    flat = arr.flatten()
    if flat.null_count:
        lengths = arr.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
        first = int(np.flatnonzero(flat.is_null().to_numpy(zero_copy_only=False))[0])
        row = int(np.searchsorted(np.cumsum(lengths), first, side="right"))
        raise MalformedRecordError(
            f"{path}: input_ids of row {row} holds a null token id; drop or fix that row"
        )
    lengths = arr.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
    values = flat.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return np.split(values, np.cumsum(lengths)[:-1]) if len(lengths) else []


def write_examples(examples: Examples, path: str | os.PathLike[str]) -> Path:
    """Write ``examples`` as Parquet (``example_id``, ``input_ids``), atomically."""
    out = Path(path)
    table = pa.table(
        {
            "example_id": pa.array(examples.example_ids, type=pa.int64()),
            "input_ids": pa.array(list(examples.tokens), type=pa.list_(pa.int64())),
        }
    )
    write_parquet_atomic(out, with_table_meta(table, {"tokenizer_hash": examples.tokenizer_hash}))
    return out


WindowKind = Literal["document", "stream"]


def sample_study_set(
    shards_dir: str | os.PathLike[str],
    n_examples: int,
    n_validation: int,
    seq_len: int,
    seed: int,
    *,
    windows: WindowKind = "document",
    allow_fewer: bool = False,
) -> tuple[Examples, Examples, int]:
    """The study set D and a disjoint held-out set of ``seq_len``-token windows.

    ``windows = "document"``: one window per document of at least ``seq_len`` tokens, its
    first ``seq_len`` tokens; example id = the global document id. Documents are visited in
    a ``seed``-ed permutation of *all* document ids (not of the eligible ones), so runs of
    other model families on the same corpus draw the same documents wherever both
    tokenizations are long enough, and each window starts at its document's first character.

    ``windows = "stream"``: the corpus's token stream (documents in order, each with its EOS)
    cut into consecutive ``seq_len``-token windows, so short documents (WikiText lines)
    count too; example id = window index. Windows depend on the tokenizer.

    The first ``min(n_validation, max(available // 10, 1))`` windows of the permutation are
    held out, the next ``n_examples`` form D. A corpus that cannot supply ``n_examples`` is
    a one-line error with the number it can, unless ``allow_fewer``. Both sets are sorted
    by example id. Returns ``(study, validation, available windows)``.
    """
    ss = open_shards(shards_dir)
    lengths = np.concatenate([np.diff(np.asarray(s.offsets)) for s in ss.shards])
    rng = np.random.default_rng(seed)
    if windows == "document":
        order = rng.permutation(len(lengths))
        order = order[lengths[order] >= seq_len]
        unit = "documents of at least"
    elif windows == "stream":
        order = rng.permutation(int(lengths.sum()) // seq_len)
        unit = "consecutive windows of"
    else:
        raise InvalidArgumentError(f"invalid windows = {windows!r}: use document or stream")
    available = len(order)
    if available == 0:
        raise EmptyCorpusError(
            f"the corpus has no {unit} data.seq_len = {seq_len} tokens; lower data.seq_len, "
            "use longer documents or data.windows = 'stream'"
        )
    n_val = min(n_validation, max(available // 10, 1))
    if available - n_val < n_examples and not allow_fewer:
        raise InvalidArgumentError(
            f"the corpus supplies {available:,} {unit} {seq_len} tokens: {available - n_val:,} "
            f"after {n_val:,} held out, fewer than data.n_examples = {n_examples:,}; lower "
            "data.n_examples, add data (data.max_documents), or set data.allow_fewer = true"
        )
    val_ids = np.sort(order[:n_val])
    ids = np.sort(order[n_val : n_val + n_examples])
    take = _document_windows if windows == "document" else _stream_windows
    return take(ss, ids, seq_len), take(ss, val_ids, seq_len), available


def _document_windows(ss: ShardSet, ids: npt.NDArray[np.int64], seq_len: int) -> Examples:
    """The first ``seq_len`` tokens of documents ``ids``."""
    tok = np.zeros((len(ids), seq_len), dtype=np.int64)
    for row, i in enumerate(ids):
        tok[row] = ss[int(i)][:seq_len]
    return Examples(ids.astype(np.int64), tok, ss.tokenizer_hash)


def _stream_windows(ss: ShardSet, ids: npt.NDArray[np.int64], seq_len: int) -> Examples:
    """Stream windows ``ids``: tokens ``[k * seq_len, (k + 1) * seq_len)`` of the shards'
    concatenated token streams (a window may span two shards)."""
    starts = np.cumsum([0] + [len(s.tokens) for s in ss.shards])
    tok = np.zeros((len(ids), seq_len), dtype=np.int64)
    for row, k in enumerate(ids):
        a, b = int(k) * seq_len, (int(k) + 1) * seq_len
        j = int(np.searchsorted(starts, a, side="right")) - 1
        filled = 0
        while filled < seq_len:
            src = np.asarray(ss.shards[j].tokens)
            lo = a + filled - int(starts[j])
            piece = src[lo : lo + (b - a - filled)]
            tok[row, filled : filled + len(piece)] = piece
            filled += len(piece)
            j += 1
    return Examples(ids.astype(np.int64), tok, ss.tokenizer_hash)


def write_example_texts(
    examples: Examples, tokenizer_json: str | os.PathLike[str], path: str | os.PathLike[str]
) -> None:
    """``example_id`` and the decoded ``text`` of every example (Parquet, atomically): what
    the report shows and what zlib entropy is computed from."""
    tok = Tokenizer.from_file(str(tokenizer_json))
    texts = tok.decode_batch(examples.tokens.tolist(), skip_special_tokens=False)
    write_parquet_atomic(
        path,
        pa.table({"example_id": pa.array(examples.example_ids, pa.int64()), "text": texts}),
    )
