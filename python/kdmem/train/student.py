"""The computations of a training step: the student's loss in one ``forward`` (so DDP / FSDP
see it), the frozen teacher as one module (so an FSDP-sharded teacher is gathered by its root
hook), and held-out validation."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from kdmem.config import OptimConfig
from kdmem.distributed import Dist
from kdmem.errors import InvalidArgumentError
from kdmem.models.load import head_of
from kdmem.train import losses
from kdmem.train.process import autocast, is_fsdp

__all__ = ["StudentLoss", "TeacherTrunk", "trunk_hidden", "validate"]


def trunk_hidden(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Final (post-norm) hidden states ``[B, S, H]`` of a causal LM, without its logits."""
    out = model.base_model(input_ids=input_ids, use_cache=False)  # type: ignore[operator]
    hidden: torch.Tensor = out.last_hidden_state
    return hidden


class StudentLoss(nn.Module):
    """The student's whole training computation in one ``forward`` so DDP / FSDP see it.

    ``forward(input_ids [B, L], targets [B, L-1] | None, teacher_hidden [B, L-1, Ht] | None,
    teacher_weight [V', Ht] | None)`` returns ``(loss_sum, kl_sum, ce_sum, tokens)`` (0-dim);
    positions ``[0, L-1)`` are scored; the head is sliced to ``vocab`` rows so padded rows are
    ignored. Without a teacher it is chunked cross-entropy on ``targets``."""

    def __init__(
        self,
        lm: nn.Module,
        vocab: int,
        chunk_size: int,
        kind: losses.Divergence = "fkl",
        temperature: float = 1.0,
        alpha: float = 0.0,
        beta: float = 0.5,
    ) -> None:
        super().__init__()
        self.lm = lm
        self.vocab = vocab
        self.chunk_size = chunk_size
        self.kind: losses.Divergence = kind
        self.temperature = temperature
        self.alpha = alpha
        self.beta = beta

    def forward(
        self,
        input_ids: torch.Tensor,
        targets: torch.Tensor | None,
        teacher_hidden: torch.Tensor | None = None,
        teacher_weight: torch.Tensor | None = None,
        evaluate: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = trunk_hidden(self.lm, input_ids)[:, :-1]
        head = head_of(self.lm)
        w = head.weight[: self.vocab]
        b = head.bias[: self.vocab] if getattr(head, "bias", None) is not None else None
        if evaluate:  # validation: CE on targets and, with a teacher, KL at T = 1
            assert targets is not None
            if teacher_hidden is None:
                t = losses.chunked_ce_loss(hidden, w, targets, chunk_size=self.chunk_size, bias=b)
            else:
                assert teacher_weight is not None
                t = losses.chunked_kd_loss(
                    hidden, w, teacher_hidden, teacher_weight, None, targets, kind="fkl",
                    temperature=1.0, alpha=1.0, chunk_size=self.chunk_size, student_bias=b,
                )  # fmt: skip
        elif teacher_hidden is None:
            assert targets is not None
            t = losses.chunked_ce_loss(hidden, w, targets, chunk_size=self.chunk_size, bias=b)
        else:
            assert teacher_weight is not None
            t = losses.chunked_kd_loss(
                hidden,
                w,
                teacher_hidden,
                teacher_weight,
                None,
                targets,
                kind=self.kind,
                temperature=self.temperature,
                alpha=self.alpha,
                beta=self.beta,
                chunk_size=self.chunk_size,
                student_bias=b,
            )
        return t.loss, t.kl, t.ce, t.tokens


class TeacherTrunk(nn.Module):
    """The frozen teacher as one module, so an FSDP-sharded teacher is gathered by its
    root hook: ``forward(input_ids [B, L])`` returns the final hidden states at the scored
    positions ``[B, L-1, Ht]`` and the lm-head rows ``[vocab, Ht]`` (a copy when sharded,
    since FSDP frees the gathered weight after the forward). Heads with a bias are refused."""

    def __init__(self, lm: nn.Module, vocab: int) -> None:
        super().__init__()
        if getattr(head_of(lm), "bias", None) is not None:
            raise InvalidArgumentError(
                f"the teacher's lm-head ({type(lm).__name__}) has a bias, which kdmem's "
                "distillation does not support yet; use a teacher with a bias-free head"
            )
        self.lm = lm
        self.vocab = vocab

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = trunk_hidden(self.lm, input_ids)[:, :-1]
        w = head_of(self.lm).weight[: self.vocab].detach()
        return hidden, (w.clone() if is_fsdp(self) else w)


@torch.no_grad()
def validate(
    model: nn.Module,
    tokens: np.ndarray,
    cfg: OptimConfig,
    dist: Dist,
    teacher: TeacherTrunk | None = None,
) -> dict[str, float]:
    """Held-out ``val_loss`` (mean next-token CE, nats), ``val_ppl`` = exp(val_loss) and,
    with a teacher, ``val_kl`` = mean KL(teacher || student) at T = 1. ``model`` is the
    (possibly DDP/FSDP-wrapped) :class:`StudentLoss`. Rows are split across ranks by
    position and summed, so the figures do not depend on the world size (every rank runs
    the same number of forwards, as FSDP requires)."""
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64)
    rows = np.arange(dist.rank, len(tokens), dist.world_size)
    per_rank = -(-len(tokens) // dist.world_size)
    for i in range(0, per_rank, cfg.batch_size):
        mine = rows[i : i + cfg.batch_size]
        # a rank out of rows runs a discarded forward on row 0 (collectives stay in step)
        ids = torch.from_numpy(tokens[mine if len(mine) else [0]]).to(dist.device)
        th = tw = None
        with autocast(cfg.precision, dist.device):
            if teacher is not None:
                th, tw = teacher(ids)
            _, kl, ce, n = model(ids, ids[:, 1:], th, tw, evaluate=True)
        if len(mine):
            sums += torch.stack([ce.double().cpu(), kl.double().cpu(), n.double().cpu()])
    sums = dist.all_reduce_sum(sums.to(dist.device)).cpu()
    model.train()
    n = max(1.0, float(sums[2]))
    out = {"val_loss": float(sums[0]) / n, "val_ppl": math.exp(min(float(sums[0]) / n, 700.0))}
    if teacher is not None:
        out["val_kl"] = float(sums[1]) / n
    return out
