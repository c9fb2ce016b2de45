"""Ask an index about a piece of text: how often it occurs and where, with the documents'
text around each match (``kdmem count`` / ``kdmem locate``).

Text is tokenized with the index's own tokenizer (``tokenizers.Tokenizer.encode(text,
add_special_tokens=False).ids``, the ids ``kdmem shard`` writes) and a tokenizer whose hash
differs from the index's is refused; token ids can be given instead. Which tokenizer.json is
the index's: the one passed, else ``DIR/tokenizer.json``, else the path recorded in
``DIR/shards.json`` under ``"tokenizer"`` (when the shard step records it).

Context is decoded with the same tokenizer and its control characters are escaped, so a
match prints on one line whatever the documents hold.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from kdmem.corpus.index import Index
from kdmem.corpus.shards import read_shard
from kdmem.errors import InvalidArgumentError, TokenizerLoadError
from kdmem.identity import tokenizer_hash

__all__ = ["Hit", "Lookup", "escape", "find_tokenizer", "lookup", "parse_ids"]


@dataclass(frozen=True)
class Hit:
    """One occurrence: where it is and the token ids around it (within its document)."""

    shard: int
    """Shard number (file name order)."""
    document: int
    """Global document id."""
    offset: int
    """Token offset of the match in the document."""
    before: list[int]
    """Up to ``context`` tokens before the match."""
    match: list[int]
    """The matched tokens (the query)."""
    after: list[int]
    """Up to ``context`` tokens after the match."""


@dataclass(frozen=True)
class Lookup:
    """What :func:`lookup` found."""

    ids: list[int]
    """The query as token ids."""
    count: int
    """Occurrences in the index (all of them, not only ``hits``)."""
    hits: list[Hit]
    """The first ``limit`` occurrences in corpus order, with context."""
    tokenizer: Any
    """The ``tokenizers.Tokenizer`` used (None when the query came as ids and none was found)."""

    def text(self, tokens: Sequence[int]) -> str:
        """``tokens`` decoded with the index's tokenizer (escaped, one line), or the ids."""
        if self.tokenizer is None:
            return " ".join(map(str, tokens))
        return escape(self.tokenizer.decode(list(tokens), skip_special_tokens=False))


def escape(text: str) -> str:
    """``text`` on one line: newlines, tabs and other control or separator characters
    (Unicode categories Cc, Cf, Zl, Zp) as ``\\n``, ``\\t``, ``\\x1b``, ``\\u2028``..."""
    named = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"}
    out = []
    for ch in text:
        if ch in named:
            out.append(named[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def parse_ids(text: str) -> list[int]:
    """``"1,2, 3"`` or ``"1 2 3"`` as token ids."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        ids = [int(p) for p in parts]
    except ValueError:
        raise InvalidArgumentError(
            f"invalid ids = {text!r}: pass comma-separated token ids, e.g. --ids 464,3290,318"
        ) from None
    if not ids:
        raise InvalidArgumentError("invalid ids = '': pass at least one token id")
    return ids


def find_tokenizer(
    index_dir: str | PathLike[str], tokenizer: str | PathLike[str] | None = None
) -> Path | None:
    """The index's tokenizer.json: ``tokenizer`` (a file or a directory holding one), else
    ``DIR/tokenizer.json``, else the path ``DIR/shards.json`` records under ``"tokenizer"``;
    None when there is none."""
    if tokenizer is not None:
        p = Path(tokenizer)
        return p / "tokenizer.json" if p.is_dir() else p
    d = Path(index_dir)
    if (d / "tokenizer.json").is_file():
        return d / "tokenizer.json"
    try:
        recorded = json.loads((d / "shards.json").read_text(encoding="utf-8")).get("tokenizer")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if isinstance(recorded, str) and recorded:
        p = Path(recorded)
        p = p if p.is_absolute() else d / p
        if p.is_file():
            return p
    return None


def _load(path: Path) -> Any:
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises bare Exception subclasses
        raise TokenizerLoadError(
            f"cannot load tokenizer {path}: {e}; pass the tokenizer.json of a Hugging Face fast "
            "tokenizer"
        ) from e


def _shards(index_dir: Path) -> list[Any]:
    """Every shard file of the directory with its global first document (name order)."""
    shards, first = [], 0
    for p in sorted(index_dir.glob("*.kdt")):
        s = read_shard(p, first)
        shards.append(s)
        first += len(s.offsets) - 1
    return shards


def lookup(
    index_dir: str | PathLike[str],
    text: str | None = None,
    *,
    ids: Sequence[int] | None = None,
    tokenizer: str | PathLike[str] | None = None,
    limit: int = 10,
    context: int = 20,
    threads: int | None = None,
) -> Lookup:
    """Count ``text`` (or the token ids ``ids``) in the index at ``index_dir`` and locate its
    first ``limit`` occurrences with ``context`` tokens on each side.

    Raises:
        TokenizerMismatchError: the tokenizer is not the one the index was built from.
        InvalidArgumentError: neither or both of text and ids; text but no tokenizer found;
            text that encodes to no tokens.
    """
    if (text is None) == (ids is None):
        raise InvalidArgumentError(
            "invalid query: pass the text to look up, or --ids with token ids (not both)"
        )
    if limit < 0 or context < 0:
        raise InvalidArgumentError(f"invalid limit/context = {limit}/{context}: pass counts >= 0")
    d = Path(index_dir)
    tok_path = find_tokenizer(d, tokenizer)
    idx = Index(d, threads=threads)
    tok = None
    if tok_path is not None:
        tok = _load(tok_path)
        # Refuses a tokenizer of another vocabulary (TokenizerMismatchError); an index of
        # unknown tokenizer (imported ids) takes any.
        idx.check_tokenizer(tokenizer_hash(tok))
    if text is not None:
        if tok is None:
            raise InvalidArgumentError(
                f"no tokenizer for {d}: pass --tokenizer with the tokenizer.json the shards "
                f"were made with (hash {idx.tokenizer_hash[:12]}), or token ids with --ids"
            )
        q = list(tok.encode(text, add_special_tokens=False).ids)
        if not q:
            raise InvalidArgumentError(f"invalid text = {text!r}: it encodes to no tokens")
    else:
        q = [int(t) for t in ids or ()]
    count = idx.count(q)
    loc = idx.locate(q, limit=limit)
    hits = []
    shards = _shards(d) if len(loc.shard) else []
    for k, doc, off in zip(
        loc.shard.tolist(), loc.document.tolist(), loc.offset.tolist(), strict=True
    ):
        s = shards[k]
        offs = np.asarray(s.offsets)
        a, b = int(offs[doc - s.first_doc]), int(offs[doc - s.first_doc + 1])
        toks = np.asarray(s.tokens[a:b]).tolist()
        end = off + len(q)
        hits.append(
            Hit(
                shard=k,
                document=doc,
                offset=off,
                before=toks[max(0, off - context) : off],
                match=toks[off:end],
                after=toks[end : end + context],
            )
        )
    return Lookup(ids=q, count=count, hits=hits, tokenizer=tok)
