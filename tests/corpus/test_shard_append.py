"""``kdmem shard --append``: new documents as new shards (ids continue, the old set intact
until the commit, even under kill -9), ``kdmem index`` builds only the new shards, and
``kdmem featurize`` / ``kdmem scan`` reuse the stored parts of unchanged shards with output
identical to a full rerun. Plus ``--memory``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from shard_helpers import CORPUS, bpe_tokenizer, docs, encode, word_corpus, write_jsonl

from kdmem.cli import run
from kdmem.corpus import open_shards, shard_corpus
from kdmem.corpus.featurize import featurize
from kdmem.corpus.index import build_index
from kdmem.corpus.scan import scan
from kdmem.errors import InvalidArgumentError, TokenizerMismatchError
from kdmem.lock import LOCK_NAME

WORDS = [f"w{i}" for i in range(12)]


def files(d: Path) -> dict[str, bytes]:
    """Name -> bytes of the regular files directly in ``d`` (not the writer's lock file, which
    a killed writer leaves behind, unlocked: kdmem.lock)."""
    return {
        p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file() and p.name != LOCK_NAME
    }


def mtimes(d: Path, pattern: str) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(d.glob(pattern))}


def test_append_then_index_featurize_and_scan_equal_a_full_rerun(tmp_path: Path) -> None:
    d = tmp_path
    rng = word_corpus(
        d, n_docs=40, planted_len=12, planted_every=6, vocab_cycle=9, max_words=30, shard_tokens=300
    )
    shards, tok = d / "shards", d / "tokenizer.json"
    before = open_shards(shards)
    old_docs = [before[i].tolist() for i in range(len(before))]
    n_old = len(before.shards)
    planted = old_docs[0][-12:]
    build_index(shards, threads=2)

    # Examples and generations that will also occur in the appended documents.
    windows = [old_docs[i][:10] for i in range(0, 40, 4) if len(old_docs[i]) >= 10]
    windows.append([int(x) for x in rng.integers(1, 13, 10)])
    ex = d / "ex.jsonl"
    ex.write_text("".join(json.dumps({"input_ids": r}) + "\n" for r in windows))
    gens = d / "gens.jsonl"
    gens.write_text(
        "".join(
            json.dumps({"input_ids": r}) + "\n"
            for r in [[*planted, 3, 4, 5, *old_docs[5][:8]], old_docs[11][:14], [1, 2] * 9]
        )
    )
    opts = dict(prefix=4, suffix=6, ngram=(2, 5), tokenizer=str(tok), threads=2)
    featurize(ex, shards, d / "f.parquet", **opts)
    scan(gens, shards, d / "s.parquet", min_len=3, max_locations=3)
    counts_before = pq.read_table(d / "s.parquet").column("count").to_numpy()
    parts = d / "f.parquet.parts"
    old_parts = mtimes(parts, "*.parquet")
    assert len(old_parts) == 1

    # Append: new documents that repeat the planted span and the examples' windows.
    new_texts = [" ".join(WORDS[w - 1] for w in (windows[i % 4] + planted)) for i in range(30)] + [
        " ".join(rng.choice(WORDS, 20)) for _ in range(10)
    ]
    b = write_jsonl(d / "b.jsonl", new_texts)
    old_files = files(shards)
    args = ["shard", str(b), "--tokenizer", str(tok), "--out", str(shards), "--eos", "none"]
    assert run([*args, "--shard-tokens", "300", "--append"]) == 0
    after = open_shards(shards)
    m = after.manifest
    assert len(after.shards) > n_old and m["appends"][0]["first_shard"] == n_old
    assert [after[i].tolist() for i in range(len(after))] == old_docs + encode(
        new_texts, eos=False, tokenizer=tok
    )
    for name, data in old_files.items():
        if name != "shards.json":
            assert (shards / name).read_bytes() == data, name
    # Rerunning the append adds nothing.
    manifest_bytes = (shards / "shards.json").read_bytes()
    assert run([*args, "--shard-tokens", "300", "--append"]) == 0
    assert (shards / "shards.json").read_bytes() == manifest_bytes

    # kdmem index builds only the new shards.
    sa_before = mtimes(shards, "*.kdsa")
    report = build_index(shards, threads=2)
    assert (report["built"], report["skipped"]) == (len(after.shards) - n_old, n_old)
    assert {k: v for k, v in mtimes(shards, "*.kdsa").items() if k in sa_before} == sa_before

    # featurize / scan: only the new shards are queried; output equals a full rerun.
    featurize(ex, shards, d / "f.parquet", **opts)
    now = mtimes(parts, "*.parquet")
    assert {k: now[k] for k in old_parts} == old_parts and len(now) == 2
    featurize(ex, shards, d / "f_full.parquet", cache=False, **opts)
    assert not (d / "f_full.parquet.parts").exists()
    fa, fb = pq.read_table(d / "f.parquet"), pq.read_table(d / "f_full.parquet")
    assert fa.equals(fb) and fa.schema.metadata == fb.schema.metadata
    assert (
        fa.column("window_count").to_numpy().sum() > pq.read_table(d / "f_full.parquet").num_rows
    )  # the appended copies are counted

    scan(gens, shards, d / "s.parquet", min_len=3, max_locations=3)
    scan(gens, shards, d / "s_full.parquet", min_len=3, max_locations=3, cache=False)
    sa, sb = pq.read_table(d / "s.parquet"), pq.read_table(d / "s_full.parquet")
    assert sa.num_rows > 0 and sa.equals(sb) and sa.schema.metadata == sb.schema.metadata
    # The spans occur in the new shards too.
    assert sa.column("count").to_numpy()[0] > counts_before[0]
    # Nothing changed: every stored part is reused, none rewritten.
    stored = mtimes(d / "s.parquet.parts", "*.parquet")
    scan(gens, shards, d / "s.parquet", min_len=3, max_locations=3)
    assert mtimes(d / "s.parquet.parts", "*.parquet") == stored
    assert pq.read_table(d / "s.parquet").equals(sb)


def test_appending_another_tokenizer_or_dtype_names_both(tmp_path: Path) -> None:
    base = tmp_path / "set"
    shard_corpus([write_jsonl(tmp_path / "a.jsonl", CORPUS[:10])], bpe_tokenizer(), base)
    src = write_jsonl(tmp_path / "b.jsonl", CORPUS[10:])
    other = tmp_path / "other.json"
    spec = json.loads(bpe_tokenizer().read_text())
    spec["model"]["vocab"]["zzz-new-token"] = max(spec["model"]["vocab"].values()) + 100
    other.write_text(json.dumps(spec))
    want = json.loads((base / "shards.json").read_text())["tokenizer_hash"]
    with pytest.raises(TokenizerMismatchError) as e:
        shard_corpus([src], other, base, append=True)
    msg = str(e.value)
    assert "\n" not in msg and want in msg
    with pytest.raises(InvalidArgumentError) as e:
        shard_corpus([src], bpe_tokenizer(), base, append=True, dtype="u32")
    msg = str(e.value)
    assert "\n" not in msg and "dtype u16" in msg and "u32" in msg
    with pytest.raises(InvalidArgumentError, match="no shard set to append to"):
        shard_corpus([src], bpe_tokenizer(), tmp_path / "empty", append=True)
    assert docs(base) == encode(CORPUS[:10])  # untouched


def test_a_killed_append_leaves_the_old_set_intact_and_resumes(tmp_path: Path) -> None:
    """kill -9 of a `kdmem shard --append` subprocess half-way: the set reads as before;
    rerunning the append finishes it with the bytes of an uninterrupted append."""
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "kappa", "omega", "12", "!", "Ünï"]
    big = [" ".join(rng.choice(words, 60)) for _ in range(4_000)]
    a = write_jsonl(tmp_path / "a.jsonl", CORPUS)
    b = write_jsonl(tmp_path / "b.jsonl", big)
    tok = bpe_tokenizer()
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    for out in (killed, ref):
        shard_corpus([a], tok, out, shard_tokens=10_000)
    shard_corpus([b], tok, ref, shard_tokens=10_000, append=True, threads=1)
    old = files(killed)
    old_docs = docs(killed)

    cmd = [sys.executable, "-m", "kdmem", "shard", str(b), "--tokenizer", str(tok)]
    cmd += ["--out", str(killed), "--shard-tokens", "10000", "--append", "--threads", "1"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staging = killed / ".kdmem-append"
    deadline = time.monotonic() + 120
    while len(list(staging.glob("*.kdt"))) < 2:
        assert p.poll() is None, "the append ended before it could be killed"
        assert time.monotonic() < deadline, "no staged shard after 120 s"
        time.sleep(0.005)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL
    assert files(killed) == old  # manifest and shard files as they were
    assert docs(killed) == old_docs
    assert json.loads((killed / "shards.json").read_text())["complete"]

    res = shard_corpus([b], tok, killed, shard_tokens=10_000, append=True, threads=2)
    assert res.resumed_shards >= 1 and res.appended_shards > 2
    assert files(killed) == files(ref)
    assert not staging.exists()


def test_memory_sizes_shards_and_small_budgets_name_the_minimum(tmp_path: Path) -> None:
    from kdmem import _core

    src = write_jsonl(tmp_path / "c.jsonl", CORPUS)
    res = shard_corpus([src], bpe_tokenizer(), tmp_path / "o", memory="1GB", threads=2)
    # u16 shards: (1 GB - 64 MiB fixed) / 6.5 bytes per token, at most 2^30.
    assert res.memory == 1_000_000_000
    assert res.shard_tokens == int((1_000_000_000 - (64 << 20)) / 6.5)
    assert _core.parse_size("512MiB") == 512 << 20
    assert _core.default_memory() > 0
    with pytest.raises(InvalidArgumentError) as e:
        shard_corpus([src], bpe_tokenizer(), tmp_path / "p", memory="50MB", threads=2)
    msg = str(e.value)
    assert "\n" not in msg and "needs at least" in msg and "--memory" in msg
    with pytest.raises(InvalidArgumentError, match="--shard-tokens"):
        shard_corpus([src], bpe_tokenizer(), tmp_path / "q", memory="1GB", shard_tokens=1 << 30)
    assert (
        run(
            [
                "shard",
                str(src),
                "--tokenizer",
                str(bpe_tokenizer()),
                "--out",
                str(tmp_path / "r"),
                "--memory",
                "2GB",
            ]
        )
        == 0
    )


@pytest.mark.slow
def test_a_document_too_big_for_the_budget_names_the_minimum(tmp_path: Path) -> None:
    """A single document whose shard could not be indexed within --memory (about 10M tokens
    at the smallest budget the writer accepts)."""
    huge = " ".join(["alpha beta"] * 6_000_000)
    src = write_jsonl(tmp_path / "c.jsonl", ["small document", huge])
    with pytest.raises(InvalidArgumentError) as e:
        shard_corpus([src], bpe_tokenizer(), tmp_path / "o", memory="140MB", threads=1)
    msg = str(e.value)
    assert "\n" not in msg and ":2 has" in msg and "pass --memory" in msg
    shutil.rmtree(tmp_path / "o", ignore_errors=True)


def test_append_from_a_python_read_source(tmp_path: Path) -> None:
    """Parquet (read in Python, fed to the Rust writer) appends like a native file."""
    import pyarrow as pa

    base = tmp_path / "set"
    shard_corpus([write_jsonl(tmp_path / "a.jsonl", CORPUS[:10])], bpe_tokenizer(), base)
    p = tmp_path / "b.parquet"
    pq.write_table(pa.table({"text": CORPUS[10:]}), p)
    res = shard_corpus([p], bpe_tokenizer(), base, append=True, shard_tokens=60)
    assert res.appended_shards > 1 and res.encoder == "kdmem-bpe"
    assert docs(base) == encode(CORPUS)
    again = shard_corpus([p], bpe_tokenizer(), base, append=True, shard_tokens=60)
    assert again.appended_shards == 0 and docs(base) == encode(CORPUS)
