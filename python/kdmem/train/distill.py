"""Knowledge distillation of a fine-tuned teacher into a student (``kdmem distill``).

Three modes, one loop (top to bottom, like finetune.py):

* ``soft``   -- ``(1 - alpha) * T^2 * D(teacher || student) + alpha * CE`` at every token of
  the original text; D = forward KL (paper: T = 2, alpha = 0), reverse KL or generalized JSD.
  The teacher runs alongside the student; logits of both exist one sequence chunk at a time.
* ``hard``   -- plain cross-entropy on the teacher's greedy continuations: the first
  ``prefix_len`` tokens of every example plus ``gen_len - prefix_len`` greedy tokens (fp32,
  EOS neither stopped at nor suppressed). Generated once by :func:`kdmem.measure.generate`
  and cached in ``generations_dir/<teacher weights hash>-p<prefix>-n<gen_len>/``.
* ``argmax`` -- cross-entropy on the teacher's argmax next token at every position of the
  original text (the limit T -> 0 of soft distillation).

Teacher and student must share a tokenizer; lm-head rows beyond it (padding) are ignored
(:func:`kdmem.models.aligned_vocab`). Validation per epoch reports the student's held-out
CE / perplexity and, when the teacher is loaded, its KL to the teacher.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig

from kdmem.config import DistillConfig, config_hash
from kdmem.errors import NonFiniteLossError, TokenizerMismatchError
from kdmem.identity import check_same_tokenizer
from kdmem.measure.generate import generate
from kdmem.models.load import check_model_arg, head_rows, load_model, model_hash, reinit_head
from kdmem.models.tiny import build_model
from kdmem.models.tokenizer import model_vocab
from kdmem.models.vocab import aligned_vocab
from kdmem.train.checkpoint import (
    CHECKPOINT,
    METRICS,
    check_global_batch,
    check_resume,
    load_checkpoint,
    save_checkpoint,
    save_final,
    save_snapshot,
    write_json_atomic,
)
from kdmem.train.process import (
    autocast,
    check_path_writable,
    no_sync,
    setup_distributed,
    shard_fsdp,
    wrap_student,
)
from kdmem.train.schedule import (
    epoch_order,
    load_training_data,
    lr_at,
    make_optimizer,
    micro_batches,
    oom_error,
    step_examples,
    steps_per_epoch,
)
from kdmem.train.student import StudentLoss, TeacherTrunk
from kdmem.train.student import validate as validate_model

__all__ = ["distill", "generations_dir", "hard_generations", "teacher_argmax"]


def _log(msg: str) -> None:
    print(f"kdmem distill: {msg}", file=sys.stderr, flush=True)


@torch.no_grad()
def teacher_argmax(hidden: torch.Tensor, weight: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Teacher's argmax next token ``[B, S]`` (int64) from its final hidden states
    ``[B, S, H]`` and lm-head rows ``[V, H]`` (already cut to the shared vocabulary),
    fp32 logits one chunk of positions at a time."""
    w = weight.float()
    out = torch.empty(hidden.shape[:2], dtype=torch.long, device=hidden.device)
    # fp32 even when called under autocast: a bf16 matmul merges near-tied logits
    with torch.autocast(hidden.device.type, enabled=False):
        for s in range(0, hidden.shape[1], chunk_size):
            h = hidden[:, s : s + chunk_size].float()
            out[:, s : s + chunk_size] = F.linear(h, w).argmax(-1)
    return out


def generations_dir(
    base: str | os.PathLike[str], teacher_hash: str, prefix_len: int, gen_len: int
) -> Path:
    """Where the continuations of the teacher with weights hash ``teacher_hash`` are cached:
    ``base/<teacher_hash[:16]>-p<prefix_len>-n<gen_len>/`` (holding ``generations.parquet``)."""
    return Path(base) / f"{teacher_hash[:16]}-p{prefix_len}-n{gen_len}"


