"""Exact per-token KL between two models' next-token distributions.

``KL(p || q) = sum_v p_v (log p_v - log q_v)`` with the entropy term (not the soft
cross-entropy ``-sum p log q``), over the first ``vocab`` logit columns of both models
(:func:`kdmem.models.aligned_vocab`: rows past the tokenizer are lm-head padding and are
dropped before the softmax). The measurement engine feeds :func:`kl_per_token` one sequence
chunk at a time so ``[batch, seq, vocab]`` fp32 logits of both models never exist at once;
:func:`naive_kl` is the direct full-logit formula, kept as the oracle and the benchmark peer.
"""

from __future__ import annotations

import torch


def rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * b).sum(-1)`` for ``[..., V]`` tensors without a ``[..., V]`` temporary."""
    out: torch.Tensor = torch.linalg.vecdot(a, b)
    return out


def kl_from_logprobs(
    lp: torch.Tensor, lq: torch.Tensor, p: torch.Tensor | None = None, *, reverse: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``KL(p || q)`` (and ``KL(q || p)``) per position from fp32 log-probs ``[..., V]``;
    ``p = lp.exp()`` may be passed in when the caller has it. Summed term by term as
    ``p * (log p - log q)`` (no cancellation between entropy and cross-entropy)."""
    diff = lp - lq
    fwd = rowdot(p if p is not None else lp.exp(), diff)
    rev = -rowdot(lq.exp(), diff) if reverse else None
    return fwd, rev


def kl_per_token(
    logits_p: torch.Tensor, logits_q: torch.Tensor, vocab: int, *, reverse: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-position ``KL(p || q)`` (and ``KL(q || p)`` when ``reverse``) in nats.

    ``logits_p``, ``logits_q``: ``[..., V_p]`` and ``[..., V_q]`` (any float dtype; computed
    in fp32), both with ``V >= vocab``. Returns fp32 tensors of shape ``[...]``.
    """
    lp = logits_p[..., :vocab].float().log_softmax(-1)
    lq = logits_q[..., :vocab].float().log_softmax(-1)
    return kl_from_logprobs(lp, lq, reverse=reverse)


def naive_kl(logits_p: torch.Tensor, logits_q: torch.Tensor, vocab: int) -> torch.Tensor:
    """Oracle: token-averaged ``KL(p || q)`` per sequence from full ``[B, T, V]`` logits,
    ``sum p * (log p - log q)`` averaged over the ``T`` positions; shape ``[B]``, fp64."""
    p = logits_p[..., :vocab].float().softmax(-1)
    lq = logits_q[..., :vocab].float().log_softmax(-1)
    kl = (p * (p.log() - lq)).sum(-1)
    return kl.double().mean(-1)
