"""The devices a launch runs on, and the checks that ``[launch]`` fits them before anything
starts (one line with the numbers otherwise)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

from kdmem.config import ExperimentConfig
from kdmem.distributed import nccl_available
from kdmem.errors import ConfigError

__all__ = ["Devices", "check_launch", "cpu_cores", "visible_devices"]


@dataclass(frozen=True)
class Devices:
    """What one node offers a model pass: ``count`` CUDA devices of ``memory`` bytes each,
    or (``kind == "cpu"``) ``count`` CPU cores sharing ``memory`` bytes of RAM."""

    kind: str
    count: int
    memory: int
    name: str = ""

    def describe(self) -> str:
        gib = self.memory / 2**30
        if self.kind == "cuda":
            return f"{self.count} CUDA device(s) ({self.name}, {gib:.0f} GiB each)"
        return f"{self.count} CPU core(s) and {gib:.0f} GiB of RAM, no CUDA device in use"


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _ram() -> int:
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def uses_cuda(device: str | None) -> bool:
    """Whether model passes with ``run.device = device`` compute on CUDA here."""
    if device is not None:
        return device.startswith("cuda")
    import torch

    return bool(torch.cuda.is_available())


_PROBE = (
    "import json, torch\n"
    "n = torch.cuda.device_count()\n"
    "p = torch.cuda.get_device_properties(0) if n else None\n"
    "print(json.dumps([n, p.total_memory if p else 0, p.name if p else '']))\n"
)


@functools.lru_cache(maxsize=1)
def _cuda_probe() -> tuple[int, int, str]:
    """(CUDA devices, bytes of the first, its name), asked of a short child process: reading
    device properties creates a CUDA context, which ``kdmem run`` must not hold on a GPU
    its ranks need for the whole study."""
    r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=600)
    if r.returncode != 0 or not r.stdout.strip():
        return 0, 0, ""
    n, mem, name = json.loads(r.stdout.strip().splitlines()[-1])
    return int(n), int(mem), str(name)


def visible_devices(device: str | None) -> Devices:
    """The devices model passes with ``run.device = device`` use on this machine."""
    if uses_cuda(device):
        n, mem, name = _cuda_probe()
        if n:
            return Devices("cuda", n, mem, name)
        return Devices("cuda", 0, 0, "none visible")
    return Devices("cpu", cpu_cores(), _ram())


def check_launch(
    cfg: ExperimentConfig,
    *,
    multinode_ok: bool = False,
    check_devices: bool = True,
    log: Callable[[str], None] = print,
) -> str:
    """Check ``cfg.launch`` against this machine; return the process-group backend the ranks
    will use (``launch.backend`` resolved: nccl without CUDA falls back to gloo with a
    warning on ``log``). ``multinode_ok``: the caller is a scheduler job (Slurm) whose
    allocation provides the other nodes; ``check_devices`` False: this process runs no model
    pass (a corpus or analysis job on a CPU node).

    Raises :class:`~kdmem.errors.ConfigError` (one line, the numbers) for more processes per
    node than devices, or several nodes without a scheduler."""
    la = cfg.launch
    if la.nnodes > 1 and not multinode_ok:
        raise ConfigError(
            f"launch.nnodes = {la.nnodes}: kdmem run starts the processes of this one node; "
            "for several nodes write Slurm jobs with `kdmem run EXP.toml --emit-slurm DIR` "
            "(or set launch.nnodes = 1)"
        )
    backend = la.backend
    if la.world_size == 1 or not check_devices:
        return backend
    dev = visible_devices(cfg.run.device)
    if dev.kind == "cuda" and la.nproc_per_node > dev.count:
        shown = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = f" (CUDA_VISIBLE_DEVICES={shown})" if shown is not None else ""
        raise ConfigError(
            f"launch.nproc_per_node = {la.nproc_per_node} but {dev.count} CUDA device(s) are "
            f"visible{where}; set launch.nproc_per_node <= {dev.count}"
        )
    if dev.kind == "cpu" and la.nproc_per_node > dev.count:
        raise ConfigError(
            f"launch.nproc_per_node = {la.nproc_per_node} but this machine has {dev.count} CPU "
            f"core(s) and the model passes run on cpu (run.device = {cfg.run.device!r}, no "
            f"CUDA device); set launch.nproc_per_node <= {dev.count}"
        )
    if backend == "nccl" and (dev.kind != "cuda" or not nccl_available()):
        log(
            "kdmem: warning: launch.backend = 'nccl' needs CUDA devices and a torch built with "
            f"NCCL; the model passes run on {dev.kind}: using gloo"
        )
        backend = "gloo"
    return backend
