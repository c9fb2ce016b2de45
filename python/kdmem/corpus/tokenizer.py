"""The tokenizer hash of ``docs/formats.md``: which vocabulary a shard's ids belong to.

``sha256("".join(f"{id}\\t{token}\\n" for token, id in sorted(vocab.items(), key=id)))`` with
``vocab = tokenizer.get_vocab(with_added_tokens=True)`` (transformers: ``tok.get_vocab()``);
ties in id, which real tokenizers do not have, are broken by the token string. The Rust shard
writer computes the same value (``kdmem_core::shard::tokenize::tokenizer_hash``).
"""

from __future__ import annotations

import hashlib
from os import PathLike
from pathlib import Path
from typing import Any

from kdmem.errors import TokenizerLoadError


def _vocab(tokenizer: Any) -> dict[str, int]:
    if isinstance(tokenizer, (str, PathLike)):
        from tokenizers import Tokenizer

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


__all__ = ["tokenizer_hash"]
