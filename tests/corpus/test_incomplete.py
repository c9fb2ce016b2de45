"""Incomplete is never complete (issue 16): a shard set whose `kdmem shard` run did not finish,
or whose files are not the ones its manifest lists, is refused by every reader (index build,
Index, featurize with --index, open_shards) with one line saying to rerun `kdmem shard`.
Before, `kdmem index`, `featurize --index` and `kdmem.Index` went ahead on the finished
shards without a word."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from shard_helpers import CORPUS, bpe_tokenizer, write_jsonl

from kdmem import Index
from kdmem.corpus import open_shards, shard_corpus
from kdmem.corpus.featurize import featurize
from kdmem.corpus.index import build_index
from kdmem.errors import IncompleteShardSetError


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    src = write_jsonl(tmp_path / "c.jsonl", CORPUS * 4)
    res = shard_corpus([src], bpe_tokenizer(), tmp_path / "s", shard_tokens=200)
    assert res.n_shards >= 3
    return tmp_path / "s"


def _readers(d: Path, tmp: Path) -> list[object]:
    """Call every reader of the set; return the exceptions they raised (None: it read)."""
    out: list[object] = []
    ex = tmp / "ex.jsonl"
    ex.write_text(json.dumps({"example_id": 0, "input_ids": list(range(1, 12))}) + "\n")
    for call in (
        lambda: build_index(d, threads=1),
        lambda: Index(d),
        lambda: featurize(
            ex, d, tmp / "f.parquet", prefix=4, suffix=6, tokenizer=str(bpe_tokenizer())
        ),
        lambda: open_shards(d),
    ):
        try:
            call()
            out.append(None)
        except IncompleteShardSetError as e:
            out.append(e)
    return out


def test_an_unfinished_shard_set_is_refused_by_every_reader(shards: Path, tmp_path: Path) -> None:
    build_index(shards, threads=1)
    m = json.loads((shards / "shards.json").read_text())
    m["complete"] = False  # what a killed `kdmem shard` leaves (its finished shards listed)
    m["shards"] = m["shards"][:2]
    for extra in sorted(shards.glob("shard-*.kdt"))[2:]:
        extra.unlink()
    (shards / "shards.json").write_text(json.dumps(m))
    errors = _readers(shards, tmp_path)
    assert all(e is not None for e in errors), errors
    for e in errors:
        msg = str(e)
        assert "\n" not in msg and "kdmem shard" in msg and str(shards) in msg


def test_shard_files_the_manifest_does_not_list_are_refused(shards: Path, tmp_path: Path) -> None:
    build_index(shards, threads=1)
    shutil.copy(shards / "shard-00000.kdt", shards / "shard-00099.kdt")
    e = _readers(shards, tmp_path)[0]
    assert isinstance(e, IncompleteShardSetError) and "shards.json lists" in str(e)


def test_stale_index_temps_of_dead_writers_are_removed(shards: Path) -> None:
    """A killed `kdmem index` leaves `.NAME.tmp-PID`; the next build removes the ones whose
    writer is gone (and keeps a live writer's)."""
    import os
    import subprocess
    import sys

    from kdmem.corpus.index import remove_stale_temps

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = shards / f".shard-00000.kdsa.tmp-{dead.pid}"
    live = shards / f".shard-00001.kdsa.tmp-{os.getpid()}"
    fresh = shards / f".shard-00002.kdsa.tmp-{dead.pid}"
    for p in (stale, live, fresh):
        p.write_bytes(b"partial")
    old = os.stat(stale).st_mtime - 3600
    os.utime(stale, (old, old))
    os.utime(live, (old, old))
    # fresh: a dead pid here but written just now (a writer on another host): kept
    assert remove_stale_temps(shards) == [stale]
    assert live.exists() and fresh.exists() and not stale.exists()
    fresh.unlink()
    live.unlink()
    build_index(shards, threads=1)  # and a whole build runs the same cleanup under its lock


def test_a_second_index_writer_is_refused(shards: Path) -> None:
    from tests.lock_holder import holder, stop

    from kdmem.errors import LockedError

    proc = holder(shards)
    try:
        with pytest.raises(LockedError, match=f"pid {proc.pid}"):
            build_index(shards, threads=1)
    finally:
        stop(proc)
    build_index(shards, threads=1)


@pytest.mark.parametrize("target", ["shard-00001.kdt", "shard-00000.kdsa"])
def test_a_flipped_byte_is_caught_before_the_next_answer(shards: Path, target: str) -> None:
    """Regression (issue 16): one flipped byte in a shard's token area or a suffix array
    changed count/locate answers and `kdmem index` said "up to date". Now the verified stamp
    no longer matches the file, the next open verifies in full and fails with one line."""
    from kdmem.corpus.verified import STAMP
    from kdmem.errors import CorruptFileError, StaleIndexError

    rep = build_index(shards, threads=1)
    assert rep["verified"] is True and (shards / STAMP).exists()
    assert build_index(shards, threads=1)["verified"] is False  # stat only
    Index(shards)  # stat only: the stamp matches
    units = sorted(p.name for p in shards.glob("*.kdsa"))
    name = target if target.endswith(".kdt") else units[0]
    p = shards / name
    data = bytearray(p.read_bytes())
    i = 200 if name.endswith(".kdt") else len(data) // 2  # past the 128-byte header
    data[i] ^= 0x01
    p.write_bytes(bytes(data))
    for call in (lambda: Index(shards), lambda: build_index(shards, threads=1)):
        with pytest.raises((CorruptFileError, StaleIndexError)) as e:
            call()
        assert "\n" not in str(e.value) and name in str(e.value)


def test_index_on_a_full_disk_fails_in_one_line_and_finishes_identically(
    shards: Path, tmp_path: Path
) -> None:
    """A full disk (a real 1 MB tmpfs, where permitted): `kdmem index` fails with one line
    naming the file, publishes no unit file, and after space is freed the rerun writes the
    same bytes as a build on a roomy disk."""
    from tests.full_disk import full_tmpfs

    from kdmem.errors import DiskFullError

    def copy(mnt: Path) -> object:
        return shutil.copytree(shards, mnt / "s", ignore=shutil.ignore_patterns("*.kdsa", ".kdm*"))

    with full_tmpfs(tmp_path, give_back=16_384, prepare=copy) as (mnt, filler):
        d = mnt / "s"
        with pytest.raises(DiskFullError) as e:
            build_index(d, threads=1)
        assert "\n" not in str(e.value) and str(d) in str(e.value)
        left = sorted(p.name for p in d.iterdir())
        assert not [n for n in left if n.endswith(".kdsa") or ".tmp" in n], left
        filler.unlink()
        build_index(d, threads=1)
        ref = tmp_path / "ref"
        shutil.copytree(shards, ref, ignore=shutil.ignore_patterns("*.kdsa", ".kdmem*"))
        build_index(ref, threads=1)
        got = {p.name: p.read_bytes() for p in d.glob("*.kdsa")}
        assert got and got == {p.name: p.read_bytes() for p in ref.glob("*.kdsa")}


_VERIFY_RSS = """
import sys
from kdmem import _core

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise SystemExit("no " + key)

with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS
    f.write("5")
before = status("VmRSS:")
_core.verify_index(sys.argv[1], 1)
print(status("VmHWM:") - before)
"""


def test_verifying_an_index_does_not_map_its_files_into_memory(tmp_path: Path) -> None:
    """A verification reads every byte of the shards and suffix arrays; it must not leave
    them resident in the process (a mapped read did: `kdmem index` on 2B tokens peaked at
    17.9 GB RSS under an 8 GB budget, all of it the index files the stamp verified)."""
    import subprocess
    import sys

    import numpy as np

    from kdmem.corpus.importers import import_npy

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    rng = np.random.default_rng(0)
    n = 6_000_000  # 12 MB of u16 tokens, ~55 MB of shard + suffix array files
    np.save(tmp_path / "t.npy", rng.integers(0, 30_000, n, dtype=np.uint16))
    np.save(tmp_path / "o.npy", np.arange(0, n + 1, 1000, dtype=np.int64))
    d = tmp_path / "shards"
    import_npy([tmp_path / "t.npy"], d, offsets=tmp_path / "o.npy", dtype="u16")
    build_index(d, threads=1)
    files = sum(p.stat().st_size for p in d.iterdir() if p.suffix in (".kdt", ".kdsa"))
    r = subprocess.run([sys.executable, "-c", _VERIFY_RSS, str(d)],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    if r.returncode != 0 and "clear_refs" in r.stderr:
        pytest.skip(f"cannot reset the peak RSS here: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr
    grew = int(r.stdout)
    assert files > 50e6
    assert grew < 0.1 * files, f"verification grew RSS by {grew:,} B for {files:,} B of files"
