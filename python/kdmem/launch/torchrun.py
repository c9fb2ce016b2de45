"""One model pass of a stage on ``[launch]`` processes, through torch's elastic launcher.

A stage that trains, generates or measures builds the ``kdmem`` command line of its pass
(``train --config RUN/launch/<stage>.toml``, ``distill ...``, ``measure ...``) and hands it
to :meth:`PassLauncher.run`, which starts, as a child process::

    python -m torch.distributed.run --nnodes 1 --nproc-per-node N --standalone \\
        --max-restarts 0 -m kdmem <command line>                             (local)
    srun --nodes=M --ntasks-per-node=1 python -m torch.distributed.run --nnodes M \\
        --nproc-per-node N --rdzv-backend c10d --rdzv-endpoint HOST:PORT ... (Slurm job)

Every rank writes its own output to ``RUN/logs/<stage>/rank<R>.log`` (:mod:`.ranklog`),
the launcher's to ``launcher.log`` beside them. When a rank fails, torchrun stops the others
and reports the first failure; :meth:`PassLauncher.run` turns that report into one line
naming the stage, the rank, how it ended and its log file
(:class:`~kdmem.errors.LaunchFailedError`). The passes themselves resume (training from its
checkpoint, measurement and generation from their finished chunks), so rerunning
``kdmem run`` continues the stage.

With one process on one node (the default ``[launch]``) and the local launcher, stages call
their library function in the ``kdmem run`` process instead, as before.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from kdmem.config import ExperimentConfig
from kdmem.distributed import BACKEND_ENV
from kdmem.errors import InvalidArgumentError, LaunchFailedError
from kdmem.launch.ranklog import RANK_LOG_ENV, rank_log
from kdmem.rundir import Layout

__all__ = [
    "MODES",
    "Failure",
    "PassLauncher",
    "first_failure",
    "launcher_for",
    "launcher_mode",
]

MODES = ("local", "srun")
_MODE: ContextVar[str] = ContextVar("kdmem_launcher_mode", default="local")
_BACKEND: ContextVar[str | None] = ContextVar("kdmem_launch_backend", default=None)


@contextmanager
def launcher_mode(mode: str, backend: str | None = None) -> Iterator[None]:
    """Model passes started inside this block use ``mode`` (``local``: torchrun on this
    node; ``srun``: torchrun on every node of the Slurm allocation) and the process-group
    ``backend`` that :func:`kdmem.launch.check_launch` resolved."""
    if mode not in MODES:
        raise InvalidArgumentError(f"invalid launcher {mode!r}: choose one of {', '.join(MODES)}")
    t1, t2 = _MODE.set(mode), _BACKEND.set(backend)
    try:
        yield
    finally:
        _MODE.reset(t1)
        _BACKEND.reset(t2)


@dataclass(frozen=True)
class Failure:
    """The first failed rank torchrun reported: global ``rank``, ``exitcode`` (negative: the
    signal number) and the signal's name when it was killed."""

    rank: int
    exitcode: int
    signal: str = ""


_ROOT = re.compile(
    r"Root Cause \(first observed failure\):.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)"
    r"[^\n]*?(?:\((SIG[A-Z0-9]+)\))?\s*$",
    re.S | re.M,
)


def first_failure(report: str) -> Failure | None:
    """The root-cause rank of torchrun's failure report (its ``ChildFailedError`` table), or
    None when ``report`` holds none (the launcher itself failed)."""
    m = _ROOT.search(report)
    if m is None:
        return None
    return Failure(int(m.group(1)), int(m.group(2)), m.group(3) or "")


