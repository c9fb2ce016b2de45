"""Which vocabulary token ids belong to: the tokenizer hash of ``docs/formats.md`` and the one
check every command runs before it combines tokenized things (data, shards, models).

``sha256("".join(f"{id}\\t{token}\\n" for token, id in sorted(vocab.items(), key=id)))`` with
``vocab = tokenizer.get_vocab(with_added_tokens=True)`` (transformers: ``tok.get_vocab()``);
ties in id, which real tokenizers do not have, are broken by the token string. The Rust shard
writer computes the same value (``kdmem_core::shard::tokenize::tokenizer_hash``).

Only the ``tokenizers`` package is needed here (no torch, no transformers), so corpus code
and model code share this module.
"""

from __future__ import annotations

import hashlib
from os import PathLike
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from kdmem.errors import TokenizerLoadError, TokenizerMismatchError

__all__ = ["UNKNOWN_HASH", "check_same_tokenizer", "is_known", "tokenizer_hash"]

UNKNOWN_HASH = "0" * 64
"""What a shard set or table records when the tokenizer is unknown (e.g. imported ids)."""


def _vocab(tokenizer: Any) -> dict[str, int]:
    if isinstance(tokenizer, (str, PathLike)):
        p = Path(tokenizer)
        if p.is_dir():
            p = p / "tokenizer.json"
        try:
            tokenizer = Tokenizer.from_file(str(p))
        except Exception as e:  # tokenizers raises bare Exception subclasses
            raise TokenizerLoadError(
                f"cannot load tokenizer {p}: {e}; pass the tokenizer.json of a Hugging Face fast tokenizer"
            ) from e
    try:
        vocab = tokenizer.get_vocab(with_added_tokens=True)
    except TypeError:  # transformers tokenizers: added tokens always included
        vocab = tokenizer.get_vocab()
    return dict(vocab)


def tokenizer_hash(tokenizer: Any) -> str:
    """64 hex digits identifying a tokenizer's vocabulary (added tokens included).

    Args:
        tokenizer: a ``tokenizers.Tokenizer``, a transformers tokenizer, or the path of a
            ``tokenizer.json`` (or of a directory holding one).
    """
    vocab = _vocab(tokenizer)
    items = sorted(((int(i), t) for t, i in vocab.items()))
    text = "".join(f"{i}\t{t}\n" for i, t in items)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_known(h: str | None) -> bool:
    """A recorded hash names a tokenizer (not empty, not :data:`UNKNOWN_HASH`)."""
    return bool(h) and set(h or "") != {"0"}


def check_same_tokenizer(
    a_hash: str | None,
    a_what: str,
    b_hash: str | None,
    b_what: str,
    *,
    fix: str = "re-shard the data with the model's tokenizer",
) -> str:
    """Refuse to combine two tokenized things whose tokenizers differ.

    Returns ``"ok"`` when both hashes are known and equal, ``"skipped"`` when either is
    unknown (nothing to compare); raises :class:`~kdmem.errors.TokenizerMismatchError`
    naming both sides, both hashes (first 12 digits) and ``fix`` otherwise.
    """
    if not (is_known(a_hash) and is_known(b_hash)):
        return "skipped"
    assert a_hash is not None and b_hash is not None
    if a_hash != b_hash:
        raise TokenizerMismatchError(
            f"tokenizer mismatch: {a_what} uses tokenizer {a_hash[:12]} but {b_what} uses "
            f"{b_hash[:12]}; {fix}"
        )
    return "ok"
