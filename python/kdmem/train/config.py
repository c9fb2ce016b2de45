"""Typed, frozen configs of the training recipes (no torch import here).

One dataclass per recipe: :class:`FinetuneConfig` (``kdmem train``, cross-entropy teacher or
baseline) and :class:`DistillConfig` (``kdmem distill``, soft / hard / argmax student). Both
share the optimisation fields of :class:`OptimConfig`. ``from_dict`` rejects unknown keys and
values of the wrong type, so a TOML file (``kdmem run EXP.toml``) or ``key=value`` overrides
can drive them. ``config_hash`` covers every field that changes the trained weights; a
checkpoint only resumes under the same hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args, get_origin

from kdmem.errors import InvalidArgumentError

__all__ = ["DistillConfig", "FinetuneConfig", "OptimConfig", "config_from_dict", "config_hash"]

Precision = Literal["fp32", "bf16"]
Schedule = Literal["cosine", "linear", "constant"]
Distributed = Literal["ddp", "fsdp"]


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """Fields shared by every recipe. Batch sizes are in sequences; ``batch_size`` is per
    process, so the global batch is ``batch_size * grad_accum * world_size``."""

    data: str
    out: str
    val_data: str | None = None
    seq_len: int | None = None  # tokens per training sequence; None = the data's length
    epochs: int = 3
    lr: float = 5e-5
    schedule: Schedule = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # cosine/linear decay to lr * min_lr_ratio
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    batch_size: int = 8
    grad_accum: int = 1
    max_grad_norm: float = 1.0  # 0 = no clipping
    precision: Precision = "fp32"  # bf16 = autocast with fp32 master weights
    seed: int = 0  # data order (and init when init = "random")
    init: Literal["pretrained", "random"] = "pretrained"
    checkpoint_every: int = 0  # optimizer steps; 0 = at the end of each epoch only
    keep_checkpoint: bool = False  # keep OUT/checkpoint after the final model is written
    chunk_size: int = 128  # sequence positions per fp32 logits block in the loss
    distributed: Distributed = "ddp"  # under torchrun / accelerate launch
    device: str | None = None  # default: cuda:LOCAL_RANK when available, else cpu

    def validate(self) -> None:
        """Raise ``InvalidArgumentError`` naming the first out-of-domain value."""
        positive = ("epochs", "batch_size", "grad_accum", "chunk_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise InvalidArgumentError(f"invalid {name} = {getattr(self, name)}: must be >= 1")
        for name in ("warmup_steps", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise InvalidArgumentError(f"invalid {name} = {getattr(self, name)}: must be >= 0")
        if not self.lr > 0:
            raise InvalidArgumentError(f"invalid lr = {self.lr}: must be > 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise InvalidArgumentError(f"invalid min_lr_ratio = {self.min_lr_ratio}: use [0, 1]")
        if self.seq_len is not None and self.seq_len < 2:
            raise InvalidArgumentError(f"invalid seq_len = {self.seq_len}: must be >= 2")


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig(OptimConfig):
    """Cross-entropy fine-tuning of ``model`` (hub id or local dir) on ``data``; ``role``
    (teacher or baseline) is recorded in ``OUT/kdmem.json``."""

    role: Literal["teacher", "baseline"]
    model: str


@dataclass(frozen=True, kw_only=True)
class DistillConfig(OptimConfig):
    """Distil ``teacher`` (a fine-tuned model dir) into ``student`` (hub id or dir).

    ``mode``: soft = ``(1 - alpha) * T^2 * D(teacher, student) + alpha * CE`` at every token
    (paper: fkl, T = 2, alpha = 0); hard = CE on the teacher's greedy continuations of
    ``prefix_len``-token prefixes to ``gen_len`` tokens; argmax = CE on the teacher's argmax
    next token at every position of the original text."""

    teacher: str
    student: str
    mode: Literal["soft", "hard", "argmax"] = "soft"
    loss: Literal["fkl", "rkl", "jsd"] = "fkl"
    temperature: float = 2.0
    alpha: float = 0.0
    beta: float = 0.5  # jsd only
    prefix_len: int = 50
    gen_len: int = 256  # total length of a hard-mode sequence (prefix + continuation)
    gen_batch_size: int = 32
    generations_dir: str | None = None  # hard-mode cache; default OUT/../generations
    teacher_precision: Precision | None = None  # default: precision
    teacher_shard: Literal["none", "fsdp", "fsdp_offload"] = "none"

    def validate(self) -> None:
        super().validate()
        if not self.temperature > 0:
            raise InvalidArgumentError(f"invalid temperature = {self.temperature}: must be > 0")
        if not 0.0 <= self.alpha <= 1.0:
            raise InvalidArgumentError(f"invalid alpha = {self.alpha}: use [0, 1]")
        if self.loss == "jsd" and not 0.0 < self.beta < 1.0:
            raise InvalidArgumentError(
                f"invalid beta = {self.beta}: jsd needs 0 < beta < 1 (beta -> 0 is fkl)"
            )
        if self.mode == "hard" and not 0 < self.prefix_len < self.gen_len:
            raise InvalidArgumentError(
                f"invalid prefix_len = {self.prefix_len} / gen_len = {self.gen_len}: "
                "need 0 < prefix_len < gen_len"
            )
        if self.teacher_shard != "none" and self.distributed != "fsdp":
            raise InvalidArgumentError(
                f"teacher_shard = {self.teacher_shard!r} needs distributed = 'fsdp'"
            )


C = TypeVar("C", bound=OptimConfig)

# fields that do not change the trained weights (excluded from the hash)
_NOT_HASHED = {"out", "keep_checkpoint", "device", "generations_dir", "gen_batch_size"}


def _check_type(name: str, value: Any, tp: Any) -> Any:
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise InvalidArgumentError(f"invalid {name} = {value!r}: choose one of {choices}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in get_args(tp):
            return None
        errors = []
        for arg in get_args(tp):
            if arg is type(None):
                continue
            try:
                return _check_type(name, value, arg)
            except InvalidArgumentError as e:
                errors.append(str(e))
        raise InvalidArgumentError(errors[0] if errors else f"invalid {name} = {value!r}")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool):
        raise InvalidArgumentError(f"invalid {name} = {value!r}: expected int")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise InvalidArgumentError(
            f"invalid {name} = {value!r}: expected {tp.__name__}, got {type(value).__name__}"
        )
    return value


def config_from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Build ``cls`` from a mapping (e.g. a TOML table); unknown keys and wrong types raise
    ``InvalidArgumentError``; ``validate()`` is applied."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise InvalidArgumentError(
            f"unknown {cls.__name__} key(s) {unknown}; valid keys: {', '.join(sorted(fields))}"
        )
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [k for k in required if values.get(k) is None]
    if missing:
        opts = ", ".join("--" + k.replace("_", "-") for k in missing)
        raise InvalidArgumentError(f"missing required {cls.__name__} key(s): {opts}")
    checked = {k: _check_type(k, v, hints[k]) for k, v in values.items()}
    cfg = cls(**checked)
    cfg.validate()
    return cfg


def config_hash(cfg: OptimConfig) -> str:
    """SHA-256 hex of the fields that determine the trained weights (sorted JSON)."""
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_HASHED}
    d["__recipe__"] = type(cfg).__name__
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


HELP: dict[str, str] = {
    "role": "Which study role this fine-tune produces (recorded in OUT/kdmem.json).",
    "model": "Base model: hub id or local directory (safetensors).",
    "teacher": "Fine-tuned teacher directory (or hub id).",
    "student": "Student base model: hub id or local directory.",
    "data": "Training set D: shard dir, .parquet or 2-D .npy of token ids.",
    "out": "Output directory: model, metrics.json, kdmem.json, checkpoint/.",
    "val_data": "Held-out set for validation loss / perplexity per epoch.",
    "seq_len": "Tokens per sequence (default: the data's length).",
    "epochs": "Passes over the data.",
    "lr": "Peak learning rate (paper: 5e-5).",
    "schedule": "Decay after warmup.",
    "warmup_steps": "Linear warmup steps.",
    "min_lr_ratio": "Final lr as a fraction of --lr.",
    "weight_decay": "AdamW weight decay (matrices only).",
    "batch_size": "Sequences per micro-batch per process.",
    "grad_accum": "Micro-batches per optimizer step.",
    "max_grad_norm": "Gradient clipping norm (0 = off).",
    "precision": "fp32, or bf16 autocast with fp32 master weights.",
    "seed": "Seed of the data order (and of init with --init random).",
    "init": "Start from the pretrained weights or a seeded random init of the same config.",
    "checkpoint_every": "Checkpoint every N optimizer steps (0 = end of each epoch).",
    "keep_checkpoint": "Keep OUT/checkpoint after the final model is written.",
    "chunk_size": "Sequence positions per fp32 logits block in the loss.",
    "distributed": "Multi-process strategy under torchrun / accelerate launch.",
    "device": "cpu, cuda, cuda:1 (default: cuda:LOCAL_RANK if available).",
    "mode": "soft: T^2*KL at every token; hard: CE on teacher continuations; argmax: CE on teacher argmax.",
    "loss": "Soft-mode divergence: forward KL, reverse KL or generalized JSD.",
    "temperature": "Softmax temperature of the soft loss (paper: 2).",
    "alpha": "Weight of ground-truth CE mixed into the soft loss (paper: 0).",
    "beta": "Generalized JSD mixing weight.",
    "prefix_len": "Hard mode: prefix tokens given to the teacher (paper: 50).",
    "gen_len": "Hard mode: total tokens per synthetic sequence (paper: 256).",
    "gen_batch_size": "Hard mode: sequences per generation batch.",
    "generations_dir": "Hard mode: continuation cache (default OUT/../generations).",
    "teacher_precision": "Teacher dtype (default: --precision).",
    "teacher_shard": "Shard the teacher with FSDP2 (optionally CPU-offloaded); needs --distributed fsdp.",
}
