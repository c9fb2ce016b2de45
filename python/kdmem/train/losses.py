"""Distillation and language-modelling losses, chunked over the sequence.

Notation (Hinton et al. 2015; Agarwal et al. 2024, "GKD"): ``z_t``, ``z_s`` are teacher and
student logits at one position, ``T`` the temperature, ``p = softmax(z_t / T)`` (teacher),
``q = softmax(z_s / T)`` (student). All divergences are in nats and exact (the teacher entropy
term is included, so a student equal to the teacher scores 0):

* ``fkl``  forward KL  ``T^2 * KL(p || q)``  (the paper's soft-distillation loss, T = 2)
* ``rkl``  reverse KL  ``T^2 * KL(q || p)``
* ``jsd``  generalized JSD ``T^2 * (beta * KL(p || m) + (1 - beta) * KL(q || m))`` with
  ``m = beta * p + (1 - beta) * q``; beta -> 0 approaches forward KL's gradient direction
  and TRL's ``generalized_jsd_loss`` uses the same definition.

The ``T^2`` factor keeps gradient magnitudes comparable across temperatures (the gradient of
``KL(p || q)`` w.r.t. ``z_s`` scales as ``1 / T``).

Memory: :func:`chunked_head_loss` never materialises ``[batch, seq, vocab]`` logits. It takes
the final hidden states and the lm-head weight, and for each chunk of ``chunk_size``
positions computes fp32 logits ``[batch, chunk, vocab]`` of student (and teacher), the loss
and -- in the forward pass -- its gradient w.r.t. the student's hidden states and head, so
backward is a multiply (the approach of Liger-Kernel's fused linear cross-entropy; written
here in plain PyTorch). Peak extra memory is ``O(batch * chunk * vocab)`` fp32 plus one
``[vocab, hidden]`` gradient buffer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from kdmem.errors import InvalidArgumentError

__all__ = [
    "DIVERGENCES",
    "Divergence",
    "KdTerms",
    "chunked_ce_loss",
    "chunked_head_loss",
    "chunked_kd_loss",
    "divergence",
    "kd_terms",
]

Divergence = Literal["fkl", "rkl", "jsd"]
DIVERGENCES: tuple[Divergence, ...] = ("fkl", "rkl", "jsd")


def _kl_from_logprobs(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """``KL(P || Q)`` per position from log-probabilities ``[..., V]`` -> ``[...]``.

    Uses torch's fused ``kl_div`` (``exp(logp) * (logp - logq)``); log-probabilities from
    ``log_softmax`` of finite logits are finite, so no ``0 * log 0`` case arises."""
    return F.kl_div(logq, logp, reduction="none", log_target=True).sum(-1)


def divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    kind: Divergence = "fkl",
    temperature: float = 1.0,
    beta: float = 0.5,
) -> torch.Tensor:
    """Per-position divergence ``[...]`` (nats, *without* the ``T^2`` factor).

    ``student_logits``, ``teacher_logits``: float ``[..., V]`` (same shape; any float dtype,
    computed in at least fp32). ``kind`` as in the module docstring; ``beta`` only for jsd.
    """
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    logq = F.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    logp = F.log_softmax(teacher_logits.to(dtype) / temperature, dim=-1)
    if kind == "fkl":
        return _kl_from_logprobs(logp, logq)
    if kind == "rkl":
        return _kl_from_logprobs(logq, logp)
    if kind == "jsd":
        if not 0.0 < beta < 1.0:
            raise InvalidArgumentError(
                f"invalid beta = {beta}: jsd needs 0 < beta < 1 (beta -> 0 is forward KL: use fkl)"
            )
        logm = torch.logaddexp(logp + math.log(beta), logq + math.log(1.0 - beta))
        return beta * _kl_from_logprobs(logp, logm) + (1.0 - beta) * _kl_from_logprobs(logq, logm)
    raise InvalidArgumentError(f"invalid loss = {kind!r}: choose one of {', '.join(DIVERGENCES)}")


@dataclass(frozen=True)
class KdTerms:
    """Sums over unmasked positions of one batch (0-dim fp32/fp64 tensors).

    ``loss``: the training objective ``(1 - alpha) * T^2 * D + alpha * CE``;
    ``kl``: exact ``KL(teacher || student)`` at the loss temperature T, teacher entropy
    term included (for logging; nats; free for fkl, one extra pass for rkl / jsd);
    ``ce``: student cross-entropy on ``targets`` at T = 1 (0 when no targets);
    ``tokens``: number of unmasked positions."""

    loss: torch.Tensor
    kl: torch.Tensor
    ce: torch.Tensor
    tokens: torch.Tensor


def kd_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    mask: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
    *,
    kind: Divergence = "fkl",
    temperature: float = 1.0,
    alpha: float = 0.0,
    beta: float = 0.5,
) -> KdTerms:
    """Reference (unchunked) loss on full logits; :func:`chunked_kd_loss` matches it.

    ``student_logits``: float ``[B, S, V]``; ``teacher_logits``: float ``[B, S, V]`` or None
    (pure cross-entropy, requires ``targets`` and alpha is then ignored); ``mask``: bool or 0/1
    ``[B, S]`` (1 = position counts; padding = 0); ``targets``: int64 ``[B, S]`` next tokens
    (needed when ``alpha > 0``). Returns sums, not means (see :class:`KdTerms`).
    """
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    s = student_logits.to(dtype)
    w = torch.ones(s.shape[:-1], dtype=dtype, device=s.device) if mask is None else mask.to(dtype)
    zero = s.new_zeros(())
    ce = zero
    if targets is not None:
        ce_tok = F.cross_entropy(s.flatten(0, -2), targets.flatten(), reduction="none")
        ce = (ce_tok.view_as(w) * w).sum()
    if teacher_logits is None:
        if targets is None:
            raise InvalidArgumentError("cross-entropy needs targets")
        return KdTerms(ce, zero.detach(), ce.detach(), w.sum())
    t = teacher_logits.to(dtype)
    d = divergence(s, t, kind, temperature, beta)
    loss = temperature**2 * (d * w).sum()
    if alpha > 0.0:
        if targets is None:
            raise InvalidArgumentError(f"alpha = {alpha} mixes in cross-entropy: targets needed")
        loss = (1.0 - alpha) * loss + alpha * ce
    with torch.no_grad():
        kl = (d if kind == "fkl" else divergence(s, t, "fkl", temperature)).detach().mul(w).sum()
    return KdTerms(loss, kl, ce.detach(), w.sum())


ChunkFn = Callable[[torch.Tensor, slice], tuple[torch.Tensor, dict[str, torch.Tensor]]]


class _ChunkedHead(torch.autograd.Function):
    """Loss of ``hidden @ weight.T (+ bias)`` computed chunk by chunk; gradients are
    formed in forward (per chunk, via autograd on the small logits block) and only scaled
    in backward."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        chunk_size: int,
        fn: ChunkFn,
        stats: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]  # type: ignore[attr-defined]
        need_b = bias is not None and ctx.needs_input_grad[2]  # type: ignore[attr-defined]
        dtype = torch.promote_types(weight.dtype, torch.float32)
        w = weight.to(dtype)
        b = bias.to(dtype) if bias is not None else None
        seq = hidden.shape[1]
        total = torch.zeros((), dtype=dtype, device=hidden.device)
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = torch.zeros_like(w) if need_w else None
        grad_b = torch.zeros_like(b) if need_b and b is not None else None
        for start in range(0, seq, chunk_size):
            sl = slice(start, min(start + chunk_size, seq))
            h = hidden[:, sl].to(dtype)
            with torch.enable_grad(), torch.autocast(hidden.device.type, enabled=False):
                logits = F.linear(h, w, b).detach().requires_grad_(True)
                loss, parts = fn(logits, sl)
                (g,) = torch.autograd.grad(loss, logits)
            total += loss.detach()
            for k, v in parts.items():
                stats[k] = stats[k] + v.detach() if k in stats else v.detach()
            g2 = g.flatten(0, 1)  # [B*c, V]
            if grad_h is not None:
                grad_h[:, sl] = (g @ w).to(hidden.dtype)
            if grad_w is not None:
                grad_w += g2.T @ h.flatten(0, 1)
            if grad_b is not None:
                grad_b += g2.sum(0)
        ctx.save_for_backward(
            *(t if t is not None else torch.empty(0) for t in (grad_h, grad_w, grad_b))
        )
        ctx.has = (grad_h is not None, grad_w is not None, grad_b is not None)  # type: ignore[attr-defined]
        ctx.weight_dtype = weight.dtype  # type: ignore[attr-defined]
        return total

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        gh, gw, gb = ctx.saved_tensors  # type: ignore[attr-defined]
        has_h, has_w, has_b = ctx.has  # type: ignore[attr-defined]
        wd = ctx.weight_dtype  # type: ignore[attr-defined]
        return (
            gh * grad_out.to(gh.dtype) if has_h else None,
            (gw * grad_out).to(wd) if has_w else None,
            (gb * grad_out).to(wd) if has_b else None,
            None,
            None,
            None,
        )


