# ruff: noqa: RUF001 (multilingual and confusable characters on purpose)
"""kdmem's byte-level BPE encoder gives the ids of Python ``tokenizers`` (the oracle), per
tokenizer family, on random and real text; other tokenizers keep the library, and the
manifest says which encoder ran."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bpe_families import ADDED, FAMILIES, family_tokenizer, real_text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shard_helpers import docs, wide_tokenizer, write_jsonl
from tokenizers import Tokenizer

from kdmem.corpus import shard_corpus

PIECES = [
    "the", " the", "The", " quick", "fox", "'s", "'S", "'re", "'LL", "'ſ", "n't", " ", "  ",
    "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "0", "123", "4567", "٣", "½", ".", ",", "!",
    "...", "(", ")", "::", "é", "e\u0301", "ñ", "ß", "日本", "😀", "\u00a0", "\u3000",
    "\u200b", "Ω", "Å", "\u212b", "\u2126", "ﬁ", "    ", "<|endof", "text|>",
]  # fmt: skip
SPECIALS = sorted({c for added in ADDED.values() for c, _, _ in added})

# Random text: pieces that exercise every rule (contractions in both cases, digit runs,
# whitespace runs before words and at the end, NFC compositions, added tokens of every
# family), arbitrary characters (no lone surrogates: JSON cannot carry them), ASCII words.
texts = st.lists(
    st.one_of(
        st.sampled_from(PIECES),
        st.sampled_from(SPECIALS),
        st.characters(blacklist_categories=("Cs",)),
        st.from_regex(r"[A-Za-z]{1,10}", fullmatch=True),
    ),
    max_size=40,
).map("".join)


def shard_ids(tmp: Path, family_tok: Path, batch: list[str], **kw: object) -> list[list[int]]:
    out = tmp / "out"
    res = shard_corpus(
        [write_jsonl(tmp / "c.jsonl", batch)],
        family_tok,
        out,
        eos="none",
        shard_tokens=100_000,
        overwrite=True,
        **kw,  # type: ignore[arg-type]
    )
    assert res.n_docs == len(batch)
    if kw.get("encoder") != "tokenizers" and family_tok.parent.name.startswith("kdmem-"):
        assert res.encoder == "kdmem-bpe"  # the fast path ran, not the library
    return docs(out)


def oracle(family_tok: Path, batch: list[str]) -> list[list[int]]:
    tok = Tokenizer.from_file(str(family_tok))
    return [e.ids for e in tok.encode_batch(batch, add_special_tokens=False)]


@pytest.mark.parametrize("family", FAMILIES)
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.lists(texts, min_size=1, max_size=40))
def test_random_text_encodes_like_tokenizers(tmp_path: Path, family: str, batch: list[str]) -> None:
    tok = family_tokenizer(family)
    assert shard_ids(tmp_path, tok, batch) == oracle(tok, batch)


@pytest.mark.parametrize("family", FAMILIES)
def test_real_text_encodes_like_tokenizers(tmp_path: Path, family: str) -> None:
    tok = family_tokenizer(family)
    batch = real_text()[2000:2600]
    got = shard_ids(tmp_path, tok, batch, threads=2)
    assert got == oracle(tok, batch)
    # The fast path really ran (the manifest records it), and it is not trivially short.
    m = json.loads((tmp_path / "out" / "shards.json").read_text())
    assert m["encoder"] == "kdmem-bpe"
    assert sum(map(len, got)) * 2 < sum(len(t.encode()) for t in batch)
    # Forcing the library gives the same bytes.
    again = shard_ids(tmp_path, tok, batch, encoder="tokenizers")
    assert again == got
    m = json.loads((tmp_path / "out" / "shards.json").read_text())
    assert m["encoder"] == "tokenizers"


def test_other_tokenizers_keep_the_library(tmp_path: Path) -> None:
    """A word-level tokenizer (and a byte-level BPE with an unknown split regex) are encoded
    by tokenizers, and the manifest says so."""
    from kdmem import _core

    res = shard_corpus(
        [write_jsonl(tmp_path / "c.jsonl", ["a small big", "big"])],
        wide_tokenizer(),
        tmp_path / "o",
    )
    assert res.encoder == "tokenizers"
    spec = json.loads(family_tokenizer("llama3").read_text())
    spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\p{L}+|\p{N}+|\s+|."
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps(spec))
    *_, encoder, note = _core.tokenizer_info(odd)
    assert encoder == "tokenizers" and "regex" in note
    batch = ["It's 123 go!", "x  y\n"]
    assert shard_ids(tmp_path, odd, batch) == oracle(odd, batch)
    *_, encoder, note = _core.tokenizer_info(family_tokenizer("qwen3"))
    assert encoder == "kdmem-bpe", note
