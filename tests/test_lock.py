"""One writer at a time: a second writer of a run directory or an output fails at once with
one line naming the holder's pid; a killed holder leaves no stale lock."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdmem.errors import LockedError
from kdmem.lock import dir_lock, output_lock
from kdmem.pipeline import Pipeline, Stage

HOLD = """
import sys, time
from kdmem.lock import {fn}
with {fn}(sys.argv[1], "test"):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder(target: Path, fn: str = "dir_lock") -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD.format(fn=fn), str(target)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGKILL) -> None:
    proc.send_signal(sig)
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    proc = _holder(tmp_path / "run")
    try:
        with pytest.raises(LockedError) as e, dir_lock(tmp_path / "run"):
            pass
        msg = str(e.value)
        assert f"pid {proc.pid}" in msg and "\n" not in msg
        # kdmem run on the same directory fails the same way, before any stage runs
        ran: list[str] = []
        stage = Stage("a", lambda ctx: ran.append("a") or {}, None, (), ())
        with pytest.raises(LockedError):
            Pipeline(tmp_path / "run", [stage], log=lambda _m: None).run()
        assert ran == []
    finally:
        _stop(proc)


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    proc = _holder(tmp_path / "out.parquet", "output_lock")
    _stop(proc)
    deadline = time.time() + 5
    while True:  # the kernel drops the lock with the process
        try:
            with output_lock(tmp_path / "out.parquet"):
                break
        except LockedError:
            assert time.time() < deadline
            time.sleep(0.05)


def test_writers_of_different_outputs_do_not_exclude_each_other(tmp_path: Path) -> None:
    proc = _holder(tmp_path / "a.parquet", "output_lock")
    try:
        with output_lock(tmp_path / "b.parquet"):
            pass
        with pytest.raises(LockedError), output_lock(tmp_path / "a.parquet"):
            pass
    finally:
        _stop(proc)
