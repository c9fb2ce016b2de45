"""Importers checked against the original token arrays."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from shard_helpers import bpe_tokenizer, docs

from kdmem import cli
from kdmem.corpus import open_shards
from kdmem.corpus.importers import import_datatrove, import_megatron, import_npy
from kdmem.errors import CorruptFileError, TokenRangeError
from kdmem.identity import tokenizer_hash

RNG = np.random.default_rng(0)
DOCS = [RNG.integers(0, 50_000, size=int(n)).tolist() for n in RNG.integers(0, 40, size=60)]


def _write_megatron(prefix: Path, documents: list[list[int]], code: int, dtype: str) -> None:
    """Megatron-LM MMIDIDX writer (indexed_dataset.py), one sequence per document."""
    with open(f"{prefix}.bin", "wb") as f:
        for d in documents:
            f.write(np.asarray(d, dtype=dtype).tobytes())
    sizes = np.array([len(d) for d in documents], dtype=np.int32)
    pointers = (
        np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64) * np.dtype(dtype).itemsize
    )
    doc_idx = np.arange(len(documents) + 1, dtype=np.int64)
    with open(f"{prefix}.idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00")
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<B", code))
        f.write(struct.pack("<Q", len(sizes)))
        f.write(struct.pack("<Q", len(doc_idx)))
        f.write(sizes.tobytes())
        f.write(pointers.tobytes())
        f.write(doc_idx.tobytes())


@pytest.mark.parametrize(("code", "dtype"), [(8, "<u2"), (4, "<i4")])
def test_megatron(tmp_path: Path, code: int, dtype: str) -> None:
    _write_megatron(tmp_path / "ds_text_document", DOCS, code, dtype)
    res = import_megatron(
        tmp_path / "ds_text_document", tmp_path / "o", shard_tokens=300, chunk_tokens=97
    )
    assert docs(tmp_path / "o") == DOCS
    assert res.tokenizer_hash == "0" * 64 and res.n_shards > 1
    assert res.dtype == ("u16" if code == 8 else "u32")


def test_megatron_documents_of_several_sequences(tmp_path: Path) -> None:
    # Sequences 0-1 form document 0, 2 is document 1, 3-5 document 2.
    seqs = DOCS[:6]
    _write_megatron(tmp_path / "m", seqs, 8, "<u2")
    raw = bytearray((tmp_path / "m.idx").read_bytes())
    head = 9 + 8 + 1
    n_seq = struct.unpack_from("<Q", raw, head)[0]
    doc_idx = np.array([0, 2, 3, 6], dtype=np.int64)
    body = raw[head + 16 : head + 16 + n_seq * 12]
    raw = raw[:head] + struct.pack("<QQ", n_seq, len(doc_idx)) + body + doc_idx.tobytes()
    (tmp_path / "m.idx").write_bytes(bytes(raw))
    import_megatron(tmp_path / "m", tmp_path / "o")
    assert docs(tmp_path / "o") == [seqs[0] + seqs[1], seqs[2], seqs[3] + seqs[4] + seqs[5]]


def test_megatron_bad_index(tmp_path: Path) -> None:
    (tmp_path / "x.idx").write_bytes(b"NOPE" * 10)
    (tmp_path / "x.bin").write_bytes(b"")
    with pytest.raises(CorruptFileError, match="magic"):
        import_megatron(tmp_path / "x", tmp_path / "o")


def test_datatrove(tmp_path: Path) -> None:
    from datatrove.pipeline.tokens.tokenizer import TokenizedFile

    for k, part in enumerate([DOCS[:30], DOCS[30:]]):
        f = TokenizedFile(str(tmp_path), f"{k:03d}.ds", token_size=2)
        for d in part:
            f.write(d, None)
        f.close()
    paths = [tmp_path / "000.ds", tmp_path / "001.ds"]
    res = import_datatrove(paths, tmp_path / "o", tokenizer=bpe_tokenizer(), chunk_tokens=50)
    assert docs(tmp_path / "o") == DOCS
    assert res.tokenizer_hash == tokenizer_hash(bpe_tokenizer())
    assert res.dtype == "u16"


def test_npy_layouts(tmp_path: Path) -> None:
    flat = np.concatenate([np.asarray(d, dtype=np.int64) for d in DOCS])
    offsets = np.concatenate(([0], np.cumsum([len(d) for d in DOCS]))).astype(np.int64)
    np.save(tmp_path / "t.npy", flat)
    np.save(tmp_path / "o.npy", offsets)
    import_npy([tmp_path / "t.npy"], tmp_path / "a", offsets=tmp_path / "o.npy", eos_id=7)
    assert docs(tmp_path / "a") == DOCS
    assert open_shards(tmp_path / "a").eos_id == 7
    # Split after an id, like an EOS.
    with_eos = [[*d, 60_000] for d in DOCS]
    np.save(tmp_path / "e.npy", np.concatenate([np.asarray(d, dtype=np.uint32) for d in with_eos]))
    import_npy([tmp_path / "e.npy"], tmp_path / "b", split_on=60_000, dtype="u16")
    assert docs(tmp_path / "b") == with_eos
    # 2-D: one document per row (a study set).
    grid = RNG.integers(0, 100_000, size=(9, 16)).astype(np.int32)
    np.save(tmp_path / "g.npy", grid)
    res = import_npy([tmp_path / "g.npy"], tmp_path / "c")
    assert res.dtype == "u32" and docs(tmp_path / "c") == grid.tolist()
    with pytest.raises(TokenRangeError, match="u32"):
        import_npy([tmp_path / "g.npy"], tmp_path / "d", dtype="u16")
    np.save(tmp_path / "neg.npy", np.array([1, -2, 3]))
    with pytest.raises(TokenRangeError, match="-2"):
        import_npy([tmp_path / "neg.npy"], tmp_path / "n")


def test_cli_import(tmp_path: Path) -> None:
    _write_megatron(tmp_path / "m", DOCS, 8, "<u2")
    assert cli.run(["import", "megatron", str(tmp_path / "m"), "--out", str(tmp_path / "o")]) == 0
    assert docs(tmp_path / "o") == DOCS
    np.save(tmp_path / "g.npy", np.arange(12, dtype=np.uint16).reshape(3, 4))
    assert cli.run(["import", "npy", str(tmp_path / "g.npy"), "--out", str(tmp_path / "n")]) == 0
    assert docs(tmp_path / "n") == np.arange(12).reshape(3, 4).tolist()
