"""featurize and scan against brute-force oracles over the raw documents."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from shard_helpers import word_corpus
from tokenizers import Tokenizer

from kdmem.corpus import open_shards
from kdmem.corpus.featurize import featurize
from kdmem.corpus.index import build_index
from kdmem.corpus.scan import maximal_spans, scan
from kdmem.errors import InvalidArgumentError, MalformedRecordError

WORDS = [f"w{i}" for i in range(12)]


def occurrences(docs: list[list[int]], q: list[int]) -> int:
    n = len(q)
    return sum(1 for d in docs for i in range(len(d) - n + 1) if d[i : i + n] == q)


def longest(docs: list[list[int]], q: list[int]) -> list[int]:
    out = []
    for i in range(len(q)):
        k = 0
        while i + k < len(q) and occurrences(docs, q[i : i + k + 1]) > 0:
            k += 1
        out.append(k)
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[list[int]]]:
    d = tmp_path_factory.mktemp("feat")
    word_corpus(
        d, n_docs=60, planted_len=12, planted_every=7, vocab_cycle=9, max_words=30, shard_tokens=300
    )
    build_index(d / "shards", threads=2)
    ss = open_shards(d / "shards")
    docs = [ss[i].astype(np.int64).tolist() for i in range(len(ss))]
    assert len(ss.shards) > 1
    return d, d / "tokenizer.json", docs


def test_featurize_matches_oracles(corpus: tuple[Path, Path, list[list[int]]]) -> None:
    d, tok_path, docs = corpus
    rng = np.random.default_rng(1)
    rows = [docs[0][:10], docs[7][:10], rng.integers(1, 13, 10).tolist(), docs[14][-10:]]
    rows = [r for r in rows if len(r) == 10] + [[1, 2, 3]]  # a short one is skipped
    ex = d / "examples.jsonl"
    ex.write_text(
        "".join(
            json.dumps({"example_id": 10 + i, "input_ids": r}) + "\n" for i, r in enumerate(rows)
        )
    )
    out = featurize(
        ex,
        d / "shards",
        d / "f.parquet",
        prefix=4,
        suffix=6,
        ngram=(2, 5),
        tokenizer=str(tok_path),
        threads=2,
    )
    t = pq.read_table(out).to_pydict()
    tok = Tokenizer.from_file(str(tok_path))
    meta = json.loads(pq.read_metadata(out).metadata[b"kdmem"])
    assert meta["n_short"] == 1 and t["example_id"] == [10 + i for i in range(len(rows) - 1)]
    for k, q in enumerate(rows[:-1]):
        text = tok.decode(q, skip_special_tokens=False)
        assert t["zlib_bytes"][k] == len(zlib.compress(text.encode()))
        assert t["suffix_count"][k] == occurrences(docs, q[4:10])
        assert t["window_count"][k] == occurrences(docs, q)
        lm = longest(docs, q)
        assert t["longest_match_max"][k] == max(lm)
        assert t["longest_match_mean"][k] == pytest.approx(np.mean(lm))
        for n in (2, 5):
            grams = [q[i : i + n] for i in range(len(q) - n + 1)]
            want = np.mean([occurrences(docs, g) > 0 for g in grams])
            assert t[f"ngram_overlap_{n}"][k] == pytest.approx(want)
    one = featurize(
        ex, d / "shards", d / "f1.parquet", prefix=4, suffix=6, tokenizer=str(tok_path), threads=1
    )
    assert pq.read_table(one).equals(
        pq.read_table(
            featurize(
                ex,
                d / "shards",
                d / "f2.parquet",
                prefix=4,
                suffix=6,
                tokenizer=str(tok_path),
                threads=2,
            )
        )
    )
    excl = featurize(
        ex,
        d / "shards",
        d / "fx.parquet",
        prefix=4,
        suffix=6,
        tokenizer=str(tok_path),
        exclude_self=True,
    )
    raw = np.array(t["window_count"])
    assert pq.read_table(excl).column("window_count").to_pylist() == np.maximum(raw - 1, 0).tolist()


def test_featurize_parquet_input_ids(corpus: tuple[Path, Path, list[list[int]]]) -> None:
    """Parquet token ids (two row groups, unsorted ids) read like JSONL; bad columns fail."""
    import pyarrow as pa

    d, tok_path, docs = corpus
    rows = [docs[i][:12] for i in (3, 0, 9, 5) if len(docs[i]) >= 12] + [[4, 5]]
    ids = [7, 3, 11, 1, 20][: len(rows)]
    (d / "px.jsonl").write_text(
        "".join(
            json.dumps({"example_id": i, "input_ids": r}) + "\n"
            for i, r in zip(ids, rows, strict=True)
        )
    )
    table = pa.table({"example_id": ids, "input_ids": pa.array(rows, pa.list_(pa.int32()))})
    pq.write_table(table, d / "px.parquet", row_group_size=2)
    kw = dict(prefix=4, suffix=6, tokenizer=str(tok_path), threads=1)
    a = featurize(d / "px.jsonl", d / "shards", d / "pa.parquet", **kw)
    b = featurize(d / "px.parquet", d / "shards", d / "pb.parquet", **kw)
    assert pq.read_table(a).equals(pq.read_table(b))
    assert pq.read_table(b).num_rows == len(rows) - 1
    bad = {  # name: (table, message)
        "floats": (
            pa.table({"input_ids": pa.array([[1.0, 2.0]], pa.list_(pa.float64()))}),
            "list of integers",
        ),
        "null-row": (
            pa.table({"input_ids": pa.array([[1, 2], None], pa.list_(pa.int64()))}),
            "null in row 1",
        ),
        "null-token": (
            pa.table({"input_ids": pa.array([[1, 2], [3, None]])}),
            "row 1 holds a null token id",
        ),
    }
    for name, (t, msg) in bad.items():
        pq.write_table(t, d / f"bad-{name}.parquet")
        with pytest.raises(MalformedRecordError, match=msg):
            featurize(d / f"bad-{name}.parquet", d / "shards", d / "pz.parquet", **kw)


def test_featurize_needs_a_tokenizer_for_token_ids(
    corpus: tuple[Path, Path, list[list[int]]],
) -> None:
    d, _, docs = corpus
    np.save(d / "ex.npy", np.array([docs[0][:5]]))
    with pytest.raises(InvalidArgumentError, match="--tokenizer"):
        featurize(d / "ex.npy", d / "shards", d / "x.parquet", prefix=2, suffix=3)


def test_maximal_spans_rule() -> None:
    lm = np.array([3, 2, 1, 4, 3, 2, 1, 0, 2, 2])
    assert maximal_spans(lm, 2) == [(0, 3), (3, 4), (8, 2), (9, 2)]
    assert maximal_spans(np.zeros(0, np.int64), 1) == []


def test_scan_matches_brute_force(corpus: tuple[Path, Path, list[list[int]]]) -> None:
    d, _, docs = corpus
    rng = np.random.default_rng(2)
    gens = [
        docs[0][:6] + rng.integers(1, 13, 5).tolist() + docs[7][-8:],
        rng.integers(1, 13, 25).tolist(),
    ]
    g = d / "gens.jsonl"
    g.write_text("".join(json.dumps({"input_ids": r}) + "\n" for r in gens))
    out = scan(g, d / "shards", d / "spans.parquet", min_len=4, max_locations=3)
    t = pq.read_table(out).to_pylist()
    want = []
    for e, q in enumerate(gens):
        # brute force: spans [i, j) occurring verbatim, not extendable left or right
        for i in range(len(q)):
            for j in range(i + 4, len(q) + 1):
                if occurrences(docs, q[i:j]) == 0:
                    continue
                right = j == len(q) or occurrences(docs, q[i : j + 1]) == 0
                left = i == 0 or occurrences(docs, q[i - 1 : j]) == 0
                if left and right:
                    want.append((e, i, j - i, occurrences(docs, q[i:j])))
    assert [(r["example_id"], r["start"], r["length"], r["count"]) for r in t] == want
    for r in t:
        q = gens[r["example_id"]][r["start"] : r["start"] + r["length"]]
        assert len(r["document"]) == min(3, r["count"])
        for doc, off in zip(r["document"], r["offset"], strict=True):
            assert docs[doc][off : off + r["length"]] == q


def _permuted_tokenizer(d: Path) -> Path:
    """The corpus' words with other ids: the same text gives other token ids (tokenizer B)."""
    from tokenizers import models, pre_tokenizers

    vocab = {"<|endoftext|>": 0, **{w: 12 - i for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    p = d / "other" / "tokenizer.json"
    p.parent.mkdir(exist_ok=True)
    tok.save(str(p))
    return p


def test_text_input_with_another_tokenizer_is_refused(
    corpus: tuple[Path, Path, list[list[int]]],
) -> None:
    """Regression (issue 16): text tokenized with tokenizer B was looked up in an index built
    with tokenizer A and gave wrong counts without a word. Now one line names both hashes."""
    from kdmem.errors import TokenizerMismatchError
    from kdmem.identity import tokenizer_hash

    d, tok_path, docs = corpus
    other = _permuted_tokenizer(d)
    ex = d / "texts.jsonl"
    text = Tokenizer.from_file(str(tok_path)).decode(docs[0][:10], skip_special_tokens=False)
    ex.write_text(json.dumps({"example_id": 0, "text": text}) + "\n")
    b = tokenizer_hash(other)[:12]
    with pytest.raises(TokenizerMismatchError, match=b) as e:
        featurize(ex, d / "shards", d / "bad.parquet", prefix=4, suffix=6, tokenizer=str(other))
    assert tokenizer_hash(tok_path)[:12] in str(e.value) and "\n" not in str(e.value)
    assert not (d / "bad.parquet").exists()
    with pytest.raises(TokenizerMismatchError, match=b):
        scan(ex, d / "shards", d / "bad-scan.parquet", tokenizer=str(other))
    # The right tokenizer is accepted and answers as the oracle does.
    out = featurize(
        ex, d / "shards", d / "good.parquet", prefix=4, suffix=6, tokenizer=str(tok_path)
    )
    assert pq.read_table(out).column("suffix_count").to_pylist() == [
        occurrences(docs, docs[0][4:10])
    ]


def test_ids_recorded_with_one_tokenizer_and_decoded_with_another_are_refused(
    corpus: tuple[Path, Path, list[list[int]]],
) -> None:
    """Token ids whose Parquet metadata names tokenizer A, with --tokenizer B for decoding
    (zlib would be computed on the wrong text): refused before any work."""
    import pyarrow as pa

    from kdmem.errors import TokenizerMismatchError
    from kdmem.identity import tokenizer_hash
    from kdmem.rundir import with_table_meta

    d, tok_path, docs = corpus
    other = _permuted_tokenizer(d)
    t = pa.table({"example_id": [0], "input_ids": [docs[0][:10]]})
    path = d / "ids.parquet"
    pq.write_table(with_table_meta(t, {"tokenizer_hash": tokenizer_hash(tok_path)}), path)
    with pytest.raises(TokenizerMismatchError, match="pass the tokenizer the examples were"):
        featurize(path, d / "shards", d / "bad2.parquet", prefix=4, suffix=6, tokenizer=str(other))


def test_featurize_on_a_full_disk_fails_in_one_line_and_finishes_identically(
    corpus: tuple[Path, Path, list[list[int]]], tmp_path: Path
) -> None:
    """featurize writing to a full disk (a real 1 MB tmpfs, where permitted): one line, no
    output published; after space is freed the rerun equals a run on a roomy disk."""
    from tests.full_disk import full_tmpfs

    from kdmem.errors import DiskFullError

    d, tok_path, docs = corpus
    ex = tmp_path / "ex.jsonl"
    ex.write_text(
        "".join(
            json.dumps({"example_id": i, "input_ids": docs[i % len(docs)][:10]}) + "\n"
            for i in range(2000)
            if len(docs[i % len(docs)]) >= 10
        )
    )
    kw = dict(prefix=4, suffix=6, ngram=(2,), tokenizer=str(tok_path), threads=1)
    with full_tmpfs(tmp_path) as (mnt, filler):
        with pytest.raises(DiskFullError) as e:
            featurize(ex, d / "shards", mnt / "f.parquet", **kw)
        assert "\n" not in str(e.value) and str(mnt) in str(e.value)
        assert not (mnt / "f.parquet").exists()
        filler.unlink()
        out = featurize(ex, d / "shards", mnt / "f.parquet", **kw)
        ref = featurize(ex, d / "shards", tmp_path / "ref.parquet", **kw)
        assert pq.read_table(out).equals(pq.read_table(ref))
