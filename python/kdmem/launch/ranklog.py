"""What a rank of a launched model pass does first: send its output to its own log file.

:class:`~kdmem.launch.torchrun.PassLauncher` sets ``KDMEM_RANK_LOG_DIR``; ``python -m kdmem``
(the entry point torchrun starts on every rank) calls :func:`redirect_rank_output` before
anything else, so everything the rank prints -- progress, warnings, the one-line
``kdmem: error: ...``, a traceback -- lands in ``<dir>/rank<RANK>.log``. Attempts append,
each under a header line, so a rerun keeps the log of the run that failed.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

__all__ = ["RANK_LOG_ENV", "rank_log", "redirect_rank_output"]

RANK_LOG_ENV = "KDMEM_RANK_LOG_DIR"


def rank_log(logs: Path, rank: int) -> Path:
    """The log file of global rank ``rank`` in a stage's log directory."""
    return logs / f"rank{rank}.log"


def redirect_rank_output() -> Path | None:
    """Point this process's stdout and stderr (file descriptors 1 and 2, so child processes
    and C++ output follow) at its rank's log when launched by kdmem; returns the log path,
    or None outside such a launch."""
    d = os.environ.get(RANK_LOG_ENV)
    rank = os.environ.get("RANK")
    if not d or rank is None:
        return None
    path = rank_log(Path(d), int(rank))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    head = (
        f"== {time.strftime('%Y-%m-%dT%H:%M:%S')} rank {rank} of "
        f"{os.environ.get('WORLD_SIZE', '?')} on {socket.gethostname()}, pid {os.getpid()}: "
        f"kdmem {' '.join(sys.argv[1:])}\n"
    )
    os.write(fd, head.encode())
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return path
