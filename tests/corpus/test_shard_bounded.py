"""Bounded memory for any input and one writer at a time (issue 16): documents over
``--max-doc-bytes`` are tokenized in pieces with the same ids (byte-level BPE), counted in the
manifest and the summary; a second ``kdmem shard`` into a directory being written is refused
with the holder's pid."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from shard_helpers import CORPUS, bpe_tokenizer, docs, encode, write_jsonl

from kdmem.cli import main
from kdmem.corpus import shard_corpus
from kdmem.errors import InvalidArgumentError, LockedError


def _long_text(n_words: int) -> str:
    words = " ".join(CORPUS).split()
    return " ".join(words[i % len(words)] for i in range(n_words))


@pytest.mark.parametrize("encoder", ["auto", "tokenizers"])
def test_long_documents_are_tokenized_in_pieces_with_the_same_ids(
    tmp_path: Path, encoder: str
) -> None:
    """Oracle: the Python tokenizer on each whole document. With a 1,000-byte cap the long
    documents are cut into dozens of pieces, yet give the whole document's ids."""
    texts = [_long_text(4000), "a short one", _long_text(900) + "  double  spaces\n\nand lines"]
    src = write_jsonl(tmp_path / "c.jsonl", texts)
    res = shard_corpus([src], bpe_tokenizer(), tmp_path / "s", max_doc_bytes=1000, encoder=encoder)
    assert docs(tmp_path / "s") == encode(texts)
    assert res.long_docs_split == 2  # the short one is not split
    assert json.loads((tmp_path / "s" / "shards.json").read_text())["long_docs_split"] == 2
    # The same documents without the cap (the default is far above them): nothing split and
    # the manifest has no such key (earlier manifests keep their bytes).
    plain = shard_corpus([src], bpe_tokenizer(), tmp_path / "p", encoder=encoder)
    assert plain.long_docs_split == 0 and docs(tmp_path / "p") == docs(tmp_path / "s")
    assert "long_docs_split" not in json.loads((tmp_path / "p" / "shards.json").read_text())


def test_the_summary_counts_split_documents_and_bad_caps_are_refused(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "c.jsonl", [_long_text(2000), "short"])
    out = tmp_path / "s"
    args = ["shard", str(src), "--tokenizer", str(bpe_tokenizer()), "--out", str(out)]
    r = CliRunner().invoke(main, [*args, "--max-doc-bytes", "2KB"])
    assert r.exit_code == 0, r.output
    assert "1 document(s) over --max-doc-bytes tokenized in pieces" in r.output
    with pytest.raises(InvalidArgumentError, match="max_doc_bytes"):
        shard_corpus([src], bpe_tokenizer(), tmp_path / "t", max_doc_bytes=2)


def test_a_second_shard_writer_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    from tests.lock_holder import holder, stop

    out = tmp_path / "s"
    proc = holder(out)
    try:
        src = write_jsonl(tmp_path / "c.jsonl", CORPUS)
        with pytest.raises(LockedError) as e:
            shard_corpus([src], bpe_tokenizer(), out)
        assert f"pid {proc.pid}" in str(e.value) and "\n" not in str(e.value)
        assert not (out / "shards.json").exists()
    finally:
        stop(proc)
    # The holder is gone: the same call now writes the set.
    assert shard_corpus([src], bpe_tokenizer(), out).n_docs == len(CORPUS)
    assert not (out / ".kdmem.lock").exists()


RSS_CHILD = """
import sys
from kdmem.corpus import shard_corpus
res = shard_corpus([sys.argv[1]], sys.argv[2], sys.argv[3], threads=2)
# VmHWM: this process's own peak (ru_maxrss would count the forking pytest process's memory)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(res.n_tokens, res.long_docs_split, int(hwm.split()[1]))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for VmHWM")
def test_a_200_mb_line_shards_in_under_1_gb(tmp_path: Path) -> None:
    """The issue's probe: one 200 MB JSONL line drove kdmem shard to 23.5 GB RSS. Split at
    the default cap it shards within 1 GB (peak RSS of the child process)."""
    text = _long_text(40_000_000)[: 200 * 10**6]
    src = tmp_path / "huge.jsonl"
    with open(src, "w", encoding="utf-8") as f:
        f.write(json.dumps({"text": text}) + "\n")
        f.write(json.dumps({"text": "and a short document after it"}) + "\n")
    del text
    r = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, str(src), str(bpe_tokenizer()), str(tmp_path / "s")],
        capture_output=True,
        text=True,
        check=True,
    )
    n_tokens, split, peak_kib = (int(x) for x in r.stdout.split())  # the child's own peak
    assert split == 1 and n_tokens > 10**6
    assert peak_kib < 1 << 20, f"peak RSS {peak_kib / 1024:.0f} MiB"
