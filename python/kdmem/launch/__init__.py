"""How ``kdmem run`` starts model passes on many processes, GPUs and nodes (``[launch]``).

* :mod:`.torchrun`  every training, generation and measurement pass of a stage as a child
  ``python -m torch.distributed.run`` (locally, or under ``srun`` in a Slurm job), per-rank
  logs in ``RUN/logs/<stage>/``, a failed rank as one line naming stage, rank and log;
* :mod:`.ranklog`   what a launched rank does first: its output into its own log file;
* :mod:`.memory`    bytes per GPU of a model pass (weights, gradients, AdamW, activations,
  teacher) from the model config alone, under its sharding;
* :mod:`.devices`   the visible devices and the checks that a launch fits them.

The study decides which stage is which pass (:mod:`kdmem.study.plan`,
:mod:`kdmem.study.slurm`); this package knows nothing of the stage graph. Importing it is
light: torch and transformers load inside the functions that need them.
"""

from __future__ import annotations

from kdmem.launch.devices import Devices, check_launch, visible_devices
from kdmem.launch.torchrun import PassLauncher, launcher_for, launcher_mode

__all__ = [
    "Devices",
    "PassLauncher",
    "check_launch",
    "launcher_for",
    "launcher_mode",
    "visible_devices",
]