def hard_generations(cfg: DistillConfig, teacher_hash: str) -> Path:
    """Path of the teacher's cached continuations (``generations.parquet``), generating them
    when missing. The cache directory name carries the teacher's weights hash, so a new
    teacher never reuses old continuations."""
    base = (
        Path(cfg.generations_dir) if cfg.generations_dir else Path(cfg.out).parent / "generations"
    )
    d = generations_dir(base, teacher_hash, cfg.prefix_len, cfg.gen_len)
    return generate(
        cfg.teacher,
        cfg.data,
        d,
        prefix=cfg.prefix_len,
        new_tokens=cfg.gen_len - cfg.prefix_len,
        batch_size=cfg.gen_batch_size,
        dtype="float32",
        device=cfg.device,
    )


def distill(
    cfg: DistillConfig,
    *,
    log: Callable[[str], None] = _log,
    stop_after_step: int | None = None,
) -> dict[str, Any]:
    """Train ``cfg.student`` against ``cfg.teacher`` on ``cfg.data`` into ``cfg.out``.

    Returns ``OUT/kdmem.json`` (config, teacher hash, per-epoch metrics).
    ``stop_after_step`` raises ``KeyboardInterrupt`` after that optimizer step (tests)."""
    cfg.validate()
    dist = setup_distributed(cfg.device)
    out = Path(cfg.out)
    check_path_writable(out)
    check_model_arg(cfg.teacher, "--teacher")
    check_model_arg(cfg.student, "--student")
    finished, ckpt = check_resume(out, cfg)
    if finished is not None:
        log(f"{out} is already complete (config {finished['config_hash'][:12]}); nothing to do")
        return finished
    if not dist.is_main:
        log = lambda _msg: None  # noqa: E731

    # ---- tokenizers, teacher, data ---------------------------------------------------------
    mv, t_mv = model_vocab(cfg.student), model_vocab(cfg.teacher)
    check_same_tokenizer(
        t_mv.hash,
        f"teacher {cfg.teacher} ({t_mv.size} tokens)",
        mv.hash,
        f"student {cfg.student} ({mv.size} tokens)",
        fix="teacher and student must share one tokenizer",
    )
    known = mv if mv.tokenizer is not None else t_mv
    if known.tokenizer is None and mv.size != t_mv.size:
        raise TokenizerMismatchError(
            f"teacher {cfg.teacher} has {t_mv.size} lm-head rows and student {cfg.student} "
            f"{mv.size}, and neither ships a tokenizer (tokenizer.json) to tell padding from "
            "another vocabulary; save the shared tokenizer next to either model"
        )
    # vocabularies that differ beyond lm-head padding fail here, before any heavy work
    vocab = aligned_vocab(known.size, head_rows(cfg.student), head_rows(cfg.teacher))
    teacher_hash = model_hash(cfg.teacher) if Path(cfg.teacher).is_dir() else cfg.teacher
    t_prec = cfg.teacher_precision or cfg.precision
    if cfg.mode == "hard":
        gen_path = hard_generations(cfg, teacher_hash)
        train = load_training_data(
            str(gen_path), cfg.seq_len, known.size, "generations", known.what
        )
        log(f"hard mode: {len(train)} teacher continuations from {gen_path}")
    else:
        train = load_training_data(cfg.data, cfg.seq_len, known.size, "--data", known.what)
    tok_check = check_same_tokenizer(
        train.tokenizer_hash, f"--data {train.source}", known.hash, "the models"
    )
    val = (
        load_training_data(cfg.val_data, train.length, known.size, "--val-data", known.what)
        if cfg.val_data
        else None
    )
    trunk = None  # hard mode trains on the cached continuations alone
    if cfg.mode != "hard":
        teacher = load_model(cfg.teacher, dtype="bfloat16" if t_prec == "bf16" else "float32")
        teacher.requires_grad_(False)
        trunk = TeacherTrunk(teacher, vocab)
        if cfg.teacher_shard != "none" and dist.world_size > 1:
            # fully_shard moves one layer at a time to the device: the whole teacher never is
            shard_fsdp(trunk, teacher, offload=cfg.teacher_shard == "fsdp_offload")
        else:
            trunk.to(dist.device)

    # ---- student ---------------------------------------------------------------------------
    torch.manual_seed(cfg.seed)
    if cfg.init == "random":
        lm = build_model(AutoConfig.from_pretrained(cfg.student), seed=cfg.seed)
    else:
        lm = load_model(cfg.student)
    if cfg.seed_init == "random_head" and cfg.init == "pretrained":
        reinit_head(lm, cfg.seed)
    cast(nn.Module, lm).to(dist.device)
    lm.train()
    student = StudentLoss(lm, vocab, cfg.chunk_size, cfg.loss, cfg.temperature, cfg.alpha, cfg.beta)
    model = wrap_student(student, cfg, dist)
    optimizer = make_optimizer(model, cfg)

    per_epoch = steps_per_epoch(len(train), cfg, dist)
    total = per_epoch * cfg.epochs
    global_batch = cfg.batch_size * cfg.grad_accum * dist.world_size
    n_train = len(train)
    step, metrics = 0, []
    epoch_loss, epoch_kl, epoch_tokens, epoch_examples, epoch_time = 0.0, 0.0, 0, 0, 0.0
    if ckpt is not None:
        check_global_batch(ckpt, global_batch)
        load_checkpoint(ckpt, model, optimizer)
        step, metrics = int(ckpt["step"]), list(ckpt["metrics"])
        epoch_loss, epoch_kl = float(ckpt["epoch_loss"]), float(ckpt["epoch_kl"])
        epoch_tokens, epoch_time = int(ckpt["epoch_tokens"]), float(ckpt["epoch_time"])
        epoch_examples = int(ckpt.get("epoch_examples", 0))
        log(f"resuming from {ckpt['_dir']} at step {step} of {total}")
    last_good = step if ckpt is not None else None
    log(
        f"{cfg.mode} student: {len(train)} examples x {train.length} tokens, {cfg.epochs} "
        f"epochs, {total} steps of {global_batch} sequences ({dist.world_size} process(es)), "
        + (f"loss {cfg.loss} T={cfg.temperature} alpha={cfg.alpha}, " if cfg.mode == "soft" else "")
        + f"lr {cfg.lr} {cfg.schedule}, {cfg.precision}"
    )

    # ---- the loop --------------------------------------------------------------------------
    order_epoch, order = -1, None
    t0 = time.perf_counter()
    while step < total:
        epoch, in_epoch = divmod(step, per_epoch)
        if epoch != order_epoch:
            order_epoch, order = epoch, epoch_order(len(train), cfg.seed, epoch)
        assert order is not None
        # predicted positions in this (possibly smaller, last) global step: its loss is
        # normalised by its own tokens
        n_step = step_examples(n_train, in_epoch, global_batch)
        step_tokens = n_step * (train.length - 1)
        lr = lr_at(step, total, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr

        sums = torch.zeros(2, dtype=torch.float64, device=dist.device)  # loss, kl
        micro = micro_batches(order, in_epoch, cfg.batch_size, cfg.grad_accum, dist)
        try:
            for m, idx in enumerate(micro):
                # a rank out of examples on the last step runs a discarded row (collectives)
                ids = torch.from_numpy(train.tokens[idx if len(idx) else order[:1]])
                ids = ids.to(dist.device)
                th = tw = None
                targets: torch.Tensor | None = ids[:, 1:]
                if cfg.mode == "soft":
                    assert trunk is not None
                    with autocast(t_prec, dist.device):
                        th, tw = trunk(ids)
                    targets = ids[:, 1:] if cfg.alpha > 0 else None
                elif cfg.mode == "argmax":
                    assert trunk is not None
                    with autocast(t_prec, dist.device):
                        th_argmax, tw_argmax = trunk(ids)
                    # outside autocast: the argmax of fp32 logits (bf16 would break near-ties)
                    targets = teacher_argmax(th_argmax, tw_argmax, cfg.chunk_size)
                with no_sync(model, sync=m == len(micro) - 1):
                    with autocast(cfg.precision, dist.device):
                        loss_sum, kl_sum, _, _ = model(ids, targets, th, tw)
                    keep = float(len(idx) > 0)
                    loss_sum, kl_sum = loss_sum * keep, kl_sum * keep
                    (loss_sum * (dist.world_size / step_tokens)).backward()
                sums += torch.stack([loss_sum.detach().double(), kl_sum.double()])
        except torch.OutOfMemoryError as e:
            raise oom_error(step + 1, cfg, e) from None
        sums = dist.all_reduce_sum(sums)
        grad_norm = (
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            if cfg.max_grad_norm > 0
            else torch.zeros(())
        )
        if not (torch.isfinite(sums[0]) and torch.isfinite(torch.as_tensor(grad_norm))):
            where = f"step {last_good} in {out / CHECKPOINT}" if last_good else "none yet"
            raise NonFiniteLossError(
                f"loss is {float(sums[0] / step_tokens):.4g} at step {step + 1} (epoch "
                f"{epoch + 1}); stopped before applying it; last good checkpoint: {where}; "
                "lower --lr or --temperature, use --precision fp32, or check the data"
            )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        epoch_loss += float(sums[0])
        epoch_kl += float(sums[1])
        epoch_tokens += step_tokens
        epoch_examples += n_step

        end_of_epoch = step % per_epoch == 0
        if end_of_epoch or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
            epoch_time += time.perf_counter() - t0
            t0 = time.perf_counter()
            if end_of_epoch:
                row: dict[str, Any] = {
                    "epoch": epoch + 1,
                    "step": step,
                    "lr": lr,
                    "train_loss": epoch_loss / epoch_tokens,
                    "tokens": epoch_tokens,
                    "examples": epoch_examples,
                    "tokens_per_s": epoch_tokens / max(epoch_time, 1e-9),
                }
                if cfg.mode == "soft":
                    row["train_kl"] = epoch_kl / epoch_tokens
                if val is not None:
                    row |= validate_model(model, val.tokens, cfg, dist, trunk)
                metrics.append(row)
                log(" ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in row.items()))  # fmt: skip
                if dist.is_main:
                    write_json_atomic(out / METRICS, metrics)
                epoch_loss, epoch_kl, epoch_tokens, epoch_examples, epoch_time = 0.0, 0.0, 0, 0, 0.0
            state = {
                "step": step,
                "total_steps": total,
                "config_hash": config_hash(cfg),
                "metrics": metrics,
                "epoch_loss": epoch_loss,
                "epoch_kl": epoch_kl,
                "epoch_tokens": epoch_tokens,
                "epoch_examples": epoch_examples,
                "epoch_time": epoch_time,
                "world_size": dist.world_size,
                "global_batch": global_batch,
            }
            save_checkpoint(out, model, optimizer, state, dist)
            last_good = step
        if cfg.snapshot_every and step % cfg.snapshot_every == 0:
            save_snapshot(out, step, lm, known.tokenizer, optimizer, model, dist)
        if stop_after_step is not None and step == stop_after_step:
            raise KeyboardInterrupt(f"stopped after step {step}")

    info = {
        "recipe": "distill",
        "role": f"{cfg.mode}_student",
        "base_model": cfg.student,
        "teacher": cfg.teacher,
        "teacher_hash": teacher_hash,
        "steps": total,
        "world_size": dist.world_size,
        "vocab": vocab,
    }
    info["tokenizer_check"] = tok_check
    result = save_final(out, lm, known.tokenizer, info, metrics, cfg, optimizer, model, dist)
    log(f"wrote {out} (model {result['model_hash'][:12]})")
    return result
