"""Bytes per GPU of a model pass, from model configs alone (no weights are read).

:func:`model_shape` reads a config (``transformers.AutoConfig``) and counts its parameters
exactly by instantiating the model on the ``meta`` device (no memory, no weights). The
estimates below then add up what lives on one device at the peak of a pass:

* **training** (:func:`train_bytes`; kdmem's recipes keep fp32 master weights and AdamW):
  weights 4 B/param, gradients 4 B/param, AdamW moments 8 B/param -- divided by the world
  size under FSDP (plus the unsharded root and two gathered layers), replicated under DDP
  (plus DDP's 4 B/param of gradient buckets); with bf16 autocast, a 2 B/param copy of every
  decoder-layer matrix (autocast casts each weight once per forward and the backward keeps
  it, sharded or not); activations saved for the backward of one micro-batch; the chunked
  lm-head loss (fp32 logits of ``chunk`` positions, the head's gradient computed in the
  forward); and, for soft/argmax distillation, the frozen teacher (its weights in its
  precision, sharded under ``teacher_shard``, and its hidden states).
* **generation** (:func:`generate_bytes`): the teacher's weights and its KV cache.
* **measurement** (:func:`measure_bytes`): the model's (and the reference's) weights and one
  layer's forward activations of a batch.

Activations per token per decoder layer are linear in the widths; the coefficients
(:data:`ACTIVATION_COEF`) count the tensors each family's layer saves for its backward under
PyTorch's SDPA attention (no ``seq x seq`` matrix is kept), in bytes per unit of hidden size
``h``, query width ``q``, key/value width ``kv``, MLP width ``f`` and head count. They were
read off kdmem's own training step (``kdmem.measure.memory.TensorMeter``, the difference
between 2-layer and 1-layer models over a grid of widths, exact to a few bytes per token);
families not in the table use the Qwen-3 (Llama-like) row. The estimates are checked against
the peak of PyTorch's allocator over kdmem's training loop in ``benches/bench_plan.py`` (on
CPU ``kdmem.measure.memory.AllocatorMeter``, on a GPU ``torch.cuda.max_memory_allocated``;
README: performance table) and, for the tiny models, in tests/test_launch.py.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from kdmem.errors import KdmemIOError

__all__ = [
    "ACTIVATION_COEF",
    "Bytes",
    "ModelShape",
    "generate_bytes",
    "measure_bytes",
    "model_shape",
    "read_shape",
    "train_bytes",
]

# bytes per token per decoder layer = c_h*h + c_q*q + c_kv*kv + c_f*f + c_heads*heads
ACTIVATION_COEF: dict[str, dict[str, tuple[float, float, float, float, float]]] = {
    "fp32": {
        "gpt_neox": (13.33, 13.33, 13.33, 8.0, 4.3),
        "olmo2": (48.0, -8.0, 16.0, 16.0, 4.4),
        "qwen3": (24.0, 16.0, 16.0, 16.0, 12.2),
    },
    "bf16": {
        "gpt_neox": (7.37, 7.37, 7.37, 4.0, 4.3),
        "olmo2": (47.0, -9.0, 12.0, 8.0, 4.4),
        "qwen3": (26.0, 10.0, 10.0, 8.0, 12.2),
    },
}
DEFAULT_FAMILY = "qwen3"
DTYPE_BYTES = {"fp32": 4, "float32": 4, "bf16": 2, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ModelShape:
    """What the estimates need of one model, from its config: ``params`` (all, counted on
    the meta device; tied weights once), ``layer_params`` (one decoder layer),
    ``layer_linear`` (the matrices of one decoder layer), ``root_params`` (the rest:
    embeddings, final norm, lm head), widths and ``vocab`` (lm-head rows)."""

    name: str
    model_type: str
    params: int
    layers: int
    hidden: int
    intermediate: int
    heads: int
    q_width: int
    kv_width: int
    vocab: int
    layer_params: int
    layer_linear: int

    @property
    def root_params(self) -> int:
        return self.params - self.layers * self.layer_params

    @property
    def family(self) -> str:
        return self.model_type if self.model_type in ACTIVATION_COEF["fp32"] else DEFAULT_FAMILY

    def activation_per_token(self, precision: str) -> float:
        """Bytes saved for the backward per token, summed over the decoder layers."""
        ch, cq, ckv, cf, cn = ACTIVATION_COEF["bf16" if precision == "bf16" else "fp32"][
            self.family
        ]
        per_layer = (
            ch * self.hidden
            + cq * self.q_width
            + ckv * self.kv_width
            + cf * self.intermediate
            + cn * self.heads
        )
        return self.layers * per_layer


def _decoder_layers(model: Any) -> list[Any]:
    names = set(getattr(model, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


def model_shape(config: Any, name: str = "") -> ModelShape:
    """The :class:`ModelShape` of a ``transformers`` config, counting parameters on the
    ``meta`` device (nothing is allocated, no weights are read)."""
    import torch
    from torch import nn
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())  # parameters() yields tied ones once
    layers = _decoder_layers(model)
    layer = layers[0] if layers else None
    layer_params = sum(p.numel() for p in layer.parameters()) if layer is not None else 0
    layer_linear = (
        sum(m.weight.numel() for m in layer.modules() if isinstance(m, nn.Linear))
        if layer is not None
        else 0
    )
    head = model.get_output_embeddings()
    vocab = int(head.weight.shape[0]) if head is not None else int(config.vocab_size)
    hidden = int(config.hidden_size)
    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    return ModelShape(
        name=name,
        model_type=str(config.model_type),
        params=int(params),
        layers=len(layers) or int(config.num_hidden_layers),
        hidden=hidden,
        intermediate=int(getattr(config, "intermediate_size", 4 * hidden)),
        heads=heads,
        q_width=heads * head_dim,
        kv_width=kv_heads * head_dim,
        vocab=vocab,
        layer_params=int(layer_params),
        layer_linear=int(layer_linear),
    )


def read_shape(id_or_dir: str | os.PathLike[str]) -> ModelShape:
    """:func:`model_shape` of a hub id or local model directory (its ``config.json`` only).

    Raises :class:`~kdmem.errors.KdmemIOError` naming the model when its config cannot be
    read (not a directory with config.json, not in the hub cache offline)."""
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(str(id_or_dir))
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise KdmemIOError(
            f"cannot read the config of model {id_or_dir}: {first[:160]}; the plan needs a "
            "local directory with config.json, or a hub id in the local cache"
        ) from None
    return model_shape(cfg, str(id_or_dir))


@dataclass(frozen=True)
class Bytes:
    """Bytes on one device at the peak of a pass, by kind."""

    weights: int = 0
    grads: int = 0
    optimizer: int = 0
    activations: int = 0
    teacher: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.grads + self.optimizer + self.activations + self.teacher

    def asdict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


# fp32 [batch, chunk, vocab] blocks alive at once at the peak of one chunk of the lm-head
# loss (kdmem.train.losses), as PyTorch's CPU allocator counts them in kdmem's training step
# (benches/bench_plan.py, AllocatorMeter): cross-entropy holds the logits, their log-softmax,
# nll_loss's gradient and log-softmax's gradient; soft distillation (forward or reverse KL)
# holds student and teacher logits, both log-softmaxes and the three temporaries of
# ``kl_div(log_target=True)``: ``target - input``, ``exp(target)`` and their product
# (``loss = "jsd"`` and ``alpha > 0`` hold more; not modelled).
HEAD_BLOCKS = {"ce": 4, "kd": 7}


def _head_chunk(batch: int, chunk: int, seq: int, vocab: int, fp32_logits: int) -> int:
    """The chunked lm-head loss: ``fp32_logits`` fp32 ``[batch, chunk, vocab]`` blocks alive
    at once (:data:`HEAD_BLOCKS`); a chunk holds at most the ``seq - 1`` predicted positions."""
    return 4 * batch * min(chunk, seq - 1) * vocab * fp32_logits


def train_bytes(
    student: ModelShape,
    *,
    batch: int,
    seq: int,
    precision: str = "fp32",
    strategy: str = "ddp",
    world: int = 1,
    grad_accum: int = 1,
    chunk: int = 128,
    teacher: ModelShape | None = None,
    teacher_precision: str | None = None,
    teacher_shard: str = "none",
) -> Bytes:
    """Peak bytes on one device of a training step of ``student`` (micro-batch ``batch`` x
    ``seq`` tokens) on ``world`` processes; ``teacher`` for soft/argmax distillation.

    The step peaks either at the end of the forward (every saved activation, the lm head's
    gradient that the chunked loss computes in the forward) or at the end of the backward
    (every gradient, the activations freed layer by layer meanwhile); with ``grad_accum`` > 1
    the gradients of earlier micro-batches are there all along. The larger is returned."""
    p = student.params
    sharded = strategy == "fsdp" and world > 1
    div = world if sharded else 1
    # FSDP2 keeps the root (embeddings, head) gathered through forward and backward and
    # gathers one layer at a time with the next one prefetched.
    gathered = (student.root_params + 2 * student.layer_params) if sharded else 0
    weights = 4 * p // div + 4 * gathered
    optimizer = 8 * p // div
    all_grads = 4 * p // div
    if sharded:  # unsharded gradients of the root and one layer before their reduce-scatter
        all_grads += 4 * (student.root_params + student.layer_params)
    buckets = 4 * p if strategy == "ddp" and world > 1 else 0  # DDP: bucket_view=False
    tokens = batch * (seq - 1)
    act = student.activation_per_token(precision) * tokens
    act += 16 * student.hidden * tokens  # embedding output, final norm, fp32 hidden for the head
    if precision == "bf16":
        act += 2 * student.layers * student.layer_linear  # autocast's bf16 weight copies
    head_grad = 4 * student.vocab * student.hidden + 4 * tokens * student.hidden
    t_bytes = 0
    if teacher is not None:
        tb = DTYPE_BYTES[teacher_precision or precision]
        sharded_t = teacher_shard != "none" and world > 1
        t_weights = 0 if (teacher_shard == "fsdp_offload" and sharded_t) else tb * teacher.params
        if sharded_t:
            t_weights = t_weights // world + tb * (teacher.root_params + 2 * teacher.layer_params)
        # its final hidden states for the loss (fp32), and the fp32 copy of its head rows
        # that each loss chunk makes
        t_act = 4 * tokens * teacher.hidden + 4 * teacher.vocab * teacher.hidden
        t_bytes = t_weights + t_act
        act += _head_chunk(batch, chunk, seq, student.vocab, HEAD_BLOCKS["kd"])
    else:
        act += _head_chunk(batch, chunk, seq, student.vocab, HEAD_BLOCKS["ce"])
    if grad_accum > 1:
        grads, acts = all_grads + buckets, act + head_grad
    else:
        end_fwd = act + head_grad
        end_bwd = all_grads + 4 * tokens * student.hidden
        if end_fwd >= end_bwd:
            grads, acts = head_grad + buckets, act
        else:
            grads, acts = all_grads + buckets, 4 * tokens * student.hidden
    return Bytes(
        weights=int(weights),
        grads=int(grads),
        optimizer=int(optimizer),
        activations=int(acts),
        teacher=int(t_bytes),
    )


def generate_bytes(teacher: ModelShape, *, batch: int, total_len: int, dtype: str) -> Bytes:
    """Greedy generation of ``batch`` sequences to ``total_len`` tokens: the teacher's
    weights in ``dtype`` and its KV cache, plus one step's fp32 logits."""
    b = DTYPE_BYTES[dtype]
    kv = 2 * teacher.layers * batch * total_len * teacher.kv_width * b
    scratch = batch * total_len * (teacher.intermediate + 4 * teacher.hidden) * b
    logits = 4 * batch * teacher.vocab * 2
    return Bytes(weights=b * teacher.params, activations=int(kv + scratch + logits))


def measure_bytes(
    model: ModelShape,
    *,
    batch: int,
    window: int,
    dtype: str = "float32",
    reference: ModelShape | None = None,
    seq_chunk: int = 64,
) -> Bytes:
    """One teacher-forced pass over ``batch`` examples of ``window`` tokens: the weights of
    the model (and the reference of pair mode) in ``dtype``, one layer's forward scratch and
    ``seq_chunk`` positions of fp32 logits per model."""
    b = DTYPE_BYTES[dtype]
    models = [model] + ([reference] if reference is not None else [])
    weights = sum(b * m.params for m in models)
    act = 0
    for m in models:
        act += batch * window * (m.intermediate + 4 * m.hidden) * b  # one layer's scratch
        act += batch * window * m.hidden * 4  # final hidden states
        act += 4 * batch * min(seq_chunk, window) * m.vocab * 3  # logits, log-softmax, probs
    return Bytes(weights=int(weights), activations=int(act))
