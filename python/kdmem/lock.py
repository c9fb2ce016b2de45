"""One writer at a time: an advisory lock on an output directory.

Commands that write a directory (``kdmem run`` on a run directory, ``kdmem measure`` and
``kdmem generate`` on their output) take :func:`dir_lock` for as long as they write. A second
writer fails at once with one line naming the holder's pid, instead of racing the first on
the same files. The lock is ``fcntl.flock`` on ``DIR/.kdmem.lock`` (released by the kernel
when the holder dies, so a killed run never leaves a stale lock; a finished one removes the
file); the file records the holder's pid for the message. On systems without ``fcntl`` (Windows) no lock is taken.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from kdmem.atomic import io_error
from kdmem.errors import LockedError

P = ParamSpec("P")
R = TypeVar("R")

fcntl: Any
try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["LOCK_NAME", "dir_lock", "locks_output", "output_lock"]

LOCK_NAME = ".kdmem.lock"


def dir_lock(
    directory: str | os.PathLike[str], what: str = "kdmem"
) -> contextlib.AbstractContextManager[None]:
    """Hold the write lock of ``directory`` (created if missing; ``DIR/.kdmem.lock``) for
    the ``with`` block. Raises :class:`~kdmem.errors.LockedError` naming the holder's pid
    when another process holds it. Take it once per command (not re-entrant)."""
    d = Path(directory)
    return _lock(d / LOCK_NAME, str(d), what)


def output_lock(
    path: str | os.PathLike[str], what: str = "kdmem"
) -> contextlib.AbstractContextManager[None]:
    """The write lock of one output file ``path`` (``.NAME.lock`` beside it), so writers of
    different files in one directory do not exclude each other."""
    p = Path(path)
    return _lock(p.with_name(f".{p.name}.lock"), str(p), what)


def _acquire(path: Path, target: str, what: str) -> int:
    """An fd of ``path`` holding its exclusive flock. A lock file unlinked by a holder that
    just finished is stale: if the locked inode is no longer the one at ``path``, retry."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(
                f"{target} is being written by another {what} process (pid {holder}); wait "
                "for it to finish or stop it, then rerun (finished work is kept)"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def _lock(path: Path, target: str, what: str) -> Iterator[None]:
    """Hold the lock; the lock file is removed (while still held) when the block ends, so
    finished writers leave nothing behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    try:
        fd = _acquire(path, target, what)
    except LockedError:
        raise
    except OSError as e:  # e.g. a full disk: no room for the lock file itself
        raise io_error(path, e) from None
    try:
        os.ftruncate(fd, 0)
        # The pid is only for the message a second writer gets; on a full disk the lock
        # (flock) holds without it and the first real write names the problem.
        with contextlib.suppress(OSError):
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def locks_output(what: str, arg: str = "out") -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a function that writes the file named by its argument ``arg`` so that it
    holds that output's lock (:func:`output_lock`) while it runs."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args: P.args, **kwargs: P.kwargs) -> R:
            target = sig.bind(*args, **kwargs).arguments[arg]
            with output_lock(target, what):
                return fn(*args, **kwargs)

        return locked

    return wrap
