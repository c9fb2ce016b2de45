"""One teacher-forced pass: exact extraction labels and per-example scores from the same logits.

Window ``x = tokens[:, :W]`` with ``W = prefix + suffix``. Position ``t`` (0 <= t < W-1)
predicts ``x[t+1]``; the suffix tokens ``x[P:W]`` are predicted at positions ``P-1 .. W-2``.

* ``memorized``: greedy decoding from ``x[:P]`` reproduces ``x[P:W]`` iff the argmax at every
  suffix position equals the true next token (each greedy step then sees exactly the
  teacher-forced context). ``first_mismatch`` = first suffix index whose argmax differs
  (``S`` when none): the number of suffix tokens greedy decoding gets right in a row.
* ``tf_match_frac``: fraction of the S suffix positions whose argmax is the true next token
  under teacher forcing (1 exactly when ``memorized``). The decoded partial score of
  Biderman et al. 2023 (``match_frac``, greedy tokens compared position by position) needs
  real decoding: ``kdmem measure --partial`` (:func:`kdmem.measure.generate.decoded_match_frac`).
* ``tie_gap``: smallest top-1 minus top-2 logit gap over suffix positions up to and including
  the first mismatch; greedy decoding in another dtype, batch size or kernel can flip the
  label only where this gap is tiny (``--verify-generate`` re-decodes those).
* log-probs (``log_softmax`` of the model's full lm-head, fp32 per token, sums in fp64):
  ``suffix_logprob`` (S tokens), ``seq_logprob`` (all W-1 predicted tokens),
  ``ppl_window = exp(-seq_logprob / (W-1))``, ``ppl_suffix = exp(-suffix_logprob / S)``,
  ``mink_logprob``: mean of the ``max(1, floor(k * (W-1)))`` lowest token log-probs (Min-K%
  Prob, Shi et al. 2024, k = 0.2), ``entropy_last_k``: mean next-token entropy (nats) over the
  last ``K = min(50, W-1)`` predicted positions (Borkar et al. 2026's mechanism plot).
* with a reference model: ``kl_to_reference`` = mean over the W-1 positions of
  ``KL(model || reference)`` on the aligned vocabulary (:mod:`kdmem.measure.kl`), optionally
  ``kl_reference_to_model``.

Memory: hidden states ``[B, W, H]`` come from the base model; the lm-head runs on
``seq_chunk`` positions at a time, so at most ``[B, seq_chunk, V]`` fp32 logits of each
model are alive (models whose heads post-process logits fall back to full logits).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from transformers import PreTrainedModel

from kdmem.errors import InvalidArgumentError, NonFiniteLogitsError
from kdmem.measure.kl import kl_from_logprobs, rowdot

MINK_FRAC = 0.2
ENTROPY_K = 50
# Heads that rescale or cap logits after the linear layer (Gemma, Cohere, Granite): the
# chunked path would skip that step, so such models use the model's own full logits.
_POSTPROCESSED_LOGITS = ("final_logit_softcapping", "logit_scale", "logits_scaling")

COLUMNS = (
    "memorized",
    "first_mismatch",
    "suffix_logprob",
    "seq_logprob",
    "ppl_window",
    "ppl_suffix",
    "mink_logprob",
    "entropy_last_k",
    "tie_gap",
    "tf_match_frac",
)
# forward_scores(reference_scores=True) returns the reference's own columns under these keys.
REFERENCE_PREFIX = "reference."


class _Logits:
    """Per-chunk logits of one model over a batch: ``chunk(t0, t1) -> [B, t1-t0, V]``.

    The last token of the window predicts nothing that is scored, so the model runs on
    ``tokens[:, :-1]`` (causal attention: the outputs at positions 0..W-2 are the same).
    """

    def __init__(self, model: PreTrainedModel, tokens: torch.Tensor) -> None:
        self.full: torch.Tensor | None = None
        self.hidden: torch.Tensor | None = None
        tokens = tokens[:, :-1]
        cfg = model.config
        if any(getattr(cfg, a, None) not in (None, 1, 1.0) for a in _POSTPROCESSED_LOGITS):
            self.full = model(input_ids=tokens, use_cache=False).logits
        else:
            out = model.base_model(input_ids=tokens, use_cache=False)
            self.hidden = out.last_hidden_state
            self.head = model.get_output_embeddings()

    def chunk(self, t0: int, t1: int) -> torch.Tensor:
        # The head's own call (F.linear), not a matmul into a reused buffer: those pick other
        # BLAS paths for some shapes and differ in the last bit, which could flip a near-tie.
        if self.full is not None:
            return self.full[:, t0:t1].float()
        assert self.hidden is not None
        out: torch.Tensor = self.head(self.hidden[:, t0:t1])
        return out.float()


class Workspace:
    """Reusable fp32 ``[B, chunk, V]`` buffers (log-probs, probabilities, the reference's
    log-probs) for :func:`forward_scores` across batches.

    On CPU a fresh multi-MB tensor per step costs page faults (glibc hands freed large
    blocks back to the OS), up to a quarter of the scoring time of a small model; reusing the
    buffers removes most of that (the lm-head output itself is still allocated). CUDA's
    caching allocator already reuses memory, so :func:`measure_tokens` only passes one on CPU.
    """

    def __init__(self) -> None:
        self._bufs: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        buf = self._bufs.get(name)
        if buf is None or tuple(buf.shape) != tuple(shape) or buf.device != device:
            buf = torch.empty(shape, dtype=torch.float32, device=device)
            self._bufs[name] = buf
        return buf


def _check_finite(logits: torch.Tensor, model: Any, first_id: int | None, what: str) -> None:
    """Raise on any NaN or +-inf logit. The row sums carry every non-finite value (NaN stays
    NaN, inf stays inf or meets -inf as NaN) in one reduction, 5-10x cheaper than
    ``isfinite`` over ``[B, T, V]``; only finite logits summing past 3e38 would be flagged."""
    bad = ~torch.isfinite(logits.sum(-1))
    if bool(bad.any()):
        row = int(bad.any(1).nonzero()[0])
        where = f"example id {first_id + row}" if first_id is not None else f"batch row {row}"
        raise NonFiniteLogitsError(
            f"NaN/inf logits on {where} from the {what}model (dtype "
            f"{next(model.parameters()).dtype}); rerun with --dtype float32 or check the weights"
        )


def auto_seq_chunk(batch: int, vocab: int, n_pos: int, budget_bytes: int = 64 << 20) -> int:
    """Positions per lm-head chunk so one ``[batch, chunk, vocab]`` fp32 tensor fits
    ``budget_bytes`` (at least 1, at most ``n_pos``)."""
    return max(1, min(n_pos, budget_bytes // max(1, batch * vocab * 4)))


class _Stats:
    """Per-position accumulators of one model over a batch, filled chunk by chunk, and the
    per-example columns (:data:`COLUMNS`) computed from them."""

    def __init__(self, b: int, n: int, prefix: int, kk: int, dev: torch.device) -> None:
        self.n, self.prefix, self.kk = n, prefix, kk
        s = n + 1 - prefix
        self.tok_lp = torch.empty(b, n, dtype=torch.float32, device=dev)
        self.ent = torch.empty(b, n, dtype=torch.float32, device=dev)
        self.hit = torch.empty(b, s, dtype=torch.bool, device=dev)
        self.gap = torch.empty(b, s, dtype=torch.float32, device=dev)

    def entropy_from(self, t0: int, t1: int) -> int:
        """First offset in chunk ``[t0, t1)`` whose entropy ``entropy_last_k`` reads (it reads
        positions ``n-K .. n-1`` only); ``t1 - t0`` when none."""
        return min(t1, max(t0, self.n - self.kk)) - t0

    def update(
        self,
        t0: int,
        logits: torch.Tensor,
        logp: torch.Tensor,
        p_tail: torch.Tensor,
        tgt: torch.Tensor,
    ) -> None:
        """Chunk ``[t0, t0 + T)``: fp32 ``logits`` and ``logp`` ``[B, T, V]``, ``p_tail`` =
        ``exp(logp)`` from offset :meth:`entropy_from` on, ``tgt`` the next tokens ``[B, T]``."""
        t1 = t0 + logits.shape[1]
        self.tok_lp[:, t0:t1] = logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
        e0 = self.entropy_from(t0, t1)
        if e0 < t1 - t0:
            self.ent[:, t0 + e0 : t1] = -rowdot(p_tail, logp[:, e0:])
        # Suffix positions P-1 .. W-2 intersected with this chunk.
        a0 = max(t0, self.prefix - 1)
        if a0 < t1:
            sl = slice(a0 - t0, t1 - t0)
            top2 = logits[:, sl].topk(2, dim=-1)
            pred = top2.indices[..., 0]
            g = top2.values[..., 0] - top2.values[..., 1]
            if bool((g == 0).any()):  # exact tie: greedy takes the lowest id, as argmax
                pred = torch.where(g == 0, logits[:, sl].argmax(-1), pred)
            h0, h1 = a0 - self.prefix + 1, t1 - self.prefix + 1
            self.hit[:, h0:h1] = pred == tgt[:, sl]
            self.gap[:, h0:h1] = g

    def finish(self, mink_frac: float) -> dict[str, npt.NDArray[Any]]:
        n, prefix = self.n, self.prefix
        s = n + 1 - prefix
        memorized = self.hit.all(1)
        miss = ~self.hit
        first_mismatch = torch.where(
            memorized, torch.full_like(miss[:, 0], s, dtype=torch.int64), miss.int().argmax(1)
        )
        upto = (
            torch.arange(s, device=self.hit.device).unsqueeze(0)
            <= first_mismatch.clamp(max=s - 1)[:, None]
        )
        tie_gap = self.gap.masked_fill(~upto, math.inf).amin(1)
        lp64 = self.tok_lp.double()
        seq_lp = lp64.sum(1)
        suf_lp = lp64[:, prefix - 1 :].sum(1)
        k = max(1, int(mink_frac * n))
        mink = lp64.topk(k, dim=1, largest=False).values.mean(1)
        ent_k = self.ent[:, n - self.kk :].double().mean(1)
        return {
            "memorized": memorized.cpu().numpy(),
            "first_mismatch": first_mismatch.to(torch.int32).cpu().numpy(),
            "suffix_logprob": suf_lp.cpu().numpy(),
            "seq_logprob": seq_lp.cpu().numpy(),
            "ppl_window": torch.exp(-seq_lp / n).cpu().numpy(),
            "ppl_suffix": torch.exp(-suf_lp / s).cpu().numpy(),
            "mink_logprob": mink.cpu().numpy(),
            "entropy_last_k": ent_k.cpu().numpy(),
            "tie_gap": tie_gap.double().cpu().numpy(),
            "tf_match_frac": self.hit.double().mean(1).cpu().numpy(),
        }


def forward_scores(
    model: PreTrainedModel,
    tokens: torch.Tensor,
    prefix: int,
    *,
    reference: PreTrainedModel | None = None,
    vocab: int | None = None,
    reverse_kl: bool = False,
    reference_scores: bool = False,
    seq_chunk: int | None = None,
    mink_frac: float = MINK_FRAC,
    entropy_k: int = ENTROPY_K,
    first_id: int | None = None,
    workspace: Workspace | None = None,
) -> dict[str, npt.NDArray[Any]]:
    """Labels and scores of a batch ``tokens`` (int64 ``[B, W]``, on the model's device).

    ``vocab`` (aligned vocabulary for the KL; default: the smaller lm-head) only matters with
    a ``reference``. Returns numpy arrays of shape ``[B]``, keyed like :data:`COLUMNS` plus
    ``kl_to_reference`` / ``kl_reference_to_model`` when asked for. ``reference_scores``
    (pair mode) also returns the reference's own :data:`COLUMNS` under
    :data:`REFERENCE_PREFIX` keys, from the forward pass the KL already runs: the same
    values a separate pass over the reference gives. ``first_id`` (the batch's first
    example id) only improves error messages. ``workspace`` (a :class:`Workspace` kept
    across batches) reuses the big per-chunk buffers; results do not depend on it.
    """
    b, w = tokens.shape
    s = w - prefix
    if prefix < 1 or s < 1:
        raise InvalidArgumentError(
            f"invalid prefix/suffix = {prefix}/{s}: both must be >= 1 (window {w} tokens)"
        )
    if reference_scores and reference is None:
        raise InvalidArgumentError("reference scores need a reference model")
    n = w - 1
    with torch.inference_mode():
        src = _Logits(model, tokens)
        ref = None
        if reference is not None:
            ref_dev = next(reference.parameters()).device
            ref = _Logits(reference, tokens.to(ref_dev))
        rows = model.get_output_embeddings().weight.shape[0]
        if vocab is None and reference is not None:
            vocab = min(rows, reference.get_output_embeddings().weight.shape[0])
        chunk = seq_chunk or auto_seq_chunk(b, rows, n)
        dev = tokens.device
        kk = max(1, min(entropy_k, n))
        own = _Stats(b, n, prefix, kk, dev)
        other = _Stats(b, n, prefix, kk, dev) if reference_scores else None
        kl_f = torch.empty(b, n, dtype=torch.float32, device=dev) if ref is not None else None
        kl_r = (
            torch.empty(b, n, dtype=torch.float32, device=dev)
            if reverse_kl and ref is not None
            else None
        )
        ws = workspace

        def buf(name: str, like: torch.Tensor) -> torch.Tensor | None:
            return ws.get(name, tuple(like.shape), like.device) if ws is not None else None

        for t0 in range(0, n, chunk):
            t1 = min(n, t0 + chunk)
            logits = src.chunk(t0, t1)
            _check_finite(logits, model, first_id, "")
            tgt = tokens[:, t0 + 1 : t1 + 1]
            logp = torch.log_softmax(logits, -1, out=buf("logp", logits))
            e0 = own.entropy_from(t0, t1)
            if ref is not None:  # the KL needs p at every position
                p = torch.exp(logp, out=buf("p", logp))
                own.update(t0, logits, logp, p[:, e0:], tgt)
            else:
                p = torch.exp(logp[:, e0:], out=buf("p", logp[:, e0:]))
                own.update(t0, logits, logp, p, tgt)
            if ref is not None:
                assert kl_f is not None and vocab is not None
                if vocab < logits.shape[-1]:  # drop padded rows, renormalize
                    logp = logits[..., :vocab].log_softmax(-1)
                    p = logp.exp()
                lr = ref.chunk(t0, t1)
                if other is not None:  # the reference's own scores, over all its rows
                    _check_finite(lr, reference, first_id, "reference ")
                    lq_own = torch.log_softmax(lr, -1, out=buf("ref_logp", lr))
                    r0 = other.entropy_from(t0, t1)
                    q_tail = torch.exp(lq_own[:, r0:], out=buf("ref_p", lq_own[:, r0:]))
                    other.update(t0, lr, lq_own, q_tail, tgt.to(lr.device))
                    del q_tail
                    # Its own log-probs use all its rows; the KL renormalizes on the shared ones.
                    lq = lr[..., :vocab].log_softmax(-1) if vocab < lr.shape[-1] else lq_own
                else:
                    lr = lr[..., :vocab]
                    lq = torch.log_softmax(lr, -1, out=buf("ref_logp", lr))
                del lr
                lq = lq.to(dev)
                if kl_r is None:  # forward KL only: p * (log p - log q), diff written over lq
                    f, r = rowdot(p, torch.sub(logp, lq, out=lq)), None
                else:
                    f, r = kl_from_logprobs(logp, lq, p, reverse=True)
                # The model's logits are finite here, so a NaN or +-inf reference logit makes
                # that position's KL non-finite (NaN row, +inf normalizer, or p * inf). In
                # pair mode the reference's logits were already checked above.
                if other is None:
                    _check_finite(f[..., None], reference, first_id, "reference ")
                kl_f[:, t0:t1] = f
                if kl_r is not None and r is not None:
                    kl_r[:, t0:t1] = r
                del lq
            del logits, logp, p

        out = own.finish(mink_frac)
        if kl_f is not None:
            out["kl_to_reference"] = kl_f.double().mean(1).cpu().numpy()
        if kl_r is not None:
            out["kl_reference_to_model"] = kl_r.double().mean(1).cpu().numpy()
        if other is not None:
            out.update({REFERENCE_PREFIX + k: v for k, v in other.finish(mink_frac).items()})
    return {k: np.asarray(v) for k, v in out.items()}


def teacher_forced_labels(
    model: PreTrainedModel, tokens: torch.Tensor, prefix: int, *, seq_chunk: int | None = None
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int32]]:
    """Labels only (``memorized [B]`` bool, ``first_mismatch [B]`` int32) from one forward
    pass over ``tokens [B, W]``: the lm-head runs on the S suffix positions alone."""
    b, w = tokens.shape
    s = w - prefix
    if prefix < 1 or s < 1:
        raise InvalidArgumentError(
            f"invalid prefix/suffix = {prefix}/{s}: both must be >= 1 (window {w} tokens)"
        )
    with torch.inference_mode():
        src = _Logits(model, tokens)
        chunk = seq_chunk or auto_seq_chunk(b, model.get_output_embeddings().weight.shape[0], s)
        hit = torch.empty(b, s, dtype=torch.bool, device=tokens.device)
        for a0 in range(prefix - 1, w - 1, chunk):
            a1 = min(w - 1, a0 + chunk)
            pred = src.chunk(a0, a1).argmax(-1)
            hit[:, a0 - prefix + 1 : a1 - prefix + 1] = pred == tokens[:, a0 + 1 : a1 + 1]
        memorized = hit.all(1)
        fm = torch.where(memorized, s, (~hit).int().argmax(1)).to(torch.int32)
    return memorized.cpu().numpy(), fm.cpu().numpy()
