"""Tokenizers of models: load (hub id, directory or tokenizer.json), train locally, and find
a model's own tokenizer when it ships one. Their identity: :mod:`kdmem.identity`."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from kdmem.errors import KdmemIOError
from kdmem.identity import tokenizer_hash
from kdmem.models.load import head_rows

__all__ = [
    "EOS_TOKEN",
    "ModelVocab",
    "load_tokenizer",
    "model_tokenizer",
    "model_tokenizer_hash",
    "model_vocab",
    "train_tokenizer",
]

EOS_TOKEN = "<|endoftext|>"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def load_tokenizer(id_or_dir: str | os.PathLike[str]) -> PreTrainedTokenizerBase:
    """Fast tokenizer of a hub id or local directory (a ``tokenizer.json`` file also works).

    Raises ``KdmemIOError`` naming the missing files when a local directory holds none."""
    p = Path(id_or_dir)
    if p.is_file() and p.suffix == ".json":
        return PreTrainedTokenizerFast(tokenizer_file=str(p), eos_token=EOS_TOKEN)
    if p.is_dir() and not any((p / f).exists() for f in _TOKENIZER_FILES):
        raise KdmemIOError(
            f"{p} holds no tokenizer ({' or '.join(_TOKENIZER_FILES)}); pass a tokenizer "
            "directory or tokenizer.json, or save the tokenizer next to the model"
        )
    try:
        tok: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(str(id_or_dir), use_fast=True)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise KdmemIOError(f"cannot load a tokenizer from {id_or_dir}: {first}") from None
    return tok


@dataclass(frozen=True)
class ModelVocab:
    """The token ids a model accepts: its tokenizer's, or, for a checkpoint that ships no
    tokenizer, its lm-head rows (then nothing tells padding rows from real tokens)."""

    tokenizer: PreTrainedTokenizerBase | None
    size: int
    hash: str  # tokenizer hash; "" without a tokenizer

    @property
    def what(self) -> str:
        """How the ids are bounded, for messages."""
        if self.tokenizer is not None:
            return f"the tokenizer's {self.size} ids"
        return f"the model's {self.size} lm-head rows (it ships no tokenizer)"


def model_vocab(id_or_dir: str | os.PathLike[str]) -> ModelVocab:
    """:class:`ModelVocab` of a model (hub id or directory), from files only (no weights)."""
    tok = model_tokenizer(id_or_dir)
    if tok is None:
        return ModelVocab(None, head_rows(id_or_dir), "")
    return ModelVocab(tok, len(tok), tokenizer_hash(tok))


def model_tokenizer(id_or_dir: str | os.PathLike[str]) -> PreTrainedTokenizerBase | None:
    """The model's tokenizer if it ships one (local dir or cached hub id), else None.

    Checkpoints often hold weights and a config only; callers then compare token ids with
    the lm-head size alone (and say so in their outputs)."""
    p = Path(id_or_dir)
    if p.is_dir() and not any((p / f).exists() for f in _TOKENIZER_FILES):
        return None
    try:
        return load_tokenizer(id_or_dir)
    except Exception:  # a hub id without a cached tokenizer: the same as none shipped
        return None


def model_tokenizer_hash(id_or_dir: str | os.PathLike[str]) -> str:
    """:func:`kdmem.identity.tokenizer_hash` of the model's tokenizer; "" when it has none."""
    tok = model_tokenizer(id_or_dir)
    return "" if tok is None else tokenizer_hash(tok)


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | os.PathLike[str]) -> Path:
    """Train a byte-level BPE tokenizer locally (no downloads) and save it HF-style.

    Writes ``tokenizer.json`` plus ``tokenizer_config.json`` into ``out_dir`` with
    ``<|endoftext|>`` as id 0 (EOS, BOS and PAD, as in GPT-NeoX); returns ``out_dir``.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, pad_token=EOS_TOKEN
    )
    fast.save_pretrained(str(out))
    return out