def chunked_head_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    fn: ChunkFn,
    chunk_size: int = 128,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sum over chunks of ``fn(logits_chunk, positions)`` with ``logits = hidden @ weight.T + bias``.

    ``hidden``: float ``[B, S, H]`` (student's final hidden states, any float dtype);
    ``weight``: ``[V, H]`` lm-head rows to score (slice padded rows off before calling);
    ``bias``: ``[V]`` or None; ``fn(logits [B, c, V] fp32, slice) -> (loss_sum, stats)``
    must be differentiable in ``logits``. Returns the 0-dim loss (differentiable w.r.t.
    ``hidden``, ``weight``, ``bias``) and the summed, detached ``stats``.
    """
    if chunk_size < 1:
        raise InvalidArgumentError(f"invalid chunk_size = {chunk_size}: must be >= 1")
    stats: dict[str, torch.Tensor] = {}
    if not torch.is_grad_enabled():  # evaluation: no gradient buffers at all
        hidden, weight = hidden.detach(), weight.detach()
        bias = bias.detach() if bias is not None else None
    loss = _ChunkedHead.apply(hidden, weight, bias, chunk_size, fn, stats)
    return loss, stats


def chunked_kd_loss(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    mask: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
    *,
    kind: Divergence = "fkl",
    temperature: float = 2.0,
    alpha: float = 0.0,
    beta: float = 0.5,
    chunk_size: int = 128,
    student_bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
) -> KdTerms:
    """:func:`kd_terms` on ``student_hidden @ student_weight.T`` vs the teacher's, chunked.

    ``student_hidden``: ``[B, S, Hs]``; ``teacher_hidden``: ``[B, S, Ht]`` (no grad);
    ``student_weight``: ``[V, Hs]``, ``teacher_weight``: ``[V, Ht]`` -- both already sliced to
    the shared vocabulary (``kdmem.models.aligned_vocab``), so padded head rows are ignored.
    ``mask``/``targets``: ``[B, S]`` as in :func:`kd_terms`. fp32 teacher logits exist only
    one chunk at a time.
    """
    if student_weight.shape[0] != teacher_weight.shape[0]:
        raise InvalidArgumentError(
            f"student scores {student_weight.shape[0]} vocabulary rows, teacher "
            f"{teacher_weight.shape[0]}: slice both heads to aligned_vocab(...) first"
        )
    th = teacher_hidden.detach()
    tw = teacher_weight.detach()
    tb = teacher_bias.detach() if teacher_bias is not None else None

    def fn(logits: torch.Tensor, sl: slice) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            t_logits = F.linear(th[:, sl].to(logits.dtype), tw.to(logits.dtype), tb)
        terms = kd_terms(
            logits,
            t_logits,
            None if mask is None else mask[:, sl],
            None if targets is None else targets[:, sl],
            kind=kind,
            temperature=temperature,
            alpha=alpha,
            beta=beta,
        )
        return terms.loss, {"kl": terms.kl, "ce": terms.ce, "tokens": terms.tokens}

    loss, st = chunked_head_loss(student_hidden, student_weight, student_bias, fn, chunk_size)
    return KdTerms(loss, st["kl"], st["ce"], st["tokens"])


def chunked_ce_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    chunk_size: int = 128,
    bias: torch.Tensor | None = None,
) -> KdTerms:
    """Summed next-token cross-entropy of ``hidden @ weight.T`` against ``targets``, chunked.

    ``hidden``: ``[B, S, H]``; ``weight``: ``[V, H]``; ``targets``: int64 ``[B, S]`` (the
    token each position must predict); ``mask``: ``[B, S]``. ``kl`` of the result is 0.
    """

    def fn(logits: torch.Tensor, sl: slice) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms = kd_terms(
            logits, None, None if mask is None else mask[:, sl], targets[:, sl], kind="fkl"
        )
        return terms.loss, {"tokens": terms.tokens}

    loss, st = chunked_head_loss(hidden, weight, bias, fn, chunk_size)
    return KdTerms(loss, loss.new_zeros(()).detach(), loss.detach(), st["tokens"])
