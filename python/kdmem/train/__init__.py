"""Training recipes: cross-entropy fine-tuning (teacher, baseline) and soft / hard / argmax
distillation. One readable file per recipe, losses in ``losses.py``, shared helpers in
``common.py``, typed configs in ``config.py``::

    from kdmem.train import DistillConfig, FinetuneConfig
    from kdmem.train.finetune import finetune   # imports torch
    from kdmem.train.distill import distill     # imports torch

Importing this package is light (configs only).
"""

from __future__ import annotations

from kdmem.train.config import DistillConfig, FinetuneConfig, config_from_dict, config_hash

__all__ = ["DistillConfig", "FinetuneConfig", "config_from_dict", "config_hash"]
