"""Bad input: each error class, one line naming file:line and the fix, nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shard_helpers import CORPUS, bpe_tokenizer, docs, encode, wide_tokenizer, write_jsonl

from kdmem import cli
from kdmem.corpus import open_shards, shard_corpus
from kdmem.errors import (
    CorruptFileError,
    DiskFullError,
    EmptyCorpusError,
    FormatVersionError,
    InvalidArgumentError,
    InvalidUtf8Error,
    KdmemIOError,
    MalformedRecordError,
    MissingFieldError,
    TokenRangeError,
)


def _one_line(e: pytest.ExceptionInfo[BaseException]) -> str:
    s = str(e.value)
    assert "\n" not in s
    return s


def _nothing_written(out: Path) -> None:
    assert not out.exists() or [p.name for p in out.iterdir()] == []


def test_malformed_json_names_line_and_skip_bad_counts(tmp_path: Path) -> None:
    p = tmp_path / "c.jsonl"
    p.write_text('{"text": "ok"}\n{"text": broken\n[1, 2]\n{"text": "fine"}\n')
    with pytest.raises(MalformedRecordError) as e:
        shard_corpus([p], bpe_tokenizer(), tmp_path / "o")
    s = _one_line(e)
    assert f"{p}:2" in s and "--skip-bad" in s
    _nothing_written(tmp_path / "o")
    res = shard_corpus([p], bpe_tokenizer(), tmp_path / "o", skip_bad=True)
    assert (res.n_docs, res.skipped_bad) == (2, 2)
    assert docs(tmp_path / "o") == encode(["ok", "fine"])


def test_missing_field(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "c.jsonl", ["a", "b"], field="content")
    with pytest.raises(MissingFieldError) as e:
        shard_corpus([p], bpe_tokenizer(), tmp_path / "o")
    s = _one_line(e)
    assert f"{p}:1" in s and "--text-field" in s and "content" in s
    _nothing_written(tmp_path / "o")


def test_invalid_utf8(tmp_path: Path) -> None:
    p = tmp_path / "c.txt"
    p.write_bytes(b"good\nbad \xff\xfe here\n")
    with pytest.raises(InvalidUtf8Error) as e:
        shard_corpus([p], bpe_tokenizer(), tmp_path / "o")
    assert f"{p}:2" in _one_line(e) and "byte 4" in str(e.value)
    res = shard_corpus([p], bpe_tokenizer(), tmp_path / "o", skip_bad=True)
    assert res.skipped_bad == 1


def test_u16_overflow_suggests_u32_and_auto_picks_u32(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "c.jsonl", ["a small", "a big one"])
    with pytest.raises(TokenRangeError) as e:
        shard_corpus([p], wide_tokenizer(), tmp_path / "o", dtype="u16")
    s = _one_line(e)
    assert "70000" in s and "--dtype u32" in s and f"{p}:2" in s
    _nothing_written(tmp_path / "o")
    res = shard_corpus([p], wide_tokenizer(), tmp_path / "o")
    assert res.dtype == "u32" and res.eos_id is None
    assert docs(tmp_path / "o") == [[1, 2], [1, 70000, 0]]


def test_empty_corpus_and_unreadable_inputs(tmp_path: Path) -> None:
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(EmptyCorpusError) as e:
        shard_corpus([empty], bpe_tokenizer(), tmp_path / "o")
    assert str(empty) in _one_line(e)
    assert not (tmp_path / "o" / "shards.json").exists()
    with pytest.raises(KdmemIOError) as e:
        shard_corpus([tmp_path / "missing.jsonl"], bpe_tokenizer(), tmp_path / "o")
    assert "missing.jsonl" in _one_line(e)
    d = tmp_path / "dir.jsonl"
    d.mkdir()
    with pytest.raises(KdmemIOError):
        shard_corpus([d], bpe_tokenizer(), tmp_path / "o")
    with pytest.raises(InvalidArgumentError, match="cannot be mixed"):
        shard_corpus([empty, tmp_path / "x.parquet"], bpe_tokenizer(), tmp_path / "o")


def test_disk_full_through_the_test_hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Documented test hook: KDMEM_TEST_ENOSPC_AFTER_BYTES makes shard writes fail with ENOSPC.
    p = write_jsonl(tmp_path / "c.jsonl", CORPUS * 10)
    monkeypatch.setenv("KDMEM_TEST_ENOSPC_AFTER_BYTES", "300")
    with pytest.raises(DiskFullError) as e:
        shard_corpus([p], bpe_tokenizer(), tmp_path / "o", shard_tokens=300)
    assert "no space left" in _one_line(e) and "rerun" in str(e.value)
    assert not list((tmp_path / "o").glob("*.tmp"))
    monkeypatch.delenv("KDMEM_TEST_ENOSPC_AFTER_BYTES")
    res = shard_corpus([p], bpe_tokenizer(), tmp_path / "o", shard_tokens=300)
    assert res.n_docs == len(CORPUS) * 10


def test_changed_config_refuses_to_mix_outputs(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "c.jsonl", CORPUS)
    shard_corpus([p], bpe_tokenizer(), tmp_path / "o")
    with pytest.raises(InvalidArgumentError) as e:
        shard_corpus([p], bpe_tokenizer(), tmp_path / "o", eos="none")
    assert "--overwrite" in _one_line(e) and "--out" in str(e.value)
    res = shard_corpus([p], bpe_tokenizer(), tmp_path / "o", eos="none", overwrite=True)
    assert res.eos_id is None


def test_open_shards_detects_corruption_and_truncation(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "c.jsonl", CORPUS)
    out = tmp_path / "o"
    shard_corpus([p], bpe_tokenizer(), out)
    f = out / "shard-00000.kdt"
    good = f.read_bytes()
    b = bytearray(good)
    b[200] ^= 1  # a token byte: only the data checksum sees it
    f.write_bytes(bytes(b))
    open_shards(out)  # cheap open does not read the data
    with pytest.raises(CorruptFileError, match="data checksum"):
        open_shards(out, verify=True)
    f.write_bytes(good[:-3])
    with pytest.raises(CorruptFileError, match="bytes"):
        open_shards(out)
    b = bytearray(good)
    b[20] ^= 1  # header field: header CRC
    f.write_bytes(bytes(b))
    with pytest.raises(CorruptFileError, match="header checksum"):
        open_shards(out)
    b = bytearray(good)
    b[8] = 2  # version 2, with a fixed-up header CRC
    import struct
    import zlib

    b[124:128] = struct.pack("<I", zlib.crc32(bytes(b[:124])))
    f.write_bytes(bytes(b))
    with pytest.raises(FormatVersionError):
        open_shards(out)
    f.write_bytes(good)
    m = json.loads((out / "shards.json").read_text())
    m["complete"] = False
    (out / "shards.json").write_text(json.dumps(m))
    with pytest.raises(CorruptFileError, match="rerun"):
        open_shards(out)


def test_open_shards_works_without_the_extension(tmp_path: Path) -> None:
    import subprocess
    import sys

    p = write_jsonl(tmp_path / "c.jsonl", CORPUS[:4])
    shard_corpus([p], bpe_tokenizer(), tmp_path / "o")
    code = (
        "import sys; sys.modules['kdmem._core'] = None\n"
        "from kdmem.corpus import open_shards\n"
        f"ss = open_shards({str(tmp_path / 'o')!r}, verify=True)\n"
        "print(len(ss), [d.tolist() for d in ss][0])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.split()[0] == "4"


def test_cli_shard_and_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write_jsonl(tmp_path / "c.jsonl", CORPUS)
    rc = cli.run(
        ["shard", str(p), "--tokenizer", str(bpe_tokenizer()), "--out", str(tmp_path / "o")]
    )
    assert rc == 0
    assert f"{len(CORPUS)} documents" in capsys.readouterr().out
    bad = tmp_path / "b.jsonl"
    bad.write_text("{nope\n")
    rc = cli.run(
        ["shard", str(bad), "--tokenizer", str(bpe_tokenizer()), "--out", str(tmp_path / "b")]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and f"{bad}:1" in err and "--skip-bad" in err
    assert open_shards(tmp_path / "o")[0].tolist() == encode(CORPUS[:1])[0]


def test_disk_full_on_a_real_tiny_tmpfs(tmp_path: Path) -> None:
    import os
    import subprocess

    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mnt)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("needs root and tmpfs to make a 1 MB filesystem")
    try:
        p = write_jsonl(tmp_path / "c.jsonl", ["hello world " * 200] * 2000)
        with pytest.raises(DiskFullError) as e:
            shard_corpus([p], bpe_tokenizer(), mnt / "o", shard_tokens=200_000)
        assert str(mnt / "o") in _one_line(e)
        left = sorted(q.name for q in (mnt / "o").iterdir())
        assert not [n for n in left if ".tmp" in n], left
        # Whatever finished is intact and resumable; the manifest says the run is unfinished.
        for n in left:
            if n.endswith(".kdt"):
                open_shards(mnt / "o" / n, verify=True)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)  # lazy: a mapped file may hold it