def _last_error(log: Path) -> str:
    """The last ``kdmem: error: ...`` line of a rank's log ("" when none)."""
    try:
        lines = log.read_text("utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if line.startswith("kdmem: error: "):
            return line.removeprefix("kdmem: error: ").strip()
    return ""


@dataclass(frozen=True)
class PassLauncher:
    """How the model passes of ``kdmem run`` start (:func:`launcher_for` builds it)."""

    nproc_per_node: int = 1
    nnodes: int = 1
    mode: str = "local"
    backend: str = "auto"
    rdzv_port: int = 29500
    python: str = sys.executable

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    @property
    def in_process(self) -> bool:
        """One process on this node: the stage calls its library function directly."""
        return self.mode == "local" and self.world_size == 1

    def command(self, stage: str, argv: list[str]) -> list[str]:
        """The child command line that runs ``kdmem <argv>`` on every rank."""
        run = [self.python, "-m", "torch.distributed.run", "--nnodes", str(self.nnodes),
               "--nproc-per-node", str(self.nproc_per_node), "--max-restarts", "0"]  # fmt: skip
        if self.mode == "local":
            run += ["--standalone"]
            prefix: list[str] = []
        else:
            host = socket.gethostname()  # the batch step runs on the allocation's first node
            run += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"{host}:{self.rdzv_port}",
                    "--rdzv-id", f"{os.environ.get('SLURM_JOB_ID', 'kdmem')}-{stage}"]  # fmt: skip
            prefix = ["srun", f"--nodes={self.nnodes}", "--ntasks-per-node=1",
                      "--kill-on-bad-exit=1"]  # fmt: skip
        return [*prefix, *run, "-m", "kdmem", *argv]

    def run(
        self,
        run_dir: str | os.PathLike[str],
        stage: str,
        argv: list[str],
        log: Callable[[str], None] = print,
    ) -> None:
        """Run ``kdmem <argv>`` on every rank; return when all ranks finished.

        Raises :class:`~kdmem.errors.LaunchFailedError` naming the stage, the first failed
        rank, how it ended and its log file."""
        logs = Layout(run_dir).logs(stage)
        logs.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env[RANK_LOG_ENV] = str(logs.resolve())
        env["PYTHONUNBUFFERED"] = "1"
        if self.backend != "auto":
            env[BACKEND_ENV] = self.backend
        cmd = self.command(stage, argv)
        where = "" if self.nnodes == 1 else f" x {self.nnodes} nodes"
        log(
            f"[{stage}] torchrun ({self.mode}): {self.nproc_per_node} process(es){where}; "
            f"logs in {logs}/"
        )
        launcher_log = logs / "launcher.log"
        with open(launcher_log, "a", encoding="utf-8") as f:
            f.write(f"== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(cmd)}\n")
            f.flush()
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
            try:
                rc = proc.wait()
            except BaseException:  # Ctrl-C: torchrun stops its workers on SIGTERM
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                raise
        if rc == 0:
            return
        report = launcher_log.read_text("utf-8", errors="replace")
        report = report[report.rfind("\n== ") + 1 :]  # this attempt only
        fail = first_failure(report)
        if fail is None:
            raise LaunchFailedError(
                f"stage {stage}: the launcher exited with status {rc} before any rank "
                f"reported; see {launcher_log}"
            )
        ranklog = rank_log(logs, fail.rank)
        how = (
            f"killed by {fail.signal or f'signal {-fail.exitcode}'}"
            if fail.exitcode < 0
            else f"exit status {fail.exitcode}"
        )
        err = _last_error(ranklog)
        raise LaunchFailedError(
            f"stage {stage}: rank {fail.rank} of {self.world_size} failed ({how}"
            + (f": {err}" if err else "")
            + f"); its log: {ranklog}; rerun kdmem run to resume the stage"
        )


def launcher_for(cfg: ExperimentConfig) -> PassLauncher:
    """The launcher of ``cfg``'s model passes in the current :func:`launcher_mode`."""
    la = cfg.launch
    return PassLauncher(
        nproc_per_node=la.nproc_per_node,
        nnodes=la.nnodes,
        mode=_MODE.get(),
        backend=_BACKEND.get() or la.backend,
        rdzv_port=cfg.slurm.rdzv_port,
        python=(cfg.slurm.python if _MODE.get() == "srun" else "") or sys.executable,
    )
