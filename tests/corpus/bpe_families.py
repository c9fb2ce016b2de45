# ruff: noqa: RUF001 (multilingual and confusable characters on purpose)
"""Byte-level BPE tokenizers in the style of each family kdmem's fast encoder covers, trained
locally (no downloads) with Python ``tokenizers`` and dressed in the family's configuration:

- ``gpt2``: ``ByteLevel`` pre-tokenizer (GPT-2's regex), no normalizer, ``<|endoftext|>``;
- ``neox`` (GPT-NeoX / Pythia): the same plus an NFC normalizer, ``<|padding|>`` and
  added (non-special, normalized) tokens for runs of spaces;
- ``llama3``: ``Split`` with the cl100k regex + ``ByteLevel(use_regex=False)``, no
  normalizer, ``ignore_merges``, Llama-3's special tokens;
- ``olmo2``: the cl100k split as well, without ``ignore_merges``;
- ``qwen3``: ``Split`` with Qwen's regex (single digits), NFC, chat special tokens and a
  non-special added token (``<think>``);
- ``roberta``: ``ByteLevel(add_prefix_space=True)``.
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

CL100K = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

FAMILIES = ("gpt2", "neox", "llama3", "olmo2", "qwen3", "roberta")

# (content, special, normalized)
ADDED: dict[str, list[tuple[str, bool, bool]]] = {
    "gpt2": [("<|endoftext|>", True, False)],
    "neox": [
        ("<|endoftext|>", True, False),
        ("<|padding|>", True, False),
        ("    ", False, True),
        ("  ", False, True),
    ],
    "llama3": [("<|begin_of_text|>", True, False), ("<|end_of_text|>", True, False)],
    "olmo2": [("<|endoftext|>", True, False), ("<|pad|>", True, False)],
    "qwen3": [
        ("<|endoftext|>", True, False),
        ("<|im_start|>", True, False),
        ("<|im_end|>", True, False),
        ("<think>", False, False),
    ],
    "roberta": [("<s>", True, False), ("</s>", True, False)],
}


@functools.cache
def real_text() -> list[str]:
    """The standard library's sources in 3,000-character documents (code, docstrings and
    comments: real text on every machine)."""
    from kdmem.stdlib_corpus import stdlib_documents

    return list(stdlib_documents(kind="source", chunk_chars=3000))


def _training_text() -> list[str]:
    docs = real_text()[:600]
    docs += [
        "Die Straße ist naß; café, naïve, résumé. Ça va? ¿Qué tal? 日本語のテキストです。",
        "Привет, мир! Γειά σου κόσμε. مرحبا بالعالم ١٢٣ ٤٥٦. 12345 67890 3.14159",
        "I'm sure you're right, he'll see; we've done it. DON'T SHOUT, IT'S LATE!",
    ] * 30
    return docs


@functools.cache
def family_tokenizer(family: str, vocab_size: int = 1200) -> Path:
    """``tokenizer.json`` of a locally trained BPE in ``family``'s style (see the module doc)."""
    tok = Tokenizer(models.BPE())
    if family in ("gpt2", "neox"):
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    elif family == "roberta":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    else:
        regex = QWEN if family == "qwen3" else CL100K
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    if family in ("neox", "qwen3"):
        tok.normalizer = normalizers.NFC()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_text(), trainer=trainer)
    tok.add_tokens(
        [
            AddedToken(c, special=special, normalized=normalized)
            for c, special, normalized in ADDED[family]
        ]
    )
    spec = json.loads(tok.to_str())
    spec["model"]["ignore_merges"] = family == "llama3"
    out = Path(tempfile.mkdtemp(prefix=f"kdmem-{family}-")) / "tokenizer.json"
    out.write_text(json.dumps(spec))
    return out
