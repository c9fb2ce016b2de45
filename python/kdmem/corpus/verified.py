"""Corruption is caught before it answers: a verified stamp per shard directory.

Opening an index checks headers and sizes (cheap) but not the data checksums, which cost one
read of every byte. So that a damaged or modified file is never used without a word, the
first open of a directory (and ``kdmem index`` before it says "up to date") verifies every
checksum of the shards, the suffix arrays and the manifest, then writes a stamp
(``.kdmem-verified.json``) recording each file's size, modification time and inode. Later
opens compare those with ``stat`` (microseconds per file) and verify again, in full, whenever
any of them differs: a file rewritten, truncated, replaced, copied over or touched since.

What the stamp cannot see: a change that keeps size, mtime and inode (bit rot on the disk, or
a writer that restores the mtime). ``kdmem index --verify`` / ``Index.verify()`` checks every
byte regardless. A directory the user may not write to is verified on every open.
"""

from __future__ import annotations

import contextlib
import json
from os import PathLike
from pathlib import Path

from kdmem import _core
from kdmem.atomic import write_json_atomic

__all__ = ["STAMP", "ensure_verified", "fingerprint"]

STAMP = ".kdmem-verified.json"
_FORMAT = "kdmem-verified"


def fingerprint(shards_dir: Path) -> dict[str, list[int]]:
    """``{file name: [size, mtime_ns, inode]}`` of the shard set's files (shards, suffix
    arrays, manifest)."""
    out = {}
    for p in sorted(shards_dir.iterdir()):
        if p.suffix in (".kdt", ".kdsa") or p.name == "shards.json":
            st = p.stat()
            out[p.name] = [st.st_size, st.st_mtime_ns, st.st_ino]
    return out


def ensure_verified(shards_dir: str | PathLike[str], threads: int | None = None) -> bool:
    """Verify every checksum of ``shards_dir`` unless its stamp matches the files; returns
    whether a full verification ran.

    Raises:
        CorruptFileError: a file is damaged (one line naming it).
        StaleIndexError: a shard changed after its suffix array was built.
        IncompleteShardSetError: the manifest does not describe a finished set of these files.
    """
    d = Path(shards_dir)
    before = fingerprint(d)
    stamp = d / STAMP
    try:
        old = json.loads(stamp.read_text("utf-8"))
        if old.get("format") == _FORMAT and old.get("files") == before:
            return False
    except (OSError, ValueError):
        pass
    _core.verify_index(d, threads)  # shard data CRCs, suffix-array checksums, coverage
    from kdmem.corpus.shards import open_shards

    if (d / "shards.json").exists():  # bare shard files (hand-made sets) have none
        open_shards(d)  # the manifest against every shard header (tokenizer, dtype, counts)
    if fingerprint(d) == before:  # nothing changed while we read
        with contextlib.suppress(OSError):  # a read-only directory: verified again next time
            write_json_atomic(stamp, {"format": _FORMAT, "version": 1, "files": before})
    return True
