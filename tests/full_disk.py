"""A real full disk for the tests of every writer: a tmpfs (1 MB unless ``size``) filled to
the last byte.

``with full_tmpfs(tmp_path) as (mnt, filler):`` mounts it (skips the test cleanly where
mounting is not permitted: not root, or no tmpfs), fills it with ``filler``, and unmounts
lazily at the end (a memory-mapped file may still hold it). ``filler.unlink()`` frees the
space, ``give_back`` leaves that many bytes free instead of none, ``prepare(mnt)`` runs
before the disk is filled.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def full_tmpfs(
    tmp_path: Path,
    *,
    give_back: int = 0,
    prepare: Callable[[Path], object] | None = None,
    size: str = "1M",
) -> Iterator[tuple[Path, Path]]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip(f"needs root and tmpfs to make a {size} filesystem")
    try:
        if prepare is not None:  # what must be on the disk before it fills
            prepare(mnt)
        filler = mnt / "filler"
        # unbuffered, so that no flush fails at close
        with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
        if give_back:
            os.truncate(filler, max(0, filler.stat().st_size - give_back))
        yield mnt, filler
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
