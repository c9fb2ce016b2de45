"""kdmem count / locate: text tokenized with the index's tokenizer, counts and locations against
a naive scan of the shards' documents, context decoded and escaped, tokenizer identity
checked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from shard_helpers import bpe_tokenizer, docs, encode, wide_tokenizer, write_jsonl

import kdmem
from kdmem.cli import run
from kdmem.corpus.index import build_index
from kdmem.corpus.lookup import escape, find_tokenizer, lookup, parse_ids
from kdmem.corpus.shard import shard_corpus
from kdmem.identity import tokenizer_hash

TEXTS = [
    "def f(x):\n    return x * 2  # code lines",
    "The quick brown fox jumps over the lazy dog.",
    "escape \x1b[31m red \x1b[0m and a\ttab\r\n",
    "The quick brown fox naps.",
    "def f(x):\n    return x * 2",
] * 3


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("lookup")
    src = write_jsonl(d / "in.jsonl", TEXTS)
    out = d / "shards"
    shard_corpus([src], tokenizer=bpe_tokenizer(), out=out, shard_tokens=60, threads=2)
    build_index(out, threads=2)
    return out


def naive(all_docs: list[list[int]], q: list[int]) -> list[tuple[int, int]]:
    return [
        (i, p)
        for i, d in enumerate(all_docs)
        for p in range(len(d) - len(q) + 1)
        if d[p : p + len(q)] == q
    ]


def test_counts_and_locations_match_a_naive_scan(index: Path) -> None:
    all_docs = docs(index)
    for text in ["The quick brown fox", "return x * 2", "def f(x):\n", "lazy dog.", "zebra"]:
        res = lookup(index, text, tokenizer=bpe_tokenizer(), limit=100, context=3)
        (q,) = encode([text], eos=False)
        want = naive(all_docs, q)
        assert res.ids == q
        assert res.count == len(want), text
        assert [(h.document, h.offset) for h in res.hits] == want
        for h in res.hits:
            d = all_docs[h.document]
            assert h.match == q
            assert h.before == d[max(0, h.offset - 3) : h.offset]
            assert h.after == d[h.offset + len(q) : h.offset + len(q) + 3]
    # Token ids instead of text give the same answer, without a tokenizer.
    (q,) = encode([" brown fox"], eos=False)
    by_ids = lookup(index, ids=q, limit=2)
    assert by_ids.count == lookup(index, " brown fox", tokenizer=bpe_tokenizer()).count > 0
    assert len(by_ids.hits) == 2


def test_tokenizer_is_found_and_checked(
    index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No tokenizer anywhere: text is refused with the fix; ids work.
    with pytest.raises(kdmem.InvalidArgumentError, match="--tokenizer"):
        lookup(index, "fox")
    assert find_tokenizer(index) is None
    # A copy next to the shards is found.
    d = tmp_path / "with-tok"
    shutil.copytree(index, d)
    shutil.copy(bpe_tokenizer(), d / "tokenizer.json")
    assert find_tokenizer(d) == d / "tokenizer.json"
    assert lookup(d, "fox").count == lookup(index, "fox", tokenizer=bpe_tokenizer()).count
    # A tokenizer of another vocabulary is refused in one line naming both hashes, from
    # Python and from the CLI (usage error, exit status 2).
    ours, theirs = tokenizer_hash(bpe_tokenizer()), tokenizer_hash(wide_tokenizer())
    assert ours != theirs
    with pytest.raises(kdmem.TokenizerMismatchError) as e:
        lookup(index, "small", tokenizer=wide_tokenizer())
    msg = str(e.value)
    assert ours[:12] in msg and theirs[:12] in msg and "\n" not in msg
    assert run(["count", str(index), "small", "--tokenizer", str(wide_tokenizer())]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ours[:12] in err and theirs[:12] in err
    with pytest.raises(kdmem.InvalidArgumentError):
        lookup(index, "fox", ids=[1], tokenizer=bpe_tokenizer())
    with pytest.raises(kdmem.InvalidArgumentError, match="ids"):
        parse_ids("1,x")
    assert parse_ids("1, 2 3") == [1, 2, 3]


def test_escape_keeps_one_line() -> None:
    s = escape("a\nb\tc\x1b[31md\u2028e\\")
    assert s == "a\\nb\\tc\\x1b[31md\\u2028e\\\\"
    assert s.isprintable()


def test_cli_count_and_locate(index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tok = str(bpe_tokenizer())
    assert run(["count", str(index), "The quick brown fox", "--tokenizer", tok]) == 0
    out = capsys.readouterr().out
    assert out.split("\t")[0] == "6"
    assert run(["locate", str(index), "red", "--tokenizer", tok, "--context", "4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("3 occurrence(s)")
    assert len(out) == 4 and all("doc" in line and "[" in line for line in out[1:])
    # The document's escape sequence and tab are shown escaped, never raw.
    assert all("\x1b" not in line and "\t" not in line for line in out)
    assert any("\\x1b" in line for line in out[1:])
    (q,) = encode([" lazy dog."], eos=False)
    assert run(["locate", str(index), "--ids", ",".join(map(str, q)), "--limit", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"3 occurrence(s) of {len(q)} tokens, first 1" and len(out) == 2
    assert run(["count", str(index), "fox", "--ids", "1"]) == 2
    assert "not both" in capsys.readouterr().err
    assert run(["count", str(index), "fox"]) == 2
    assert "--tokenizer" in capsys.readouterr().err
