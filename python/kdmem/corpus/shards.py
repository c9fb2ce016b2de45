"""Read token shards (``docs/formats.md``, format version 1) with numpy memmaps alone.

This module never imports the Rust extension: a shard directory can be read on any machine
with numpy. :func:`open_shards` checks every shard's magic, version, sizes and header CRC (and,
with ``verify=True``, the CRC-32 of its data) against the manifest; documents come back as
1-D ``uint16`` / ``uint32`` memmap views (no copy).

Costs: opening is O(number of shards) plus one O(n_docs) pass over each offsets array;
``ss[i]`` is O(log n_shards); ``verify=True`` reads every byte once.
"""

from __future__ import annotations

import bisect
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kdmem.errors import (
    CorruptFileError,
    FormatVersionError,
    IncompleteShardSetError,
    KdmemIOError,
)

MAGIC = b"KDMEMTOK"
VERSION = 1
HEADER_LEN = 128
NO_EOS = 0xFFFFFFFF
MANIFEST = "shards.json"

_HEADER = struct.Struct("<8sIIQQQQIIII32s28sI")
assert _HEADER.size == HEADER_LEN


@dataclass(frozen=True)
class Shard:
    """One shard file: its arrays (memmaps) and where its documents sit in the global order."""

    path: Path
    tokens: np.memmap
    """1-D uint16 or uint32, all documents concatenated (EOS included)."""
    offsets: np.memmap
    """1-D uint64 of length ``n_docs + 1``; document i is ``tokens[offsets[i]:offsets[i+1]]``."""
    first_doc: int
    """Global id of this shard's first document."""
    checksum: int
    """CRC-32 of the token bytes followed by the offset bytes (header field)."""
    vocab_size: int
    eos_id: int | None
    tokenizer_hash: str
    """64 hex digits; all zeros = unknown."""

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    def __len__(self) -> int:
        return self.n_docs

    def __getitem__(self, i: int) -> npt.NDArray[np.unsignedinteger[Any]]:
        """Tokens of this shard's document ``i`` (a memmap view)."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.tokens[a:b]

    def verify(self) -> None:
        """Recompute the data CRC-32; raise :class:`CorruptFileError` on mismatch. O(bytes)."""
        crc = 0
        for arr in (self.tokens, self.offsets):
            flat = np.asarray(arr).view(np.uint8)
            step = 1 << 24
            for s in range(0, len(flat), step):
                crc = zlib.crc32(flat[s : s + step].data, crc)
        if crc != self.checksum:
            raise CorruptFileError(
                f"{self.path} is corrupt or truncated: data checksum {crc:#010x} does not match "
                f"the header's {self.checksum:#010x}; delete it and rerun the command that wrote it"
            )


def _corrupt(path: Path, reason: str) -> CorruptFileError:
    return CorruptFileError(
        f"{path} is corrupt or truncated: {reason}; delete it and rerun the command that wrote it"
    )


def read_shard(path: str | PathLike[str], first_doc: int = 0, verify: bool = False) -> Shard:
    """Open one ``.kdt`` file; checks magic, version, width, sizes, header CRC and offsets."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(HEADER_LEN)
    except OSError as e:
        raise KdmemIOError(
            f"cannot read {path}: {e.strerror or e}; check that the path exists and that you may read it"
        ) from e
    if len(head) < HEADER_LEN:
        raise _corrupt(path, f"{size} bytes, shorter than the {HEADER_LEN}-byte header")
    (
        magic,
        version,
        width,
        n_tokens,
        n_docs,
        tokens_offset,
        offsets_offset,
        checksum,
        vocab_size,
        eos_id,
        _reserved,
        tok_hash,
        _reserved2,
        header_crc,
    ) = _HEADER.unpack(head)
    if magic != MAGIC:
        raise _corrupt(path, "bad magic (not a kdmem token shard)")
    if zlib.crc32(head[:124]) != header_crc:
        raise _corrupt(path, "header checksum mismatch")
    if version != VERSION:
        raise FormatVersionError(
            f"{path} has format version {version}, this kdmem reads version {VERSION}; rebuild it "
            "with this kdmem or install the kdmem that wrote it"
        )
    if width not in (2, 4):
        raise _corrupt(path, f"token width {width} (expected 2 or 4)")
    expect_oo = -(-(HEADER_LEN + n_tokens * width) // 8) * 8
    if tokens_offset != HEADER_LEN or offsets_offset != expect_oo:
        raise _corrupt(path, f"array offsets do not match n_tokens {n_tokens}")
    if size != offsets_offset + (n_docs + 1) * 8:
        raise _corrupt(
            path, f"file is {size} bytes, the header implies {offsets_offset + (n_docs + 1) * 8}"
        )
    dtype = np.dtype("<u2") if width == 2 else np.dtype("<u4")
    tokens = np.memmap(path, dtype=dtype, mode="r", offset=HEADER_LEN, shape=(n_tokens,))
    offsets = np.memmap(
        path, dtype=np.dtype("<u8"), mode="r", offset=offsets_offset, shape=(n_docs + 1,)
    )
    if offsets[0] != 0 or offsets[-1] != n_tokens:
        raise _corrupt(
            path, f"document offsets run {offsets[0]}..{offsets[-1]}, expected 0..{n_tokens}"
        )
    if n_docs > 0 and bool(np.any(offsets[1:] < offsets[:-1])):
        raise _corrupt(path, "document offsets decrease")
    shard = Shard(
        path=path,
        tokens=tokens,
        offsets=offsets,
        first_doc=first_doc,
        checksum=checksum,
        vocab_size=vocab_size,
        eos_id=None if eos_id == NO_EOS else eos_id,
        tokenizer_hash=tok_hash.hex(),
    )
    if verify:
        shard.verify()
    return shard


class ShardSet:
    """All shards of a directory as one sequence of documents (global ids, in order).

    ``ss[i]`` is document ``i`` as a 1-D uint16/uint32 memmap view; iteration yields documents
    in id order. Attributes: ``shards``, ``dtype``, ``n_tokens``, ``tokenizer_hash`` (hex),
    ``eos_id`` (or None), ``vocab_size`` (0 = unknown), ``manifest`` (the parsed JSON).
    """

    def __init__(self, shards: list[Shard], manifest: dict[str, Any]) -> None:
        self.shards = shards
        self.manifest = manifest
        self._starts = [s.first_doc for s in shards]
        self._n_docs = sum(s.n_docs for s in shards)
        self.n_tokens = sum(s.n_tokens for s in shards)
        first = shards[0] if shards else None
        self.dtype = first.tokens.dtype if first else np.dtype("<u2")
        self.tokenizer_hash = first.tokenizer_hash if first else "0" * 64
        self.eos_id = first.eos_id if first else None
        self.vocab_size = first.vocab_size if first else 0

    def __len__(self) -> int:
        return self._n_docs

    def __getitem__(self, i: int) -> npt.NDArray[np.unsignedinteger[Any]]:
        i = int(i)
        if i < 0:
            i += self._n_docs
        if not 0 <= i < self._n_docs:
            raise IndexError(f"document {i} out of range for {self._n_docs} documents")
        k = bisect.bisect_right(self._starts, i) - 1
        s = self.shards[k]
        return s[i - s.first_doc]

    def __iter__(self) -> Iterator[npt.NDArray[np.unsignedinteger[Any]]]:
        for s in self.shards:
            offs = np.asarray(s.offsets)
            for i in range(s.n_docs):
                yield s.tokens[int(offs[i]) : int(offs[i + 1])]

    def __repr__(self) -> str:
        return (
            f"ShardSet({len(self)} docs, {self.n_tokens} tokens, {len(self.shards)} shards, "
            f"dtype={self.dtype.name}, tokenizer={self.tokenizer_hash[:12]})"
        )


def open_shards(path: str | PathLike[str], verify: bool = False) -> ShardSet:
    """Open a ``kdmem shard`` output directory (or a single ``.kdt`` file) with numpy only.

    Checks each shard's magic, version, sizes, header CRC and offsets, and that it matches
    its manifest entry (documents, tokens, checksum, shared metadata); ``verify=True`` also
    recomputes every data CRC. Raises :class:`CorruptFileError` (or
    :class:`FormatVersionError`) naming the file and the fix.
    """
    path = Path(path)
    if path.is_file():
        return ShardSet([read_shard(path, 0, verify)], {})
    mpath = path / MANIFEST
    try:
        text = mpath.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KdmemIOError(
            f"cannot read {mpath}: no such file; pass a directory written by `kdmem shard` "
            "(or a single .kdt file)"
        ) from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as e:
        raise _corrupt(mpath, f"invalid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "kdmem-shards":
        raise _corrupt(mpath, "not a kdmem shard manifest")
    if manifest.get("version") != VERSION:
        raise FormatVersionError(
            f"{mpath} has format version {manifest.get('version')}, this kdmem reads version "
            f"{VERSION}; rebuild it with this kdmem or install the kdmem that wrote it"
        )
    if not manifest.get("complete"):
        raise IncompleteShardSetError(
            f"{path} holds an unfinished `kdmem shard` run; rerun the same command to resume it"
        )
    shards = []
    for entry in manifest["shards"]:
        s = read_shard(path / entry["name"], int(entry["first_doc"]), verify)
        if (s.n_docs, s.n_tokens, s.checksum) != (
            entry["n_docs"],
            entry["n_tokens"],
            entry["checksum"],
        ):
            raise _corrupt(s.path, f"does not match its entry in {mpath}")
        if s.tokenizer_hash != manifest["tokenizer_hash"] or s.tokens.dtype.name != {
            "u16": "uint16",
            "u32": "uint32",
        }.get(manifest["dtype"]):
            raise _corrupt(s.path, f"its header disagrees with {mpath}")
        shards.append(s)
    return ShardSet(shards, manifest)


__all__ = ["MANIFEST", "Shard", "ShardSet", "open_shards", "read_shard"]
