"""The data and the schedule of a training run: the training examples, a data order that is a
pure function of ``(seed, epoch)`` (so the sampler has no state to save), the global batch
split over processes and accumulation, the learning-rate schedule and the optimizer."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import nn

from kdmem.config import OptimConfig
from kdmem.corpus.examples import Examples, load_examples
from kdmem.distributed import Dist
from kdmem.errors import InvalidArgumentError, TokenRangeError, TrainingOutOfMemoryError

__all__ = [
    "epoch_order",
    "load_training_data",
    "lr_at",
    "make_optimizer",
    "micro_batches",
    "oom_error",
    "step_examples",
    "steps_per_epoch",
]


def load_training_data(
    path: str, seq_len: int | None, vocab_size: int, what: str, ids_what: str = ""
) -> Examples:
    """Examples ``[N, L]`` cut to ``seq_len`` tokens; one-line errors for data shorter than
    ``seq_len`` and token ids outside ``[0, vocab_size)`` (``ids_what`` says what bounds
    them, default: the tokenizer's ids)."""
    ex = load_examples(path)
    if len(ex) == 0:
        raise InvalidArgumentError(f"{what} {path} holds no examples")
    if seq_len is not None:
        if ex.length < seq_len:
            raise InvalidArgumentError(
                f"{what} {path}: examples have {ex.length} tokens (the shortest), fewer than "
                f"--seq-len {seq_len}; lower --seq-len or rebuild the study set with longer examples"
            )
        ex = dataclasses.replace(ex, tokens=np.ascontiguousarray(ex.tokens[:, :seq_len]))
    if ex.length < 2:
        raise InvalidArgumentError(f"{what} {path}: examples need >= 2 tokens, have {ex.length}")
    top = int(ex.tokens.max())
    if top >= vocab_size or int(ex.tokens.min()) < 0:
        bound = ids_what or f"the tokenizer's {vocab_size} ids"
        raise TokenRangeError(
            f"{what} {path}: token id {top} is outside {bound}; the data was tokenized with a "
            "different tokenizer"
        )
    return ex


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """Permutation of ``range(n)`` for ``epoch``; depends only on ``(seed, epoch)``."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def micro_batches(
    order: np.ndarray, step: int, batch: int, accum: int, dist: Dist
) -> list[np.ndarray]:
    """Example positions of this rank's ``accum`` micro-batches for optimizer step ``step``.

    A step consumes ``G = batch * accum * world`` consecutive entries of ``order``; micro-batch
    ``m`` of rank ``r`` is block ``m * world + r``, so the set of examples per step does not
    depend on how ``G`` is split between processes and accumulation. On an epoch's last,
    smaller step blocks may be short or empty (a rank with an empty block still joins the
    step's collectives, on a discarded row)."""
    g = batch * accum * dist.world_size
    idx = order[step * g : (step + 1) * g]
    return [
        idx[
            (m * dist.world_size + dist.rank) * batch : (m * dist.world_size + dist.rank + 1)
            * batch
        ]
        for m in range(accum)
    ]


def steps_per_epoch(n: int, cfg: OptimConfig, dist: Dist) -> int:
    """Optimizer steps per epoch: ``ceil(n / G)``, so every example is seen every epoch (the
    paper's epochs), the last step smaller when ``G`` does not divide ``n``; with
    ``drop_last`` only the full global batches (the last ``n % G`` examples of each epoch's
    order are skipped, a different random set each epoch)."""
    g = cfg.batch_size * cfg.grad_accum * dist.world_size
    if not cfg.drop_last:
        return -(-n // g)
    if n < g:
        raise InvalidArgumentError(
            f"{n} training examples are fewer than one global batch of {g} "
            f"(batch_size {cfg.batch_size} x grad_accum {cfg.grad_accum} x {dist.world_size} "
            "processes); lower --batch-size or --grad-accum, or drop --drop-last"
        )
    return n // g


def step_examples(n: int, step: int, g: int) -> int:
    """Examples in step ``step`` (0-based, within the epoch) of an epoch of ``n`` examples in
    global batches of ``g``: ``g``, or what is left on the last step. The step's loss is
    normalised by its own tokens."""
    return max(0, min(g, n - step * g))


def lr_at(step: int, total: int, cfg: OptimConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based) of ``total``: linear warmup over
    ``warmup_steps``, then cosine / linear decay to ``lr * min_lr_ratio`` or constant."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(1, total - cfg.warmup_steps)
    frac = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "linear":
        return floor + (cfg.lr - floor) * (1.0 - frac)
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * frac))


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW; weight decay only on matrices (not on biases and norm gains)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_eps,
        foreach=False,  # one code path on every device: bitwise-stable resume
    )


def oom_error(step: int, cfg: OptimConfig, e: BaseException) -> TrainingOutOfMemoryError:
    """One-line advice: halve the micro-batch, double accumulation (same global batch)."""
    b, a = cfg.batch_size, cfg.grad_accum
    hint = (
        f"--batch-size {b // 2} --grad-accum {a * 2} (same global batch)"
        if b > 1
        else "a shorter --seq-len, --precision bf16, --distributed fsdp or a smaller --chunk-size"
    )
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return TrainingOutOfMemoryError(
        f"out of memory at step {step} with --batch-size {b} --grad-accum {a}: try {hint} "
        f"({first[:120]})"
    )
