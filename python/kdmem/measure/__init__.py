"""Measurement engine: one batched teacher-forced pass per model gives exact memorization
labels (greedy decoding reproduces the suffix iff the argmax at every suffix position is the
true next token) and per-example scores; greedy decoding only where decoding is needed.

* :func:`measure` (``kdmem measure``): a study set -> ``measure/<role>.parquet``.
* :func:`measure_tokens`: the same on an in-memory ``[N, W]`` token array.
* :func:`generate` (``kdmem generate``): teacher continuations for hard distillation.
* :func:`greedy_continuations`: batched greedy decoding that neither stops at nor suppresses EOS.
* :func:`kl_per_token` / :func:`naive_kl`: chunked exact KL and its full-logit oracle.

Inside: ``scores`` (the per-batch computation), ``kl``, ``batches`` (batch size and OOM
back-off), ``chunks`` (resumable, world-size-independent Parquet output), ``memory``
(tensor-memory accounting for tests and benchmarks). Needs ``kdmem[torch]``.
"""

from __future__ import annotations

from kdmem import extras

extras.require("torch", "transformers", "safetensors", why="kdmem's measurement")

# The guard above runs first so a missing torch is one line, not an ImportError.
from kdmem.measure.extract import measure, measure_tokens  # noqa: E402
from kdmem.measure.generate import generate, greedy_continuations, verify_labels  # noqa: E402
from kdmem.measure.kl import kl_per_token, naive_kl  # noqa: E402
from kdmem.measure.scores import COLUMNS, forward_scores, teacher_forced_labels  # noqa: E402

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
