"""Helpers for the shard tests: tiny tokenizers trained locally (no downloads), corpora."""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOS = "<|endoftext|>"

TRAIN_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "Knowledge distillation transfers memorized sequences from teacher to student.",
    "Ünïcödé tëxt, émojis 🦀🐍 and 中文字符 are part of the corpus too.",
    "def f(x):\n    return x * 2  # code lines",
] * 20


@functools.cache
def _tmp() -> Path:
    return Path(tempfile.mkdtemp(prefix="kdmem-shard-tests-"))


@functools.cache
def bpe_tokenizer() -> Path:
    """A byte-level BPE (vocab 400) with ``<|endoftext|>``, trained on a few lines."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TRAIN_TEXT, trainer=trainer)
    p = _tmp() / "bpe" / "tokenizer.json"
    p.parent.mkdir()
    tok.save(str(p))
    return p


@functools.cache
def wide_tokenizer() -> Path:
    """A word-level tokenizer whose word ``big`` has id 70000 (needs u32), no EOS token."""
    vocab = {"[UNK]": 0, "a": 1, "small": 2, "big": 70000}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    p = _tmp() / "wide" / "tokenizer.json"
    p.parent.mkdir()
    tok.save(str(p))
    return p


def write_jsonl(path: Path, texts: list[str], field: str = "text") -> Path:
    path.write_text("".join(json.dumps({field: t, "id": i}) + "\n" for i, t in enumerate(texts)))
    return path


def encode(texts: list[str], eos: bool = True, tokenizer: Path | None = None) -> list[list[int]]:
    """The oracle: Python tokenizers, no special tokens, then EOS."""
    tok = Tokenizer.from_file(str(tokenizer or bpe_tokenizer()))
    eid = tok.token_to_id(EOS)
    out = []
    for t in texts:
        ids = tok.encode(t, add_special_tokens=False).ids
        out.append([*ids, eid] if eos else ids)
    return out


def docs(path: Path) -> list[list[int]]:
    from kdmem.corpus import open_shards

    return [d.tolist() for d in open_shards(path, verify=True)]


def tree(path: Path) -> dict[str, bytes]:
    """File name -> bytes of a directory (flat)."""
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


CORPUS = [
    "hello world",
    "",
    "The quick brown fox jumps over the lazy dog.",
    "Ünïcödé 🦀 中文",
    "line with\ttab and trailing space ",
] + [f"document number {i} " * (i % 5 + 1) for i in range(40)]


def word_corpus(
    d: Path,
    *,
    n_docs: int,
    planted_len: int,
    planted_every: int,
    vocab_cycle: int,
    max_words: int,
    shard_tokens: int,
) -> Any:
    """A word-level corpus (one token per word ``w0..w11``, id 0 = ``<|endoftext|>``) with a
    planted word sequence appended to every ``planted_every``-th document, sharded into
    ``d/shards`` (no EOS); the tokenizer is ``d/tokenizer.json``. Deterministic (seed 0);
    returns the random generator, for tests that draw more from the same stream."""
    import numpy as np

    from kdmem.corpus import shard_corpus

    words = [f"w{i}" for i in range(12)]
    vocab = {EOS: 0, **{w: i + 1 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=EOS))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece()
    tok.save(str(d / "tokenizer.json"))
    rng = np.random.default_rng(0)
    planted = " ".join(rng.choice(words, planted_len))
    texts = []
    for i in range(n_docs):
        text = " ".join(rng.choice(words[: 3 + i % vocab_cycle], int(rng.integers(5, max_words))))
        texts.append(text + (" " + planted if i % planted_every == 0 else ""))
    (d / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    shard_corpus(
        [d / "c.jsonl"], d / "tokenizer.json", d / "shards", eos="none", shard_tokens=shard_tokens
    )
    return rng
