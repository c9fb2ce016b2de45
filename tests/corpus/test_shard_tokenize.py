"""Ids equal Python tokenizers / transformers; EOS rules; tokenizer hash."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shard_helpers import CORPUS, EOS, bpe_tokenizer, docs, encode, write_jsonl

from kdmem import _core
from kdmem.corpus import shard_corpus
from kdmem.errors import InvalidArgumentError, TokenizerLoadError
from kdmem.identity import tokenizer_hash

settings_ = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@settings_
@given(st.lists(st.text(max_size=200), min_size=1, max_size=25))
def test_ids_equal_python_tokenizers(tmp_path: Path, texts: list[str]) -> None:
    import uuid

    d = tmp_path / uuid.uuid4().hex
    d.mkdir()
    src = write_jsonl(d / "c.jsonl", texts)
    shard_corpus([src], bpe_tokenizer(), d / "out", threads=2)
    assert docs(d / "out") == encode(texts)


def test_ids_equal_transformers_fast_tokenizer(tmp_path: Path) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_file=str(bpe_tokenizer()), eos_token=EOS)
    src = write_jsonl(tmp_path / "c.jsonl", CORPUS)
    res = shard_corpus([src], bpe_tokenizer(), tmp_path / "out")
    want = [[*hf.encode(t, add_special_tokens=False), hf.eos_token_id] for t in CORPUS]
    assert docs(tmp_path / "out") == want
    assert res.tokenizer_hash == tokenizer_hash(hf) == tokenizer_hash(bpe_tokenizer())


def test_tokenizer_hash_matches_rust_and_the_formula(tmp_path: Path) -> None:
    import hashlib

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(bpe_tokenizer()))
    vocab = tok.get_vocab(with_added_tokens=True)
    text = "".join(f"{i}\t{t}\n" for t, i in sorted(vocab.items(), key=lambda kv: kv[1]))
    want = hashlib.sha256(text.encode()).hexdigest()
    assert tokenizer_hash(tok) == want
    assert tokenizer_hash(bpe_tokenizer().parent) == want
    h, vocab_size, eos_id, _encoder, _note = _core.tokenizer_info(bpe_tokenizer())
    assert (h, vocab_size, eos_id) == (want, tok.get_vocab_size(True), tok.token_to_id(EOS))


@pytest.mark.parametrize(("eos", "with_eos"), [("auto", True), ("none", False), (EOS, True)])
def test_eos_choices(tmp_path: Path, eos: str, with_eos: bool) -> None:
    src = write_jsonl(tmp_path / "c.jsonl", CORPUS[:5])
    res = shard_corpus([src], bpe_tokenizer(), tmp_path / "o", eos=eos)
    assert docs(tmp_path / "o") == encode(CORPUS[:5], eos=with_eos)
    assert res.eos_id == (0 if with_eos else None)


def test_eos_as_a_numeric_id_when_not_a_token(tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    assert Tokenizer.from_file(str(bpe_tokenizer())).token_to_id("399") is None
    src = write_jsonl(tmp_path / "c.jsonl", ["a b"])
    res = shard_corpus([src], bpe_tokenizer(), tmp_path / "o", eos="399")
    assert res.eos_id == 399
    assert docs(tmp_path / "o") == [[*encode(["a b"], eos=False)[0], 399]]


def test_unknown_eos_and_bad_tokenizer_name_the_fix(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "c.jsonl", ["x"])
    with pytest.raises(InvalidArgumentError, match="auto or none"):
        shard_corpus([src], bpe_tokenizer(), tmp_path / "o", eos="<nope>")
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerLoadError, match=r"tokenizer\.json"):
        shard_corpus([src], bad, tmp_path / "o2")
