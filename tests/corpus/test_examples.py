"""The study set D drawn from shards: document and stream windows against brute-force
oracles, the same documents for another tokenizer, and a corpus too small for n_examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from shard_helpers import bpe_tokenizer, write_jsonl
from tokenizers import Tokenizer, models, pre_tokenizers

from kdmem.corpus import open_shards, shard_corpus
from kdmem.corpus.examples import sample_study_set
from kdmem.errors import InvalidArgumentError

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "at",
    "from",
    "it",
    "an",
    "be",
    "this",
    "are",
]


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, int(rng.integers(3, 40)))) for _ in range(n)]


def _word_tokenizer(tmp: Path) -> Path:
    """A second, very different tokenizer (one id per word) of the same texts."""
    vocab = {"[UNK]": 0, "<|endoftext|>": 1} | {w: i + 2 for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    p = tmp / "word" / "tokenizer.json"
    p.parent.mkdir()
    tok.save(str(p))
    return p


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    tmp = tmp_path_factory.mktemp("examples")
    texts = _texts(400)
    src = write_jsonl(tmp / "c.jsonl", texts)
    a = shard_corpus([src], bpe_tokenizer(), tmp / "bpe", shard_tokens=2000).out
    b = shard_corpus([src], _word_tokenizer(tmp), tmp / "word", shard_tokens=700).out
    return a, b, texts


def test_document_windows_equal_a_brute_force_draw(shards) -> None:
    a, _, _ = shards
    ss = open_shards(a)
    assert len(ss.shards) > 1
    docs = [np.asarray(ss[i]) for i in range(len(ss))]
    study, val, available = sample_study_set(a, 50, 10, 24, seed=3)
    perm = np.random.default_rng(3).permutation(len(docs))
    eligible = [int(i) for i in perm if len(docs[i]) >= 24]
    assert available == len(eligible)
    assert val.example_ids.tolist() == sorted(eligible[:10])
    assert study.example_ids.tolist() == sorted(eligible[10:60])
    for i, row in zip(study.example_ids, study.tokens, strict=True):
        assert row.tolist() == docs[i][:24].tolist()


def test_stream_windows_equal_slices_of_the_concatenated_stream(shards) -> None:
    a, _, _ = shards
    ss = open_shards(a)
    flat = np.concatenate([np.asarray(s.tokens) for s in ss.shards]).astype(np.int64)
    study, _, available = sample_study_set(a, 40, 5, 32, seed=1, windows="stream")
    assert available == len(flat) // 32
    perm = np.random.default_rng(1).permutation(available)
    assert study.example_ids.tolist() == sorted(perm[5:45].tolist())
    for k, row in zip(study.example_ids, study.tokens, strict=True):
        np.testing.assert_array_equal(row, flat[k * 32 : (k + 1) * 32])
    # windows that span a shard boundary exist and are right
    bounds = np.cumsum([len(s.tokens) for s in ss.shards])[:-1]
    every, _, _ = sample_study_set(a, available - 1, 1, 32, seed=1, windows="stream")
    spans = [k for k in every.example_ids if any(k * 32 < b < (k + 1) * 32 for b in bounds)]
    assert spans


def test_another_tokenizer_draws_the_same_documents(shards) -> None:
    """Two tokenizers of one corpus visit documents in one seeded order: restricted to the
    documents both make long enough, the two draws list them in the same order (so the
    study sets differ only by documents one tokenization makes too short, and the slots
    they take). A draw over each family's own eligible set (kdmem 0.1) shares far fewer."""
    a, b, _ = shards
    ra, rb = open_shards(a), open_shards(b)
    la = np.array([len(ra[i]) for i in range(len(ra))])
    lb = np.array([len(rb[i]) for i in range(len(rb))])
    both = (la >= 12) & (lb >= 12)
    assert (la >= 12).sum() - both.sum() > 0  # the tokenizations disagree on some documents
    sa, va, _ = sample_study_set(a, 60, 10, 12, seed=0)
    sb, vb, _ = sample_study_set(b, 60, 10, 12, seed=0)
    perm = np.random.default_rng(0).permutation(len(la))
    rank = np.argsort(perm)

    def drawn(study, val):  # in draw order, documents both tokenizations keep
        ids = np.concatenate([val.example_ids, study.example_ids])
        ids = ids[both[ids]]
        return ids[np.argsort(rank[ids])].tolist()

    da, db = drawn(sa, va), drawn(sb, vb)
    n = min(len(da), len(db))
    assert da[:n] == db[:n]
    shared = len(set(sa.example_ids.tolist()) & set(sb.example_ids.tolist()))
    old = [np.random.default_rng(0).permutation(np.flatnonzero(x >= 12))[10:70] for x in (la, lb)]
    assert shared > len(set(old[0].tolist()) & set(old[1].tolist()))


def test_too_few_windows_is_an_error_unless_allowed(shards) -> None:
    a, _, _ = shards
    _, _, available = sample_study_set(a, 1, 1, 24, seed=0)
    with pytest.raises(InvalidArgumentError, match=f"supplies {available:,} documents") as e:
        sample_study_set(a, available, 1, 24, seed=0)
    assert "allow_fewer" in str(e.value) and "\n" not in str(e.value)
    study, val, _ = sample_study_set(a, available, 1, 24, seed=0, allow_fewer=True)
    assert len(study) == available - len(val)
