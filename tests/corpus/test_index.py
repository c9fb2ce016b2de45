"""kdmem.Index against a Python oracle that scans every position of the raw tokens.

Shards are written here straight from docs/formats.md (header, tokens, offsets, CRC-32 via
zlib.crc32), which also checks that the Rust reader follows the documented format.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kdmem
from kdmem._core import _error_kinds, parse_size
from kdmem.cli import run
from kdmem.corpus.index import Index, build_index, default_memory, parse_memory, verify_index

Docs = list[list[int]]


def write_kdt(
    path: Path, docs: Docs, dtype: str = "u16", vocab_size: int = 0, tok_hash: bytes = bytes(32)
) -> None:
    """A shard file, format version 1, exactly as docs/formats.md describes it."""
    width = 2 if dtype == "u16" else 4
    tokens = np.array([t for d in docs for t in d], dtype=np.uint16 if width == 2 else np.uint32)
    offsets = np.cumsum([0] + [len(d) for d in docs]).astype("<u8")
    n = len(tokens)
    tok_bytes = tokens.astype(tokens.dtype.newbyteorder("<")).tobytes()
    pad = (-(128 + len(tok_bytes))) % 8
    offsets_offset = 128 + len(tok_bytes) + pad
    crc = zlib.crc32(tok_bytes + offsets.tobytes())
    head = struct.pack(
        "<8sIIQQQQIIII32s28s",
        b"KDMEMTOK",
        1,
        width,
        n,
        len(docs),
        128,
        offsets_offset,
        crc,
        vocab_size,
        0xFFFFFFFF,
        0,
        tok_hash,
        bytes(28),
    )
    head += struct.pack("<I", zlib.crc32(head))
    path.write_bytes(head + tok_bytes + bytes(pad) + offsets.tobytes())


def write_dir(root: Path, shards: list[Docs], **kw: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for k, docs in enumerate(shards):
        write_kdt(root / f"shard-{k:05d}.kdt", docs, **kw)  # type: ignore[arg-type]
    return root


class Oracle:
    def __init__(self, shards: list[Docs]) -> None:
        self.docs = [(k, d) for k, s in enumerate(shards) for d in s]

    def locate(self, q: list[int]) -> list[tuple[int, int, int]]:
        out = []
        for gid, (k, d) in enumerate(self.docs):
            for p in range(len(d)):
                if len(d) - p >= len(q) and d[p : p + len(q)] == q:
                    out.append((k, gid, p))
        return out

    def longest_match(self, q: list[int]) -> list[int]:
        res = []
        for i in range(len(q)):
            best = 0
            for _, d in self.docs:
                for p in range(len(d)):
                    length = 0
                    while (
                        p + length < len(d)
                        and i + length < len(q)
                        and d[p + length] == q[i + length]
                    ):
                        length += 1
                    best = max(best, length)
            res.append(best)
        return res


docs_st = st.lists(st.lists(st.integers(0, 3), max_size=10), max_size=6)
shards_st = st.lists(docs_st, min_size=1, max_size=3)
query_st = st.lists(st.integers(0, 3), max_size=7)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shards=shards_st, queries=st.lists(query_st, min_size=1, max_size=5), wide=st.booleans())
def test_queries_match_the_oracle(shards: list[Docs], queries: list[list[int]], wide: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = write_dir(Path(tmp) / "s", shards, dtype="u32" if wide else "u16")
        build_index(root, threads=2)
        idx = Index(root)
        oracle = Oracle(shards)
        # Queries spanning document boundaries: slices of the concatenated corpus.
        flat = [t for s in shards for d in s for t in d]
        queries = [
            *queries,
            flat[1:6],
            flat[: max(map(len, (d for s in shards for d in s)), default=0) + 1],
        ]
        for q in queries:
            want = oracle.locate(q)
            assert idx.count(q) == len(want)
            loc = idx.locate(np.array(q, dtype=np.int64), limit=3)
            assert list(zip(loc.shard, loc.document, loc.offset, strict=True)) == want[:3]
            assert idx.longest_match(q).tolist() == oracle.longest_match(q)
            ov = idx.ngram_overlap(q, 2)
            present = [i for i in range(len(q) - 1) if oracle.locate(q[i : i + 2])]
            assert ov.positions.tolist() == present
            assert ov.total == max(len(q) - 1, 0)
            if ov.total:
                assert ov.fraction == pytest.approx(len(present) / ov.total)
            else:
                assert np.isnan(ov.fraction)
        # Batch forms, any thread count.
        for threads in (1, 2):
            counts = idx.count_many([np.array(q, dtype=np.uint8) for q in queries], threads=threads)
            assert counts.tolist() == [len(oracle.locate(q)) for q in queries]
            ms = idx.longest_match_many(queries, threads=threads)
            assert [m.tolist() for m in ms] == [oracle.longest_match(q) for q in queries]
            locs = idx.locate_many(queries, limit=None, threads=threads)
            assert [len(x.shard) for x in locs] == [len(oracle.locate(q)) for q in queries]
            ovs = idx.ngram_overlap_many(queries, 1, threads=threads)
            assert [o.total for o in ovs] == [len(q) for q in queries]


@pytest.fixture()
def built(tmp_path: Path) -> Path:
    shards = [[[1, 2, 3, 1, 2], [2, 3], []], [[3, 1, 2, 3], [1, 2, 3, 1, 2, 3]]]
    root = write_dir(tmp_path / "shards", shards, vocab_size=8, tok_hash=bytes([7]) * 32)
    build_index(root, threads=2)  # small shards: one unit for both
    return root


def test_two_d_arrays_properties_and_lazy_export(built: Path) -> None:
    idx = kdmem.Index(built)
    assert (idx.n_shards, idx.n_tokens, idx.n_docs, idx.vocab_size) == (2, 17, 5, 8)
    assert idx.dtype == np.uint16 and idx.tokenizer_hash == "07" * 32
    q2 = np.array([[1, 2, 3], [3, 1, 2]])
    assert idx.count_many(q2).tolist() == [idx.count([1, 2, 3]), idx.count([3, 1, 2])]
    assert idx.count([]) == 17
    assert "shards=2" in repr(idx)


def test_native_dtypes_take_the_fast_path_with_the_same_answers(built: Path) -> None:
    idx = Index(built)
    q = [1, 2, 3]
    want = (idx.count(q), idx.locate(q), idx.longest_match(q), idx.ngram_overlap(q, 2))
    wide = np.array([9, 1, 2, 3, 9, 9], dtype=np.int64)[1:4]  # contiguous view
    strided = np.array([1, 0, 2, 0, 3], dtype=np.int64)[::2]  # converted in Python
    for a in (np.array(q, np.uint32), np.array(q, np.uint16), wide, strided, np.array(q, ">i8")):
        assert idx.count(a) == want[0]
        assert all(np.array_equal(x, y) for x, y in zip(idx.locate(a), want[1], strict=True))
        assert np.array_equal(idx.longest_match(a), want[2])
        assert idx.ngram_overlap(a, 2).fraction == want[3].fraction
    for bad in (-1, 2**32, -(2**63)):
        with pytest.raises(kdmem.TokenRangeError, match=str(bad)):
            idx.count(np.array([1, bad], dtype=np.int64))
    with pytest.raises(kdmem.TokenRangeError, match="token id 8"):
        idx.count(np.array([1, 8], dtype=np.uint16))


def test_bad_queries(built: Path) -> None:
    idx = Index(built)
    with pytest.raises(kdmem.TokenRangeError, match="token id 8"):
        idx.count([1, 8])
    with pytest.raises(kdmem.TokenRangeError, match="-1"):
        idx.count([-1])
    with pytest.raises(kdmem.InvalidArgumentError, match="dtype float"):
        idx.count(np.array([1.5]))
    with pytest.raises(kdmem.InvalidArgumentError, match="shape"):
        idx.count(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(kdmem.InvalidArgumentError, match="n >= 1"):
        idx.ngram_overlap([1], 0)
    # 2-D batches are converted and range-checked as a whole; rows answer like lists.
    batch = np.array([[1, 2, 3], [3, 2, 1]], dtype=np.int64)
    assert idx.count_many(batch).tolist() == [idx.count([1, 2, 3]), idx.count([3, 2, 1])]
    assert idx.count_many(batch[:, 1:]).tolist() == [idx.count([2, 3]), idx.count([2, 1])]
    assert idx.count_many(np.zeros((2, 0), np.int64)).tolist() == [idx.count([])] * 2
    with pytest.raises(kdmem.TokenRangeError, match="-7"):
        idx.count_many(np.array([[1, 2], [3, -7]]))
    with pytest.raises(kdmem.InvalidArgumentError, match="dtype float"):
        idx.longest_match_many(np.ones((2, 2)))
    with pytest.raises(kdmem.InvalidArgumentError, match="2-D"):
        idx.count_many(np.zeros((2, 2, 2), dtype=np.int64))
    with pytest.raises(kdmem.TokenizerMismatchError, match="090909090909"):
        Index(built, tokenizer_hash="09" * 32)
    Index(built, tokenizer_hash="07" * 32)


def test_corrupt_stale_missing(tmp_path: Path, built: Path) -> None:
    (sa,) = built.glob("*.kdsa")  # one unit covers both small shards
    assert sa.name == "shard-00000..shard-00001.kdsa"
    data = bytearray(sa.read_bytes())
    data[-1] ^= 1
    sa.write_bytes(bytes(data))
    with pytest.raises(kdmem.CorruptFileError, match="checksum"):
        verify_index(built)
    sa.write_bytes(bytes(data[:-3]))
    with pytest.raises(kdmem.CorruptFileError, match=re.escape(sa.name)):
        Index(built)
    assert build_index(built, threads=2)["built"] == 2  # a truncated unit is rebuilt (both shards)
    write_kdt(built / "shard-00001.kdt", [[5, 5]], vocab_size=8, tok_hash=bytes([7]) * 32)
    with pytest.raises(kdmem.StaleIndexError, match="changed after indexing"):
        Index(built)
    fresh = write_dir(tmp_path / "fresh", [[[1]]])
    with pytest.raises(kdmem.StaleIndexError, match="kdmem index"):
        Index(fresh)
    assert "StaleIndexError" in _error_kinds()


def test_cli_index_builds_resumes_and_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_dir(tmp_path / "s", [[[1, 2], [3]], [[2, 2, 2]]])
    assert run(["index", str(root), "--threads", "2", "--verify"]) == 0
    out = capsys.readouterr().out
    assert "2 built" in out and "verified" in out
    assert run(["index", str(root)]) == 0
    assert "2 up to date" in capsys.readouterr().out
    (root / "shard-00000.kdsa").write_bytes(b"junk")
    bad = write_dir(tmp_path / "bad", [[[1, 9]]], vocab_size=4)
    assert run(["index", str(bad)]) == 2
    assert "token id 9" in capsys.readouterr().err


def write_infini_gram(root: Path, docs: Docs) -> None:
    """tokenized.0 / offset.0 as infini_gram.indexing writes them; table.0 by its own indexer."""
    root.mkdir(parents=True)
    ds, od = b"", []
    for d in docs:
        od.append(len(ds))
        ds += b"\xff\xff" + np.array(d, dtype="<u2").tobytes()
    (root / "tokenized.0").write_bytes(ds)
    (root / "offset.0").write_bytes(np.array(od, dtype="<u8").tobytes())
    code = (
        "import argparse, infini_gram.indexing as ix\n"
        f"ix.build_sa(argparse.Namespace(save_dir={str(root)!r}, shards=1, workers=1, worker_id=0,"
        f" temp_dir={str(root / 'tmp')!r}, mem=1, cpus=1, token_width=2))\n"
    )
    # build_sa changes the working directory, so it runs in its own interpreter.
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_opens_an_infini_gram_index_built_by_its_indexer(tmp_path: Path) -> None:
    pytest.importorskip("infini_gram")
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 600, size=int(rng.integers(0, 40))).tolist() for _ in range(30)]
    docs += [[7, 8, 9] * 5, [], [7, 8, 9, 7]]
    root = tmp_path / "ig"
    write_infini_gram(root, docs)
    idx = Index(root)
    assert idx.format == "infini-gram"
    assert (idx.n_shards, idx.n_docs, idx.n_tokens) == (1, len(docs), sum(map(len, docs)))
    oracle = Oracle([docs])
    flat = [t for d in docs for t in d]
    queries = [[7, 8, 9], [7, 8, 9, 7], [9, 7], flat[10:14], flat[3:5], [599, 599, 599], [1]]
    for q in queries:
        want = oracle.locate(q)
        assert idx.count(q) == len(want)
        loc = idx.locate(q)
        assert list(zip(loc.shard, loc.document, loc.offset, strict=True)) == want
    seqs = [flat[i : i + 30] for i in range(0, len(flat) - 30, 97)]
    got = idx.longest_match_many(seqs)
    assert [g.tolist() for g in got] == [oracle.longest_match(s) for s in seqs]
    with pytest.raises(kdmem.TokenRangeError, match="65535"):
        idx.count([65535])


def test_memory_budget_pieces_give_the_same_answers(tmp_path: Path) -> None:
    """A budget that fits ~40 tokens per unit cuts each shard into pieces of whole documents;
    answers equal the oracle's and a one-unit build's."""
    rng = np.random.default_rng(3)
    shards = [
        [rng.integers(0, 4, int(rng.integers(1, 12))).tolist() for _ in range(15)] for _ in range(3)
    ]
    small = write_dir(tmp_path / "small", shards)
    whole = write_dir(tmp_path / "whole", shards)
    report = build_index(small, threads=1, memory=64 * 2**20 + 40 * 7)
    assert report["units"] > 3 and report["max_unit"] == 280 * 2 // 13  # 280 B / 6.5 B/token
    build_index(whole, threads=1)
    a, b = Index(small), Index(whole)
    assert len(a.units) == report["units"] and len(b.units) == 1
    assert all(len(u) == 1 for u in a.units)
    oracle = Oracle(shards)
    flat = [t for s in shards for d in s for t in d]
    qs = [flat[i : i + n] for i in range(0, len(flat), 7) for n in (1, 2, 4, 9)] + [[3, 3, 3, 3]]
    for q in qs:
        want = oracle.locate(q)
        assert a.count(q) == b.count(q) == len(want)
        loc = a.locate(q)
        assert list(zip(loc.shard, loc.document, loc.offset, strict=True)) == want
        assert a.longest_match(q).tolist() == b.longest_match(q).tolist()


def test_a_tight_budget_sorts_fewer_units_at_once_instead_of_cutting_shards(
    tmp_path: Path,
) -> None:
    """Two threads, a budget that holds one shard's sort but not two: each shard stays one
    unit (no pieces, so a query costs one lookup per shard), sorted one at a time."""
    rng = np.random.default_rng(5)
    shards = [[rng.integers(0, 50, 40).tolist() for _ in range(10)] for _ in range(2)]
    d = write_dir(tmp_path / "s", shards)
    tokens = 400  # per shard
    report = build_index(d, threads=2, memory=64 * 2**20 + int(1.5 * tokens * 6.5))
    assert report["units"] == 2 and report["concurrency"] == 1
    assert report["max_unit"] >= tokens
    idx = Index(d)
    assert [list(u) for u in idx.units] == [[0], [1]]
    assert not list(d.glob("*.part*.kdsa"))
    oracle = Oracle(shards)
    flat = [t for s in shards for doc in s for t in doc]
    for q in [flat[i : i + n] for i in range(0, len(flat), 13) for n in (1, 3, 8)]:
        assert idx.count(q) == len(oracle.locate(q))


def test_memory_budget_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_dir(tmp_path / "s", [[[1, 2, 3] * 200]])
    with pytest.raises(kdmem.InvalidArgumentError, match=r"600 tokens.*--memory \S+B") as e:
        build_index(root, memory="64MB")
    assert "\n" not in str(e.value)
    # The suggested budget is enough: the build goes through with it.
    suggested = str(e.value).split("--memory ")[1].split()[0]
    assert build_index(root, memory=suggested)["built"] == 1
    assert run(["index", str(root), "--memory", "1KB"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs at least" in err
    with pytest.raises(kdmem.InvalidArgumentError, match="8GB"):
        build_index(root, memory="eight gigs")
    # The same units as kdmem shard --memory: GB = 10^9, G = GiB = 2^30.
    assert parse_memory("8GB") == 8 * 10**9 == parse_size("8GB")
    assert parse_memory("8g") == parse_memory("8GiB") == 8 * 2**30
    assert parse_memory("1.5M") == int(1.5 * 2**20) and parse_memory(4096) == 4096
    assert default_memory() > 0


def test_version_1_indexes_say_to_rebuild(tmp_path: Path) -> None:
    """An index written by the previous format (version 1, docs/formats.md of that release)
    fails with one line naming the fix; `kdmem index` replaces it."""
    root = write_dir(tmp_path / "s", [[[1, 2, 3], [2, 3]]])
    head = struct.pack("<8sIIQQQQIIII32s28s", b"KDMEMSA\0", 1, 4, 5, 2, 128, 136, 0, 0, 2, 0,
                       bytes(32), bytes(28))  # fmt: skip
    head += struct.pack("<I", zlib.crc32(head))
    (root / "shard-00000.kdsa").write_bytes(head + bytes(8 + 20))
    with pytest.raises(kdmem.StaleIndexError, match=r"format version 1.*kdmem index") as e:
        Index(root)
    assert "\n" not in str(e.value)
    assert build_index(root)["built"] == 1
    assert Index(root).count([2, 3]) == 2
