"""Every input format yields the same documents as the oracle."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import zstandard
from shard_helpers import CORPUS, bpe_tokenizer, docs, encode, tree, write_jsonl

from kdmem.corpus import open_shards, shard_corpus

TEXTS = [t for t in CORPUS if "\n" not in t]


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".ndjson"])
def test_jsonl_variants(tmp_path: Path, suffix: str) -> None:
    raw = "".join(json.dumps({"text": t, "meta": {"n": 1}}) + "\n" for t in TEXTS).encode()
    raw += b"\n   \n"  # blank lines are skipped
    p = tmp_path / f"c{suffix}"
    if suffix.endswith(".gz"):
        p.write_bytes(gzip.compress(raw))
    elif suffix.endswith(".zst"):
        p.write_bytes(zstandard.ZstdCompressor().compress(raw))
    else:
        p.write_bytes(raw)
    res = shard_corpus([p], bpe_tokenizer(), tmp_path / "o")
    assert docs(tmp_path / "o") == encode(TEXTS)
    assert res.manifest["shards"][-1]["records_consumed"] == len(TEXTS) + 2


def test_txt_is_one_document_per_line_like_hf_text(tmp_path: Path) -> None:
    import datasets

    p = tmp_path / "c.txt"
    p.write_bytes(b"first line\r\n\nthird \xc3\xbc line\nlast without newline")
    shard_corpus([p], bpe_tokenizer(), tmp_path / "o")
    hf = datasets.load_dataset("text", data_files=str(p), split="train")["text"]
    assert docs(tmp_path / "o") == encode(hf)


def test_text_field_and_many_inputs_in_order(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", TEXTS[:3], field="body")
    b = write_jsonl(tmp_path / "b.jsonl", TEXTS[3:], field="body")
    shard_corpus([a, b], bpe_tokenizer(), tmp_path / "o", text_field="body")
    assert docs(tmp_path / "o") == encode(TEXTS)


def test_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": TEXTS, "x": list(range(len(TEXTS)))}), p, row_group_size=7)
    shard_corpus([p], bpe_tokenizer(), tmp_path / "o", batch_size=5, shard_tokens=50)
    assert docs(tmp_path / "o") == encode(TEXTS)
    # Same documents, same bytes as the native path on the same texts.
    j = write_jsonl(tmp_path / "c.jsonl", TEXTS)
    shard_corpus([j], bpe_tokenizer(), tmp_path / "n", shard_tokens=50)
    a, b = tree(tmp_path / "o"), tree(tmp_path / "n")
    assert {k: v for k, v in a.items() if k.endswith(".kdt")} == {
        k: v for k, v in b.items() if k.endswith(".kdt")
    }


def test_datasets_save_to_disk_and_streamed_load_dataset(tmp_path: Path) -> None:
    import datasets

    ds = datasets.Dataset.from_dict({"text": TEXTS})
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dd"))
    ds.save_to_disk(str(tmp_path / "d1"))
    for name in ("dd", "d1"):
        shard_corpus([tmp_path / name], bpe_tokenizer(), tmp_path / f"o{name}")
        assert docs(tmp_path / f"o{name}") == encode(TEXTS)
    # The hub path (load_dataset(..., streaming=True)) on a local folder of json files.
    hub = tmp_path / "hub"
    hub.mkdir()
    write_jsonl(hub / "part-0.jsonl", TEXTS[:10])
    res = shard_corpus([hub], bpe_tokenizer(), tmp_path / "oh", batch_size=4)
    assert res.n_docs == 10
    assert docs(tmp_path / "oh") == encode(TEXTS[:10])
    # The same through the hf:NAME[:CONFIG] spelling the experiment configs use.
    for spec, out in ((f"hf:{hub}", "ohf"), (f"hf:{hub}:default", "ohc")):
        shard_corpus([spec], bpe_tokenizer(), tmp_path / out, batch_size=4)
        assert docs(tmp_path / out) == encode(TEXTS[:10])


def interrupted_after_first_shard(full: Path, part: Path, min_shards: int) -> Path:
    """``part``: the state of ``full``'s run killed after its first shard was finished."""
    m = json.loads((full / "shards.json").read_text())
    assert len(m["shards"]) >= min_shards
    part.mkdir()
    (part / "shard-00000.kdt").write_bytes((full / "shard-00000.kdt").read_bytes())
    m["shards"], m["complete"] = m["shards"][:1], False
    (part / "shards.json").write_text(json.dumps(m))
    return part


def test_python_source_resume_skips_finished_records(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": TEXTS}), p)
    full = tmp_path / "full"
    shard_corpus([p], bpe_tokenizer(), full, shard_tokens=40, batch_size=3)
    want = tree(full)
    part = interrupted_after_first_shard(full, tmp_path / "part", min_shards=3)
    res = shard_corpus([p], bpe_tokenizer(), part, shard_tokens=40, batch_size=3)
    assert res.resumed_shards == 1
    assert open_shards(part).n_tokens == open_shards(full).n_tokens
    # The rewritten manifest is byte-identical too (same writer, same order).
    assert tree(part) == want


def test_max_documents_caps_streamed_sources(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kdmem.errors import InvalidArgumentError

    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(pa.table({"text": TEXTS[:9]}), a)
    pq.write_table(pa.table({"text": TEXTS[9:]}), b)
    # The cap counts records across inputs, in order, and cuts inside a batch.
    for cap in (4, 9, 13, len(TEXTS) + 5):
        out = tmp_path / f"cap{cap}"
        res = shard_corpus([a, b], bpe_tokenizer(), out, batch_size=5, max_documents=cap)
        assert docs(out) == encode(TEXTS[:cap]) and res.n_docs == min(cap, len(TEXTS))
    # A resumed capped run gives the same bytes as an uninterrupted one.
    full = tmp_path / "full"
    shard_corpus([a, b], bpe_tokenizer(), full, shard_tokens=30, batch_size=3, max_documents=13)
    want = tree(full)
    part = interrupted_after_first_shard(full, tmp_path / "part", min_shards=2)
    shard_corpus([a, b], bpe_tokenizer(), part, shard_tokens=30, batch_size=3, max_documents=13)
    assert tree(part) == want
    # Another cap is another run: it does not resume (or overwrite) this one.
    with pytest.raises(Exception, match="overwrite"):
        shard_corpus([a, b], bpe_tokenizer(), full, shard_tokens=30, max_documents=12)
    with pytest.raises(InvalidArgumentError, match="streamed sources"):
        shard_corpus(
            [write_jsonl(tmp_path / "c.jsonl", TEXTS)],
            bpe_tokenizer(),
            tmp_path / "j",
            max_documents=3,
        )
    with pytest.raises(InvalidArgumentError, match="positive"):
        shard_corpus([a], bpe_tokenizer(), tmp_path / "z", max_documents=0)
