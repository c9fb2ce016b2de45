"""Small helpers shared by the recipes: process setup, data order, learning-rate schedule,
optimizer, the loss-computing student wrapper, validation, checkpoints and the final save.

No training loop lives here; each recipe (finetune.py, distill.py) reads top to bottom.

Checkpoint layout (``OUT/checkpoint/``, replaced atomically as a directory):

* ``model.safetensors``  full (unsharded) student state dict
* ``optim.safetensors``  AdamW tensors as ``state.<param fqn>.<exp_avg|exp_avg_sq|step>``
* ``rng.safetensors``    torch CPU generator state (``torch_cpu``) and CUDA ones (``cuda.<i>``)
* ``state.json``         step, epoch, config hash, optimizer param-group scalars, metrics so far

No pickle anywhere. The data order is a pure function of ``(seed, epoch)``, so the sampler
has no state to save.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdmem import _dist
from kdmem.data import Examples, load_examples
from kdmem.errors import (
    InvalidArgumentError,
    KdmemIOError,
    TokenizerMismatchError,
    TokenRangeError,
    TrainingOutOfMemoryError,
)
from kdmem.train import losses
from kdmem.train.config import OptimConfig, config_hash

CHECKPOINT = "checkpoint"
METRICS = "metrics.json"
STATE = "state.json"


# ---- processes ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dist(_dist.Dist):
    """:class:`kdmem._dist.Dist` plus the device this rank trains on."""

    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))


def setup_distributed(device: str | None) -> Dist:
    """Join the process group when launched by torchrun / accelerate launch (``WORLD_SIZE``
    > 1): NCCL on CUDA, gloo on CPU. Returns the device this rank trains on."""
    # rank 0 alone writes checkpoints and validates: allow long waits at the barrier
    d = _dist.init_distributed(device, timeout=timedelta(hours=4))
    dev = torch.device(_dist.pick_device(device, d))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return Dist(d.rank, d.world_size, d.local_rank, d.initialized_here, dev)


# ---- data -----------------------------------------------------------------------------------
def load_training_data(path: str, seq_len: int | None, vocab_size: int, what: str) -> Examples:
    """Examples ``[N, L]`` cut to ``seq_len`` tokens; one-line errors for data shorter than
    ``seq_len`` and token ids outside the tokenizer's ``vocab_size``."""
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
        raise TokenRangeError(
            f"{what} {path}: token id {top} is outside the tokenizer's {vocab_size} ids; "
            "the data was tokenized with a different tokenizer"
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
    depend on how ``G`` is split between processes and accumulation."""
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
    """Full global batches per epoch; the last ``n % G`` examples of each epoch's order are
    skipped (a different random set each epoch)."""
    g = cfg.batch_size * cfg.grad_accum * dist.world_size
    if n < g:
        raise InvalidArgumentError(
            f"{n} training examples are fewer than one global batch of {g} "
            f"(batch_size {cfg.batch_size} x grad_accum {cfg.grad_accum} x {dist.world_size} "
            "processes); lower --batch-size or --grad-accum"
        )
    return n // g


# ---- optimisation ---------------------------------------------------------------------------
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


def autocast(cfg_precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast (fp32 master weights) or nothing."""
    if cfg_precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def no_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager[Any]:
    """Skip the gradient all-reduce on accumulation micro-batches (DDP and FSDP2)."""
    if sync:
        return contextlib.nullcontext()
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2

        @contextlib.contextmanager
        def _off() -> Iterator[None]:
            model.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)

        return _off()
    return contextlib.nullcontext()


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


# ---- models ---------------------------------------------------------------------------------
def tokenizer_hash(tok: Any) -> str:
    """docs/formats.md tokenizer hash (one implementation: :func:`kdmem.corpus.tokenizer_hash`)."""
    from kdmem.corpus import tokenizer_hash as _hash

    return str(_hash(tok))


def check_data_tokenizer(ex: Examples, tok: Any, what: str) -> None:
    """The data's recorded tokenizer (when known) must be the model's."""
    if ex.tokenizer_hash and ex.tokenizer_hash != tokenizer_hash(tok):
        raise TokenizerMismatchError(
            f"tokenizer mismatch: {what} {ex.source} was tokenized with tokenizer "
            f"{ex.tokenizer_hash[:12]}, the model's is {tokenizer_hash(tok)[:12]}; "
            "re-shard the data with the model's tokenizer"
        )


