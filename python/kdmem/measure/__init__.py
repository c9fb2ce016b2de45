"""Measurement engine: one batched teacher-forced pass per model gives exact memorization
labels (greedy decoding reproduces the suffix iff the argmax at every suffix position is the
true next token) and per-example scores; greedy decoding only where decoding is needed.

* :func:`measure` (``kdmem measure``): a study set -> ``measure/<role>.parquet``.
* :func:`measure_tokens`: the same on an in-memory ``[N, W]`` token array.
* :func:`generate` (``kdmem generate``): teacher continuations for hard distillation.
* :func:`greedy_continuations`: batched greedy decoding that neither stops at nor suppresses EOS.
* :func:`kl_per_token` / :func:`naive_kl`: chunked exact KL and its full-logit oracle.

Modules import torch at call time only through these functions' bodies' imports; importing
``kdmem.measure`` itself pulls in numpy but not torch or transformers.
"""

from __future__ import annotations

from kdmem.measure.extract import measure, measure_tokens
from kdmem.measure.generate import generate, greedy_continuations, verify_labels
from kdmem.measure.kl import kl_per_token, naive_kl
from kdmem.measure.scores import COLUMNS, forward_scores, teacher_forced_labels

__all__ = [
    "COLUMNS",
    "forward_scores",
    "generate",
    "greedy_continuations",
    "kl_per_token",
    "measure",
    "measure_tokens",
    "naive_kl",
    "teacher_forced_labels",
    "verify_labels",
]
