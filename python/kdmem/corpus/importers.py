"""Import already-tokenized corpora as kdmem shards (``kdmem import megatron|datatrove|npy``).

Tokens are copied as they are (no EOS is added: these formats carry their own); the shard
header records ``tokenizer_hash`` if you give it (64 hex digits, or a tokenizer to hash with
:func:`kdmem.corpus.tokenizer_hash`), else zeros = unknown. Formats:

- **Megatron** ``PREFIX.bin`` + ``PREFIX.idx`` (``MMIDIDX`` version 1, Megatron-LM
  ``indexed_dataset.py``): header ``b"MMIDIDX\\x00\\x00"``, u64 version, u8 dtype code, u64
  sequence count, u64 document count, then int32 sequence lengths, int64 byte pointers and
  int64 document indices (sequence index where each document starts, plus the end). A kdmem
  document is one Megatron document (its sequences concatenated).
- **datatrove** ``NAME.ds`` (raw little-endian u16 or u32 tokens) + ``NAME.ds.index`` (u64
  cumulative document ends), as written by ``datatrove.pipeline.tokens.DocumentTokenizer``.
  The token width is inferred from the sizes unless given.
- **npy**: a 1-D array with ``offsets`` (``n_docs + 1`` entries, or document ends), a 1-D
  array split after every ``split_on`` id, a 1-D array as one document, or a 2-D array
  ``(n_docs, length)``, one document per row (a study set).

Every importer streams in chunks of about ``chunk_tokens`` tokens through the Rust writer,
so memory stays bounded and the same resume rules as ``kdmem shard`` hold.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kdmem.corpus.shard import DEFAULT_SHARD_TOKENS, ShardResult, _result
from kdmem.errors import CorruptFileError, InvalidArgumentError, KdmemIOError, TokenRangeError
from kdmem.identity import tokenizer_hash as tokenizer_hash_of

_MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
_MEGATRON_DTYPES: dict[int, type[np.generic]] = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.float32,
    8: np.uint16,
}

Docs = Iterator[tuple[npt.NDArray[Any], npt.NDArray[np.int64]]]
"""Chunks of ``(tokens, offsets)``: flat tokens and ``len+1`` offsets starting at 0."""


def _resolve_hash(tokenizer_hash: str | None, tokenizer: Any) -> str | None:
    if tokenizer is not None:
        return tokenizer_hash_of(tokenizer)
    return tokenizer_hash


def _write(
    chunks: Docs,
    out: Path,
    *,
    config: str,
    dtype: str,
    vocab_size: int,
    tokenizer_hash: str | None,
    tokenizer: Any,
    eos_id: int | None,
    shard_tokens: int,
    overwrite: bool,
    what: str,
) -> ShardResult:
    from kdmem import _core

    w = _core.ShardWriter(
        out,
        config=config,
        dtype=dtype,
        shard_tokens=shard_tokens,
        overwrite=overwrite,
        vocab_size=vocab_size,
        tokenizer_hash=_resolve_hash(tokenizer_hash, tokenizer),
        eos_id=eos_id,
    )
    resumed = w.resumed_shards
    if not w.is_complete:
        skip = int(w.records_to_skip)
        for toks, offs in chunks:
            n = len(offs) - 1
            if skip >= n:
                skip -= n
                continue
            if skip:
                toks = toks[offs[skip] :]
                offs = offs[skip:] - offs[skip]
                skip = 0
            w.add_tokens(_as_u32(toks, what), np.ascontiguousarray(offs, dtype=np.uint64))
    return _result(out, w.finish(what), resumed)


def _as_u32(toks: npt.NDArray[Any], what: str) -> npt.NDArray[np.uint32]:
    if toks.dtype.kind == "f":
        raise InvalidArgumentError(
            f"invalid tokens = {what} ({toks.dtype}): token arrays must be integers; convert them first"
        )
    if toks.dtype == np.uint32:
        return np.ascontiguousarray(toks)
    if len(toks) and toks.dtype.kind == "i" and int(toks.min()) < 0:
        raise TokenRangeError(
            f"token id {int(toks.min())} is out of range for {what} (largest allowed {2**32 - 1}); "
            "token ids must be non-negative"
        )
    if len(toks) and toks.dtype.itemsize > 4 and int(toks.max()) > 2**32 - 1:
        raise TokenRangeError(
            f"token id {int(toks.max())} is out of range for {what} (largest allowed {2**32 - 1}); "
            "ids above u32 cannot be stored in a kdmem shard"
        )
    return toks.astype(np.uint32)


def _chunks(tokens: npt.NDArray[Any], ends: npt.NDArray[Any], chunk_tokens: int) -> Docs:
    """Split documents (``ends`` = cumulative end offsets) into chunks of ~chunk_tokens."""
    ends = np.asarray(ends, dtype=np.int64)
    n = len(ends)
    i = 0
    while i < n:
        start = 0 if i == 0 else int(ends[i - 1])
        j = int(np.searchsorted(ends, start + chunk_tokens, side="right"))
        j = max(j, i + 1)
        offs = np.concatenate(([0], ends[i:j] - start)).astype(np.int64)
        yield np.asarray(tokens[start : int(ends[j - 1])]), offs
        i = j


def _check_ends(ends: npt.NDArray[Any], n_tokens: int, path: Path) -> None:
    if len(ends) and (
        int(ends[-1]) != n_tokens or int(ends[0]) < 0 or bool(np.any(np.diff(ends) < 0))
    ):
        raise CorruptFileError(
            f"{path} is corrupt or truncated: document ends do not cover the {n_tokens} tokens "
            "in order; re-export it"
        )


def _common_config(kind: str, paths: Sequence[Path], extra: dict[str, Any]) -> str:
    ident = []
    for p in paths:
        st = p.stat()
        ident.append(f"{p.resolve()} {st.st_size}")
    return json.dumps({"import": kind, "files": ident, **extra}, sort_keys=True)


def _open_error(path: Path, e: OSError) -> KdmemIOError:
    return KdmemIOError(
        f"cannot read {path}: {e.strerror or e}; check that the path exists and that you may read it"
    )


def read_megatron(prefix: str | PathLike[str]) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
    """``(tokens memmap, document end offsets in tokens)`` of a Megatron ``.bin/.idx`` pair."""
    prefix = Path(str(prefix).removesuffix(".bin").removesuffix(".idx"))
    idx, binp = Path(f"{prefix}.idx"), Path(f"{prefix}.bin")
    try:
        raw = idx.read_bytes()
    except OSError as e:
        raise _open_error(idx, e) from e

    def bad(why: str) -> CorruptFileError:
        return CorruptFileError(
            f"{idx} is corrupt or truncated: {why}; re-export it with Megatron's preprocess_data.py"
        )

    if raw[:9] != _MEGATRON_MAGIC:
        raise bad("bad magic (not a Megatron MMIDIDX index)")
    version, code = struct.unpack_from("<QB", raw, 9)
    if version != 1:
        raise bad(f"index version {version} (expected 1)")
    if code not in _MEGATRON_DTYPES:
        raise bad(f"dtype code {code}")
    n_seq, n_doc = struct.unpack_from("<QQ", raw, 18)
    off = 34
    need = off + n_seq * 4 + n_seq * 8 + n_doc * 8
    if len(raw) < need:
        raise bad(f"{len(raw)} bytes, the header implies {need}")
    sizes = np.frombuffer(raw, dtype="<i4", count=n_seq, offset=off).astype(np.int64)
    off += n_seq * 4
    pointers = np.frombuffer(raw, dtype="<i8", count=n_seq, offset=off)
    off += n_seq * 8
    doc_idx = np.frombuffer(raw, dtype="<i8", count=n_doc, offset=off)
    dtype = np.dtype(_MEGATRON_DTYPES[code]).newbyteorder("<")
    try:
        size = binp.stat().st_size
    except OSError as e:
        raise _open_error(binp, e) from e
    n_tok = size // dtype.itemsize
    tokens = np.memmap(binp, dtype=dtype, mode="r", shape=(n_tok,)) if n_tok else np.zeros(0, dtype)
    # Sequences are contiguous in .bin when written by Megatron's builder; check it.
    seq_ends = np.cumsum(sizes)
    if n_seq and (
        not np.array_equal(pointers, np.concatenate(([0], seq_ends[:-1])) * dtype.itemsize)
        or int(seq_ends[-1]) != n_tok
    ):
        raise bad(f"sequence pointers are not contiguous over {binp}")
    # doc_idx lists the first sequence of each document and ends with n_seq.
    starts = doc_idx.astype(np.int64)
    if len(starts) == 0 or starts[0] != 0 or starts[-1] != n_seq or np.any(np.diff(starts) < 0):
        raise bad("document indices do not cover the sequences in order")
    seq_end_with0 = np.concatenate(([0], seq_ends))
    doc_ends = seq_end_with0[starts[1:]]
    return tokens, doc_ends


def import_megatron(
    prefix: str | PathLike[str],
    out: str | PathLike[str],
    *,
    dtype: str = "auto",
    vocab_size: int = 0,
    tokenizer_hash: str | None = None,
    tokenizer: Any = None,
    eos_id: int | None = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    overwrite: bool = False,
    chunk_tokens: int = 1 << 24,
) -> ShardResult:
    """Convert a Megatron ``PREFIX.bin/.idx`` dataset to kdmem shards (one doc per document)."""
    tokens, ends = read_megatron(prefix)
    p = Path(str(prefix).removesuffix(".bin").removesuffix(".idx"))
    dt = _auto_dtype(dtype, vocab_size, tokens)
    return _write(
        _chunks(tokens, ends, chunk_tokens),
        Path(out),
        config=_common_config("megatron", [Path(f"{p}.idx"), Path(f"{p}.bin")], {}),
        dtype=dt,
        vocab_size=vocab_size,
        tokenizer_hash=tokenizer_hash,
        tokenizer=tokenizer,
        eos_id=eos_id,
        shard_tokens=shard_tokens,
        overwrite=overwrite,
        what=str(p),
    )


def _auto_dtype(dtype: str, vocab_size: int, tokens: npt.NDArray[Any]) -> str:
    if dtype != "auto":
        return dtype
    if vocab_size:
        return "u16" if vocab_size <= 65536 else "u32"
    if tokens.dtype.itemsize <= 2 and tokens.dtype.kind in "ui":
        return "u16"
    return "u32"


def read_datatrove(
    path: str | PathLike[str], token_size: int | None = None
) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
    """``(tokens memmap, document end offsets)`` of a datatrove ``NAME.ds`` + ``NAME.ds.index``."""
    ds = Path(str(path).removesuffix(".index"))
    index = Path(f"{ds}.index")
    try:
        ends = np.fromfile(index, dtype="<u8").astype(np.int64)
        size = ds.stat().st_size
    except OSError as e:
        raise _open_error(index if not index.exists() else ds, e) from e
    n = int(ends[-1]) if len(ends) else 0
    if token_size is None:
        if n == 0 or size % n or size // n not in (2, 4):
            raise CorruptFileError(
                f"{ds} is corrupt or truncated: {size} bytes for {n} tokens in {index}; "
                "pass --token-size 2 or 4 if the files are intact"
            )
        token_size = size // n
    dt = np.dtype("<u2") if token_size == 2 else np.dtype("<u4")
    if size != n * token_size:
        raise CorruptFileError(
            f"{ds} is corrupt or truncated: {size} bytes, the index implies {n * token_size}; re-export it"
        )
    tokens = np.memmap(ds, dtype=dt, mode="r", shape=(n,)) if n else np.zeros(0, dt)
    _check_ends(ends, n, index)
    return tokens, ends


def import_datatrove(
    paths: Sequence[str | PathLike[str]],
    out: str | PathLike[str],
    *,
    token_size: int | None = None,
    dtype: str = "auto",
    vocab_size: int = 0,
    tokenizer_hash: str | None = None,
    tokenizer: Any = None,
    eos_id: int | None = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    overwrite: bool = False,
    chunk_tokens: int = 1 << 24,
) -> ShardResult:
    """Convert datatrove ``.ds`` files (each with its ``.ds.index``) to kdmem shards, in order."""
    files = [Path(str(p).removesuffix(".index")) for p in paths]
    opened = [read_datatrove(f, token_size) for f in files]
    dt = dtype
    if dt == "auto":
        dt = "u16" if all(t.dtype.itemsize == 2 for t, _ in opened) else "u32"
        if vocab_size:
            dt = "u16" if vocab_size <= 65536 else "u32"

    def chunks() -> Docs:
        for t, e in opened:
            yield from _chunks(t, e, chunk_tokens)

    return _write(
        chunks(),
        Path(out),
        config=_common_config("datatrove", files, {"token_size": token_size}),
        dtype=dt,
        vocab_size=vocab_size,
        tokenizer_hash=tokenizer_hash,
        tokenizer=tokenizer,
        eos_id=eos_id,
        shard_tokens=shard_tokens,
        overwrite=overwrite,
        what=", ".join(str(f) for f in files[:3]),
    )


def import_npy(
    paths: Sequence[str | PathLike[str]],
    out: str | PathLike[str],
    *,
    offsets: str | PathLike[str] | None = None,
    split_on: int | None = None,
    dtype: str = "auto",
    vocab_size: int = 0,
    tokenizer_hash: str | None = None,
    tokenizer: Any = None,
    eos_id: int | None = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    overwrite: bool = False,
    chunk_tokens: int = 1 << 24,
) -> ShardResult:
    """Convert ``.npy`` token arrays to kdmem shards (see the module docs for the layouts).

    ``offsets`` (one ``.npy`` file, only with a single input) gives document boundaries:
    ``n_docs + 1`` offsets starting at 0, or ``n_docs`` cumulative ends. ``split_on`` ends a
    document after every occurrence of that id (the id stays in the document, like an EOS).
    """
    files = [Path(p) for p in paths]
    if offsets is not None and len(files) != 1:
        raise InvalidArgumentError(
            f"invalid offsets = {offsets}: --offsets goes with exactly one .npy input, got {len(files)}"
        )
    arrays = []
    for f in files:
        try:
            arrays.append(np.load(f, mmap_mode="r", allow_pickle=False))
        except (OSError, ValueError) as e:
            raise KdmemIOError(
                f"cannot read {f}: {e}; pass a .npy file of integer token ids"
            ) from e

    def doc_ends(a: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
        if offsets is not None:
            o: npt.NDArray[np.int64] = np.load(offsets, allow_pickle=False).astype(np.int64)
            ends: npt.NDArray[np.int64] = (
                o[1:] if len(o) and o[0] == 0 and (len(o) > 1 or len(a) == 0) else o
            )
            _check_ends(ends, len(a), Path(offsets))
            return ends
        if split_on is not None:
            ends = np.flatnonzero(np.asarray(a) == split_on) + 1
            if not len(ends) or ends[-1] != len(a):
                ends = np.append(ends, len(a))
            return ends
        return np.array([len(a)], dtype=np.int64)

    def chunks() -> Docs:
        for a in arrays:
            if a.ndim == 2:
                n, length = a.shape
                yield from _chunks(
                    a.reshape(-1), (np.arange(n, dtype=np.int64) + 1) * length, chunk_tokens
                )
            elif a.ndim == 1:
                yield from _chunks(a, doc_ends(a), chunk_tokens)
            else:
                raise InvalidArgumentError(
                    f"invalid tokens = array of shape {a.shape}: pass a 1-D or 2-D token array"
                )

    dt = dtype
    if dt == "auto":
        dt = _auto_dtype("auto", vocab_size, arrays[0] if arrays else np.zeros(0, np.uint32))
        if dt == "u16" and any(a.dtype.itemsize > 2 or a.dtype.kind not in "ui" for a in arrays):
            dt = "u32"
    return _write(
        chunks(),
        Path(out),
        config=_common_config(
            "npy",
            files + ([Path(offsets)] if offsets is not None else []),
            {"split_on": split_on},
        ),
        dtype=dt,
        vocab_size=vocab_size,
        tokenizer_hash=tokenizer_hash,
        tokenizer=tokenizer,
        eos_id=eos_id,
        shard_tokens=shard_tokens,
        overwrite=overwrite,
        what=", ".join(str(f) for f in files[:3]),
    )


__all__ = ["import_datatrove", "import_megatron", "import_npy", "read_datatrove", "read_megatron"]
