"""Another process holding a kdmem write lock, for the one-writer-at-a-time tests.

``proc = holder(target)`` starts a Python process that takes ``dir_lock(target)`` (or
``output_lock`` with ``fn="output_lock"``) and returns once it holds it; ``stop(proc)``
kills it (SIGKILL unless ``sig``), which releases the lock as a dead writer's would be.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

HOLD = """
import sys, time
from kdmem.lock import {fn}
with {fn}(sys.argv[1], "test"):
    print("held", flush=True)
    time.sleep(60)
"""


def holder(target: Path, fn: str = "dir_lock") -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD.format(fn=fn), str(target)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGKILL) -> None:
    proc.send_signal(sig)
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()
