"""Greedy decoding: hard-distillation data, and the oracle that spot-checks the labels.

:func:`greedy_continuations` is the one decoding routine: batched greedy ``generate()`` from
equal-length prefixes (no padding), **never stopping at and never suppressing EOS**
(``eos_token_id=None``, no ``min_new_tokens``). Both matter for extraction: a memorized
suffix may contain the EOS id, ``min_new_tokens`` masks EOS out of the argmax (a label flip),
and stopping at EOS truncates the continuation (see docs/measure.md).

:func:`generate` writes teacher continuations for hard distillation (``kdmem generate``);
:func:`verify_labels` re-decodes a sample plus every near-tie and counts label flips.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import torch
from transformers import GenerationConfig, PreTrainedModel

from kdmem.corpus.examples import Examples, load_examples
from kdmem.distributed import (
    MEASURE_TIMEOUT,
    close_distributed,
    init_distributed,
    is_main_process,
)
from kdmem.errors import InvalidArgumentError
from kdmem.identity import check_same_tokenizer
from kdmem.lock import output_lock
from kdmem.measure.batches import auto_batch_size, run_batches
from kdmem.measure.chunks import ChunkedRun, data_fingerprint
from kdmem.models.load import lm_head_rows, load_model, weights_hash
from kdmem.models.tokenizer import model_tokenizer_hash
from kdmem.models.vocab import check_token_range
from kdmem.progress import Meter, Progress

GENERATIONS_FILE = "generations.parquet"


def _cache_impl(model: PreTrainedModel, cache: str) -> str | None:
    if cache == "dynamic":
        return None
    if cache == "static":
        return "static"
    if cache != "auto":
        raise InvalidArgumentError(f"invalid cache = {cache!r}: use auto, static or dynamic")
    # A static KV cache pays off with CUDA graphs / torch.compile; on CPU it only adds copies.
    on_cuda = next(model.parameters()).device.type == "cuda"
    return "static" if on_cuda and getattr(model, "_can_compile_fullgraph", False) else None


def greedy_continuations(
    model: PreTrainedModel,
    prefixes: npt.NDArray[np.integer] | Any,
    new_tokens: int,
    *,
    batch_size: int | None = None,
    cache: str = "auto",
    progress: Progress | Meter | None = None,
) -> npt.NDArray[np.int64]:
    """Greedy continuations of equal-length prefixes.

    ``prefixes``: int ``[N, P]`` (numpy or torch); returns int64 ``[N, new_tokens]``. Exactly
    ``new_tokens`` tokens per row: EOS is neither a stop token nor suppressed. ``batch_size``
    (default: automatic) is halved on CUDA out-of-memory; ``cache`` = ``auto`` (static KV
    cache on CUDA where the model supports it), ``static`` or ``dynamic``. ``progress``: a
    callback (:mod:`kdmem.progress`) or the :class:`~kdmem.progress.Meter` of a caller.
    """
    if new_tokens < 1:
        raise InvalidArgumentError(f"invalid new_tokens = {new_tokens}: must be >= 1")
    x = torch.as_tensor(np.asarray(prefixes), dtype=torch.long)
    if x.ndim != 2 or x.shape[1] < 1:
        raise InvalidArgumentError(f"prefixes must be [N, P] with P >= 1, got {tuple(x.shape)}")
    dev = next(model.parameters()).device
    n, p = x.shape
    # generate() fills every field left at None from model.generation_config (a hub config's
    # eos_token_id, repetition_penalty or sampling flags would leak into a "greedy" decode,
    # and GenerationConfig(eos_token_id=None) is silently overridden), so a clean config is
    # swapped in for the call and eos_token_id=None goes in as a keyword, the one form
    # generate() keeps as None.
    clean = GenerationConfig()
    kwargs: dict[str, Any] = dict(
        do_sample=False, num_beams=1, max_new_tokens=new_tokens, eos_token_id=None, use_cache=True
    )
    impl = _cache_impl(model, cache)
    if impl:
        kwargs["cache_implementation"] = impl
    out = np.empty((n, new_tokens), dtype=np.int64)
    per_ex = 4 * (p + new_tokens) * int(model.config.hidden_size) * 4 * max(
        1, int(getattr(model.config, "num_hidden_layers", 1))
    ) + 4 * int(model.get_output_embeddings().weight.shape[0])
    bs = batch_size or auto_batch_size(str(dev), per_ex)

    def step(i: int, j: int) -> None:
        ids = x[i:j].to(dev)
        saved = model.generation_config
        model.generation_config = clean
        try:
            with torch.inference_mode():
                g = model.generate(  # type: ignore[operator]
                    input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs
                )
        finally:
            model.generation_config = saved
        if g.shape[1] != p + new_tokens:  # stopped early: the decode is not plain greedy
            raise RuntimeError(f"generate() returned {g.shape[1] - p} of {new_tokens} new tokens")
        out[i:j] = g[:, p:].cpu().numpy()

    meter = (
        progress
        if isinstance(progress, Meter)
        else Meter(progress, "generate", n, "seq", tokens_per=new_tokens)
    )
    run_batches(step, n, bs, meter)
    return out


def decoded_match_frac(
    model: PreTrainedModel,
    tokens: npt.NDArray[np.int64],
    prefix: int,
    memorized: npt.NDArray[np.bool_],
    *,
    batch_size: int | None = None,
) -> npt.NDArray[np.float64]:
    """The partial memorization score of Biderman et al. 2023: the fraction of the ``S``
    suffix tokens ``tokens[:, prefix:]`` that greedy decoding from ``tokens[:, :prefix]``
    reproduces at their own position. Memorized examples score 1 without decoding (greedy
    decoding reproduces their suffix, :mod:`kdmem.measure.scores`); the others are decoded
    (``S`` greedy steps per batch)."""
    n, w = tokens.shape
    s = w - prefix
    out = np.ones(n, dtype=np.float64)
    rows = np.flatnonzero(~np.asarray(memorized, dtype=bool))
    if rows.size:
        dec = greedy_continuations(model, tokens[rows, :prefix], s, batch_size=batch_size)
        out[rows] = (dec == tokens[rows, prefix:w]).mean(1)
    return out


def verify_labels(
    model: PreTrainedModel,
    tokens: npt.NDArray[np.int64],
    example_ids: npt.NDArray[np.int64],
    prefix: int,
    memorized: npt.NDArray[np.bool_],
    first_mismatch: npt.NDArray[np.int32],
    tie_gap: npt.NDArray[np.float64],
    *,
    k: int,
    tie_threshold: float,
    seed: int = 0,
    batch_size: int | None = None,
    spot_checks: int = 0,
) -> dict[str, Any]:
    """Re-decode ``k`` random examples, up to ``spot_checks`` random *memorized* ones, and
    every near-tie (``tie_gap < tie_threshold``), and compare ``memorized`` /
    ``first_mismatch`` with the decode. Returns the counts and the flip rate (label flips /
    examples re-decoded) for the output metadata, and the decoded suffix ids of the
    memorized spot checks (``spot_checks``: ``[{"example_id", "decoded", "match"}]``, what
    the report shows)."""
    n, w = tokens.shape
    s = w - prefix
    rng = np.random.default_rng(seed)
    rand = rng.choice(n, size=min(k, n), replace=False) if k > 0 else np.empty(0, np.int64)
    mem_rows = np.flatnonzero(memorized)
    spot = rng.choice(mem_rows, size=min(spot_checks, len(mem_rows)), replace=False)
    ties = np.flatnonzero(tie_gap < tie_threshold)
    rows = np.union1d(np.union1d(rand, ties), spot).astype(np.int64)
    info: dict[str, Any] = {
        "n_random": int(rand.size),
        "n_near_tie": int(ties.size),
        "tie_threshold": tie_threshold,
        "n_checked": int(rows.size),
        "seed": seed,
    }
    if rows.size == 0:
        return dict(
            info, n_flips=0, n_first_mismatch_diff=0, flip_rate=0.0, flipped_ids=[], spot_checks=[]
        )
    dec = greedy_continuations(model, tokens[rows, :prefix], s, batch_size=batch_size)
    same = dec == tokens[rows, prefix:w]
    spotted = set(spot.tolist())
    g_mem = same.all(1)
    g_fm = np.where(g_mem, s, (~same).argmax(1))
    flips = g_mem != memorized[rows]
    info.update(
        n_flips=int(flips.sum()),
        n_first_mismatch_diff=int((g_fm != first_mismatch[rows]).sum()),
        flip_rate=float(flips.mean()),
        flipped_ids=[int(i) for i in example_ids[rows][flips][:100]],
        spot_checks=[
            {
                "example_id": int(example_ids[r]),
                "decoded": [int(t) for t in dec[j]],
                "match": bool(same[j].all()),
            }
            for j, r in enumerate(rows)
            if r in spotted
        ],
    )
    return info


def generate(
    model: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    prefix: int = 50,
    new_tokens: int = 206,
    batch_size: int | None = None,
    dtype: str = "float32",
    device: str | None = None,
    attn_implementation: str | None = None,
    cache: str = "auto",
    chunk_size: int = 4096,
    strict: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Teacher continuations for hard distillation: ``out_dir/generations.parquet``.

    For every example of ``data`` (a study set, see :func:`kdmem.corpus.examples.load_examples`): its
    first ``prefix`` tokens plus ``new_tokens`` greedy tokens of ``model`` (a hub id or a
    local directory). Columns ``example_id: int64`` (sorted) and ``input_ids: list<int64>``
    (``prefix + new_tokens`` ids); key-value metadata ``kdmem`` (JSON) holds the teacher's
    weights hash, the data's ``tokenizer_hash``, prefix, new_tokens, dtype and cache, so
    :func:`~kdmem.corpus.examples.load_examples` reads the file back as a study set.

    Resumable per chunk of ``chunk_size`` examples; under torchrun / accelerate each rank
    decodes the chunks ``k % world_size == rank`` and rank 0 merges, so the output does not
    depend on the world size. Returns the output path (on every rank).
    """
    if prefix < 1 or new_tokens < 1:
        raise InvalidArgumentError(
            f"invalid prefix/new_tokens = {prefix}/{new_tokens}: both must be >= 1"
        )
    out = Path(out_dir) / GENERATIONS_FILE
    ex: Examples = load_examples(data, prefix, strict=strict)
    # rank 0 holds the output's write lock: a second writer of the same file fails at once
    lock = output_lock(out, "kdmem generate") if is_main_process() else nullcontext()
    with lock:
        d = init_distributed(device, timeout=MEASURE_TIMEOUT)
        try:
            m = load_model(
                model, dtype=dtype, device=d.device, attn_implementation=attn_implementation
            )
            rows = lm_head_rows(m)
            check_token_range(ex.tokens, rows, f"{model} ({rows} lm-head rows)")
            check_same_tokenizer(
                ex.tokenizer_hash, str(data), model_tokenizer_hash(model), str(model)
            )
            teacher_hash = weights_hash(model, m)
            fp = data_fingerprint(ex.example_ids, ex.tokens[:, :prefix])
            fingerprint = hashlib.sha256(
                f"generate|{teacher_hash}|{fp}|{prefix}|{new_tokens}|{dtype}|{chunk_size}".encode()
            ).hexdigest()
            run = ChunkedRun(out, fingerprint, len(ex), chunk_size, d)
            if run.done():
                return out
            mine = run.prepare()
            meter = Meter(progress, "generate", run.n_rows(mine), "seq", tokens_per=new_tokens)
            for k in mine:
                sl = run.rows(k)
                cont = greedy_continuations(
                    m,
                    ex.tokens[sl, :prefix],
                    new_tokens,
                    batch_size=batch_size,
                    cache=cache,
                    progress=meter,
                )
                seqs = np.concatenate([ex.tokens[sl, :prefix], cont], axis=1)
                table = pa.table(
                    {
                        "example_id": pa.array(ex.example_ids[sl], type=pa.int64()),
                        "input_ids": pa.array(list(seqs), type=pa.list_(pa.int64())),
                    }
                )
                run.write_chunk(k, table, {"chunk": k})
            merged, _ = run.merge()
            if merged is not None:
                table = merged
                meta = {
                    "format": "kdmem-generations",
                    "version": 1,
                    "teacher": str(model),
                    "teacher_hash": teacher_hash,
                    "tokenizer_hash": ex.tokenizer_hash,
                    "prefix": prefix,
                    "new_tokens": new_tokens,
                    "dtype": dtype,
                    "cache": _cache_impl(m, cache) or "dynamic",
                    "attn_implementation": str(m.config._attn_implementation),
                    "n_examples": len(ex),
                    "n_short": ex.n_short,
                    "source": str(data),
                }
                run.finish(table, meta)
            d.barrier()
        finally:
            close_distributed(d)
        return out
