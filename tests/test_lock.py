"""One writer at a time: a second writer of a run directory or an output fails at once with
one line naming the holder's pid; a killed holder leaves no stale lock."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.lock_holder import holder as _holder
from tests.lock_holder import stop as _stop

from kdmem.errors import LockedError
from kdmem.lock import dir_lock, output_lock
from kdmem.pipeline import Pipeline, Stage


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


def test_one_stage_jobs_lock_their_stage_not_the_run_directory(tmp_path: Path) -> None:
    """``kdmem run --stage NAME`` (a Slurm job) holds only its stage's lock: jobs of other
    stages of the run directory go ahead, a second job of the same stage and a whole run
    reaching that stage are refused before the stage runs."""
    run = tmp_path / "run"
    ran: list[str] = []

    def work(ctx):  # type: ignore[no-untyped-def]
        ran.append(ctx.stage)
        (ctx.run_dir / ctx.stage).write_text("x")
        return {}

    stages = [Stage("a", work, outputs=("a",)), Stage("b", work, outputs=("b",))]
    proc = _holder(run / "stage-a", "output_lock")  # as a running job of stage a holds it
    try:
        Pipeline(run, stages, log=lambda _m: None).run(only="b")
        assert ran == ["b"]
        with pytest.raises(LockedError, match=rf"stage a\).*pid {proc.pid}"):
            Pipeline(run, stages, log=lambda _m: None).run(only="a")
        with pytest.raises(LockedError, match=rf"pid {proc.pid}"):
            Pipeline(run, stages, log=lambda _m: None).run()
        assert ran == ["b"]
    finally:
        _stop(proc)
    manifest = Pipeline(run, stages, log=lambda _m: None).run()
    assert ran == ["b", "a"]
    assert {k: v["status"] for k, v in manifest["stages"].items()} == {"a": "done", "b": "done"}
    assert not list(run.glob(".*.lock"))  # finished writers leave no lock files


def test_featurize_and_scan_hold_their_outputs_lock(tmp_path: Path) -> None:
    """A second featurize or scan writing the same output is refused before it reads
    anything (one line, the holder's pid)."""
    from kdmem.corpus.featurize import featurize
    from kdmem.corpus.scan import scan

    for fn in (featurize, scan):
        out = tmp_path / f"{fn.__name__}.parquet"
        proc = _holder(out, "output_lock")
        try:
            with pytest.raises(LockedError, match=f"pid {proc.pid}"):
                fn(tmp_path / "examples.jsonl", tmp_path / "index", out)
        finally:
            _stop(proc)
