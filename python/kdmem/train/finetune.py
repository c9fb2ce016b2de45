"""Cross-entropy fine-tuning: the study's teacher and baseline (``kdmem train``).

One loop, top to bottom: AdamW, warmup + cosine, gradient accumulation, fp32 or bf16
autocast, gradient clipping, a data order that depends only on ``(seed, epoch)``, held-out
validation loss and perplexity per epoch (``OUT/metrics.json``), and resumable checkpoints
(``OUT/checkpoint``, safetensors + JSON, no pickle). Rerunning the same command after a
kill resumes from the last checkpoint and ends with the same weights as an uninterrupted
run. Under ``torchrun`` / ``accelerate launch`` it runs DDP (or FSDP2 with
``distributed = "fsdp"``); see docs/train.md.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from transformers import AutoConfig

from kdmem.config import FinetuneConfig, config_hash
from kdmem.errors import NonFiniteLossError
from kdmem.identity import check_same_tokenizer
from kdmem.models.load import check_model_arg, head_of, load_model, reinit_head
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
from kdmem.train.student import StudentLoss
from kdmem.train.student import validate as validate_model

__all__ = ["finetune"]


def _log(msg: str) -> None:
    print(f"kdmem train: {msg}", file=sys.stderr, flush=True)


def finetune(
    cfg: FinetuneConfig,
    *,
    log: Callable[[str], None] = _log,
    stop_after_step: int | None = None,
) -> dict[str, Any]:
    """Fine-tune ``cfg.model`` on ``cfg.data`` with next-token cross-entropy into ``cfg.out``.

    Returns the contents of ``OUT/kdmem.json`` (config, hashes, per-epoch metrics).
    ``stop_after_step`` raises ``KeyboardInterrupt`` after that optimizer step, as a kill
    would (tests use it to check resume)."""
    cfg.validate()
    dist = setup_distributed(cfg.device)
    out = Path(cfg.out)
    check_path_writable(out)
    check_model_arg(cfg.model, "--model")
    finished, ckpt = check_resume(out, cfg)
    if finished is not None:
        log(f"{out} is already complete (config {finished['config_hash'][:12]}); nothing to do")
        return finished
    if not dist.is_main:
        log = lambda _msg: None  # noqa: E731

    # ---- data and model ------------------------------------------------------------------
    mv = model_vocab(cfg.model)  # the tokenizer's ids, or the lm-head rows without one
    train = load_training_data(cfg.data, cfg.seq_len, mv.size, "--data", mv.what)
    tok_check = check_same_tokenizer(
        train.tokenizer_hash, f"--data {train.source}", mv.hash, "the model"
    )
    if mv.tokenizer is None:
        log(f"{cfg.model} ships no tokenizer: token ids checked against its lm-head rows only")
    val = (
        load_training_data(cfg.val_data, train.length, mv.size, "--val-data", mv.what)
        if cfg.val_data
        else None
    )
    torch.manual_seed(cfg.seed)
    if cfg.init == "random":
        lm = build_model(AutoConfig.from_pretrained(cfg.model), seed=cfg.seed)
    else:
        lm = load_model(cfg.model)
    if cfg.seed_init == "random_head" and cfg.init == "pretrained":
        reinit_head(lm, cfg.seed)
    cast(nn.Module, lm).to(dist.device)
    lm.train()
    vocab = aligned_vocab(mv.size, head_of(lm).weight.shape[0])
    student = StudentLoss(lm, vocab, cfg.chunk_size)
    model = wrap_student(student, cfg, dist)
    optimizer = make_optimizer(model, cfg)

    per_epoch = steps_per_epoch(len(train), cfg, dist)
    total = per_epoch * cfg.epochs
    global_batch = cfg.batch_size * cfg.grad_accum * dist.world_size
    n_train = len(train)  # predicted positions per step
    step, metrics = 0, []
    epoch_loss, epoch_tokens, epoch_examples, epoch_time = 0.0, 0, 0, 0.0
    if ckpt is not None:
        check_global_batch(ckpt, global_batch)
        load_checkpoint(ckpt, model, optimizer)
        step, metrics = int(ckpt["step"]), list(ckpt["metrics"])
        epoch_loss, epoch_tokens = float(ckpt["epoch_loss"]), int(ckpt["epoch_tokens"])
        epoch_time = float(ckpt["epoch_time"])
        epoch_examples = int(ckpt.get("epoch_examples", 0))
        log(f"resuming from {ckpt['_dir']} at step {step} of {total}")
    last_good = step if ckpt is not None else None
    log(
        f"{cfg.role}: {len(train)} examples x {train.length} tokens, {cfg.epochs} epochs, "
        f"{total} steps of {global_batch} sequences ({dist.world_size} process(es)), lr {cfg.lr} "
        f"{cfg.schedule}, {cfg.precision}"
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

        step_loss = torch.zeros((), dtype=torch.float64, device=dist.device)
        micro = micro_batches(order, in_epoch, cfg.batch_size, cfg.grad_accum, dist)
        try:
            for m, rows in enumerate(micro):
                # a rank out of examples on the last step runs a discarded row (collectives)
                ids = torch.from_numpy(train.tokens[rows if len(rows) else order[:1]])
                ids = ids.to(dist.device)
                with no_sync(model, sync=m == len(micro) - 1):
                    with autocast(cfg.precision, dist.device):
                        loss_sum, _, _, _ = model(ids, ids[:, 1:])
                    loss_sum = loss_sum * float(len(rows) > 0)
                    # sum over tokens / tokens in the global step; DDP averages over ranks
                    (loss_sum * (dist.world_size / step_tokens)).backward()
                step_loss += loss_sum.detach().double()
        except torch.OutOfMemoryError as e:
            raise oom_error(step + 1, cfg, e) from None
        step_loss = dist.all_reduce_sum(step_loss)
        grad_norm = (
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            if cfg.max_grad_norm > 0
            else torch.zeros(())
        )
        if not (torch.isfinite(step_loss) and torch.isfinite(torch.as_tensor(grad_norm))):
            where = f"step {last_good} in {out / CHECKPOINT}" if last_good else "none yet"
            raise NonFiniteLossError(
                f"loss is {float(step_loss / step_tokens):.4g} at step {step + 1} (epoch "
                f"{epoch + 1}); stopped before applying it; last good checkpoint: {where}; "
                "lower --lr, use --precision fp32, or check the data"
            )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        epoch_loss += float(step_loss)
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
                if val is not None:
                    row |= validate_model(model, val.tokens, cfg, dist)
                metrics.append(row)
                log(" ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in row.items()))  # fmt: skip
                if dist.is_main:
                    write_json_atomic(out / METRICS, metrics)
                epoch_loss, epoch_tokens, epoch_examples, epoch_time = 0.0, 0, 0, 0.0
            state = {
                "step": step,
                "total_steps": total,
                "config_hash": config_hash(cfg),
                "metrics": metrics,
                "epoch_loss": epoch_loss,
                "epoch_tokens": epoch_tokens,
                "epoch_examples": epoch_examples,
                "epoch_time": epoch_time,
                "world_size": dist.world_size,
                "global_batch": global_batch,
            }
            save_checkpoint(out, model, optimizer, state, dist)
            last_good = step
        if cfg.snapshot_every and step % cfg.snapshot_every == 0:
            save_snapshot(out, step, lm, mv.tokenizer, optimizer, model, dist)
        if stop_after_step is not None and step == stop_after_step:
            raise KeyboardInterrupt(f"stopped after step {step}")

    info = {
        "recipe": "finetune",
        "role": cfg.role,
        "base_model": cfg.model,
        "steps": total,
        "world_size": dist.world_size,
        "vocab": vocab,
        "tokenizer_check": tok_check,
    }
    result = save_final(out, lm, mv.tokenizer, info, metrics, cfg, optimizer, model, dist)
    log(f"wrote {out} (model {result['model_hash'][:12]})")
    return result