def head_rows(id_or_dir: str) -> int:
    """lm-head rows (``vocab_size`` of the config) of a model, without loading weights."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(id_or_dir)
    return int(cfg.get_text_config().vocab_size)


def head_of(model: nn.Module) -> nn.Module:
    """The lm-head (``[V, H]`` Linear) of a Hugging Face causal LM."""
    head = model.get_output_embeddings()  # type: ignore[operator]
    if head is None or not hasattr(head, "weight"):
        raise InvalidArgumentError(f"{type(model).__name__} has no linear lm-head")
    return head


def trunk_hidden(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Final (post-norm) hidden states ``[B, S, H]`` of a causal LM, without its logits."""
    out = model.base_model(input_ids=input_ids, use_cache=False)  # type: ignore[operator]
    return out.last_hidden_state


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


# ---- files ----------------------------------------------------------------------------------
def write_json_atomic(path: Path, obj: Any) -> None:
    """JSON to ``path`` atomically (sorted keys; NaN allowed for diverged metrics)."""
    from kdmem._io import write_json_atomic as _write

    _write(path, obj, sort_keys=True, allow_nan=True)


def _full_state(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, Any]]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(
        model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def save_checkpoint(
    out: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    dist: Dist,
) -> None:
    """Write ``OUT/checkpoint`` atomically (collective: every rank must call it)."""
    from safetensors.torch import save_file

    msd, osd = _full_state(model, optimizer)
    if dist.is_main:
        tmp = Path(tempfile.mkdtemp(prefix=f".{CHECKPOINT}.tmp-", dir=out))
        try:
            save_file({k: v.contiguous() for k, v in msd.items()}, str(tmp / "model.safetensors"))
            tensors = {
                f"state.{fqn}.{k}": v.detach().cpu().contiguous()
                for fqn, st in osd["state"].items()
                for k, v in st.items()
            }
            save_file(tensors, str(tmp / "optim.safetensors"))
            rng = {"torch_cpu": torch.get_rng_state()}
            if torch.cuda.is_available():
                for i, s in enumerate(torch.cuda.get_rng_state_all()):
                    rng[f"cuda.{i}"] = s
            save_file(rng, str(tmp / "rng.safetensors"))
            groups = [
                {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
                for g in osd["param_groups"]
            ]
            write_json_atomic(tmp / STATE, {**state, "param_groups": groups})
            final = out / CHECKPOINT
            old = out / f".{CHECKPOINT}.old"
            if old.exists():
                shutil.rmtree(old)
            if final.exists():
                final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    dist.barrier()


def read_checkpoint_state(out: Path) -> dict[str, Any] | None:
    """``state.json`` of ``OUT/checkpoint`` or None (also recovers an interrupted swap)."""
    final, old = out / CHECKPOINT, out / f".{CHECKPOINT}.old"
    if not (final / STATE).exists() and (old / STATE).exists():
        return json.loads((old / STATE).read_text()) | {"_dir": str(old)}
    if (final / STATE).exists():
        return json.loads((final / STATE).read_text()) | {"_dir": str(final)}
    return None


def load_checkpoint(
    state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer
) -> None:
    """Restore weights, AdamW state and RNG from the directory named in ``state['_dir']``
    (every rank reads the full tensors and keeps its own shard)."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    d = Path(state["_dir"])
    msd = load_file(str(d / "model.safetensors"))
    flat = load_file(str(d / "optim.safetensors"))
    osd_state: dict[str, dict[str, torch.Tensor]] = {}
    for key, v in flat.items():
        fqn, k = key[len("state.") :].rsplit(".", 1)
        osd_state.setdefault(fqn, {})[k] = v
    groups = [
        {k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in state["param_groups"]
    ]
    set_state_dict(
        model,
        optimizer,
        model_state_dict=msd,
        optim_state_dict={"state": osd_state, "param_groups": groups},
        options=StateDictOptions(full_state_dict=True),
    )
    rng = load_file(str(d / "rng.safetensors"))
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [rng[f"cuda.{i}"] for i in range(torch.cuda.device_count()) if f"cuda.{i}" in rng]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)


def check_global_batch(state: dict[str, Any], global_batch: int) -> None:
    """A checkpoint resumes only with the same global batch (steps index the data order)."""
    saved = int(state.get("global_batch", global_batch))
    if saved != global_batch:
        raise InvalidArgumentError(
            f"{state['_dir']} was written with a global batch of {saved} sequences, now "
            f"{global_batch}; resume with batch_size x grad_accum x processes = {saved}"
        )


def check_resume(
    out: Path, cfg: OptimConfig
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(finished, checkpoint_state)``: the ``kdmem.json`` of a complete run with the same
    config hash (then there is nothing to do), and the checkpoint to resume from, if any.
    A different config hash in ``OUT`` is an error, never silently overwritten."""
    h = config_hash(cfg)
    done = out / "kdmem.json"
    if done.exists():
        info = json.loads(done.read_text())
        if info.get("config_hash") == h and info.get("complete"):
            return info, None
        raise InvalidArgumentError(
            f"{out} already holds a model trained with another config (hash "
            f"{str(info.get('config_hash'))[:12]}); choose another --out or delete it"
        )
    st = read_checkpoint_state(out)
    if st is not None and st.get("config_hash") != h:
        raise InvalidArgumentError(
            f"{out / CHECKPOINT} was written by another config (hash "
            f"{str(st.get('config_hash'))[:12]}, now {h[:12]}); use the same options to resume "
            "or delete the checkpoint"
        )
    return None, st


def save_final(
    out: Path,
    lm: nn.Module,
    tokenizer: Any,
    info: dict[str, Any],
    metrics: list[dict[str, Any]],
    cfg: OptimConfig,
    optimizer: torch.optim.Optimizer,
    wrapped: nn.Module,
    dist: Dist,
) -> dict[str, Any]:
    """Write the trained model into ``OUT`` (safetensors + config + tokenizer), then
    ``metrics.json``, then ``kdmem.json`` (``complete: true``) last (collective)."""
    from kdmem.models import model_hash, save_model

    sharded = is_fsdp(wrapped)
    full = _full_state(wrapped, optimizer)[0] if sharded else None
    if dist.is_main:
        staging = out / ".final"
        if staging.exists():
            shutil.rmtree(staging)
        if full is not None:  # FSDP: a fresh CPU model holding the gathered weights
            from transformers import AutoModelForCausalLM

            plain = AutoModelForCausalLM.from_config(lm.config)  # type: ignore[attr-defined]
            plain.load_state_dict({k.removeprefix("lm."): v for k, v in full.items()})
            plain.generation_config = lm.generation_config  # type: ignore[attr-defined]
            save_model(plain, staging, tokenizer)
        else:
            save_model(lm, staging, tokenizer)  # type: ignore[arg-type]
        for f in sorted(staging.iterdir()):
            os.replace(f, out / f.name)
        staging.rmdir()
        write_json_atomic(out / METRICS, metrics)
        info = {**info, "config": dataclasses.asdict(cfg), "config_hash": config_hash(cfg)}
        info |= {"model_hash": model_hash(out), "complete": True, "metrics": metrics}
        write_json_atomic(out / "kdmem.json", info)
        if not cfg.keep_checkpoint:
            shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    dist.barrier()
    return dict(json.loads((out / "kdmem.json").read_text()))


def is_fsdp(model: nn.Module) -> bool:
    return hasattr(model, "set_requires_gradient_sync")


def _layers(lm: nn.Module) -> list[nn.Module]:
    names = set(getattr(lm, "_no_split_modules", None) or [])
    return [m for m in lm.modules() if type(m).__name__ in names]


def shard_fsdp(module: nn.Module, lm: nn.Module, offload: bool = False) -> nn.Module:
    """FSDP2 (``fully_shard``): each decoder layer (``lm._no_split_modules``) is its own
    unit, then the root; parameters stay fp32 (bf16 compute comes from autocast).
    ``offload`` keeps sharded parameters in CPU memory between uses (``CPUOffloadPolicy``)."""
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    policy = CPUOffloadPolicy() if offload else OffloadPolicy()
    for layer in _layers(lm):
        fully_shard(layer, offload_policy=policy)
    fully_shard(module, offload_policy=policy)
    return module


def wrap_student(student: nn.Module, cfg: OptimConfig, dist: Dist) -> nn.Module:
    """DDP or FSDP2 around the student under torchrun; the module itself for one process."""
    if dist.world_size == 1:
        return student
    if cfg.distributed == "fsdp":
        return shard_fsdp(student, student.lm)  # type: ignore[arg-type]
    ids = [dist.device.index] if dist.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(student, device_ids=ids)


def check_model_arg(id_or_dir: str, what: str) -> None:
    """A path-like ``--model``/``--teacher``/``--student`` must exist (else transformers
    would try it as a hub id and fail with a long traceback)."""
    looks_like_path = id_or_dir.startswith((".", "/", "~")) or id_or_dir.count("/") > 1
    if looks_like_path and not Path(id_or_dir).expanduser().exists():
        raise KdmemIOError(f"{what} {id_or_dir}: no such directory; pass a model dir or hub id")


def check_path_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KdmemIOError(f"cannot create output directory {out}: {e.strerror}") from None
