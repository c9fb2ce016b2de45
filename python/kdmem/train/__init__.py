"""Training recipes: cross-entropy fine-tuning (teacher, baseline) and soft / hard / argmax
distillation. One readable loop per recipe, the rest in small modules::

    finetune.py    kdmem train: the teacher and baseline loop
    distill.py     kdmem distill: the soft / hard / argmax student loop
    losses.py      chunked CE and KD losses (shapes in the docstrings)
    student.py     the student's loss module, the frozen teacher trunk, validation
    schedule.py    training data, data order, global batch split, lr schedule, optimizer
    checkpoint.py  checkpoints (safetensors + JSON) and the final model
    process.py     process group, device, DDP / FSDP2 wrapping, autocast

Configs (:class:`~kdmem.config.FinetuneConfig`, :class:`~kdmem.config.DistillConfig`) live in
:mod:`kdmem.config` with every other config. Needs ``kdmem[torch]``::

    from kdmem.config import DistillConfig, FinetuneConfig, config_from_dict
    from kdmem.train import distill, finetune
"""

from __future__ import annotations

from kdmem import extras

extras.require("torch", "transformers", "safetensors", why="kdmem's training recipes")

# The guard above runs first so a missing torch is one line, not an ImportError.
from kdmem.train.distill import distill  # noqa: E402
from kdmem.train.finetune import finetune  # noqa: E402

__all__ = ["distill", "finetune"]
