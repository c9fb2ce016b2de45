"""``kdmem measure``: exact memorization labels and per-example scores of one model over a
study set, from one batched teacher-forced pass (:mod:`kdmem.measure.scores`).

Output ``measure/<role>.parquet`` (docs/formats.md): one row per example, sorted by
``example_id``; key-value metadata ``kdmem`` (JSON) with the model hash, dtype, batch
size(s), attention implementation, prefix/suffix, reference hash and the
``--verify-generate`` report. Resumable per chunk and independent of the world size
(:mod:`kdmem.measure.chunks`).

Pair mode (``--reference B --reference-out measure/B.parquet``): the reference's forward
pass, which the KL needs anyway, also gives the reference's own labels and scores, written
as a second table exactly like a separate ``kdmem measure --model B`` would (the study
measures teacher and baseline this way: two forward passes instead of three).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import torch
from transformers import PreTrainedModel

from kdmem.atomic import write_parquet_atomic
from kdmem.corpus.examples import load_examples
from kdmem.distributed import (
    MEASURE_TIMEOUT,
    close_distributed,
    init_distributed,
    is_main_process,
)
from kdmem.errors import InvalidArgumentError
from kdmem.identity import check_same_tokenizer, tokenizer_hash
from kdmem.lock import output_lock
from kdmem.measure.batches import auto_batch_size, run_batches
from kdmem.measure.chunks import ChunkedRun, data_fingerprint, made_from
from kdmem.measure.generate import decoded_match_frac, verify_labels
from kdmem.measure.scores import (
    COLUMNS,
    ENTROPY_K,
    MINK_FRAC,
    REFERENCE_PREFIX,
    Workspace,
    forward_scores,
)
from kdmem.models.load import lm_head_rows, load_model, weights_hash
from kdmem.models.tokenizer import model_tokenizer
from kdmem.models.vocab import aligned_vocab, check_token_range
from kdmem.progress import Meter, Progress
from kdmem.rundir import with_table_meta

FORMAT_VERSION = 2  # 2: tf_match_frac, optional match_frac, verify.spot_checks
# Default near-tie thresholds (logit units) for --verify-generate, by compute dtype.
TIE_THRESHOLD = {"float32": 0.01, "float16": 0.1, "bfloat16": 0.5}
_INT_COLS = {"first_mismatch": "int32", "memorized": "bool"}


def _table(ids: npt.NDArray[np.int64], cols: dict[str, npt.NDArray[Any]]) -> pa.Table:
    data: dict[str, Any] = {"example_id": pa.array(ids, type=pa.int64())}
    for name, arr in cols.items():
        typ = {"int32": pa.int32(), "bool": pa.bool_()}.get(
            _INT_COLS.get(name.removeprefix(REFERENCE_PREFIX), ""), pa.float64()
        )
        data[name] = pa.array(arr, type=typ)
    return pa.table(data)


def measure_tokens(
    model: PreTrainedModel,
    tokens: npt.NDArray[np.int64],
    prefix: int,
    *,
    reference: PreTrainedModel | None = None,
    vocab: int | None = None,
    reverse_kl: bool = False,
    reference_scores: bool = False,
    batch_size: int | None = None,
    seq_chunk: int | None = None,
    example_ids: npt.NDArray[np.int64] | None = None,
    progress: Progress | Meter | None = None,
) -> tuple[dict[str, npt.NDArray[Any]], list[int]]:
    """Labels and scores for int64 ``tokens [N, W]`` (window = prefix + suffix) in batches.

    In-memory API (no files): returns ``({column: array [N]}, batch sizes used)``. Batches
    are halved on CUDA out-of-memory; every row's result depends only on that row. With
    ``reference_scores`` the reference's own columns come back too, under
    ``"reference." + column`` (:func:`~kdmem.measure.scores.forward_scores`). ``progress``
    is a callback (:mod:`kdmem.progress`), or the :class:`~kdmem.progress.Meter` of a
    caller that measures several blocks as one stage.
    """
    n, w = tokens.shape
    dev = next(model.parameters()).device
    rows = lm_head_rows(model)
    hidden = int(model.config.hidden_size)
    layers = int(getattr(model.config, "num_hidden_layers", 1))
    per_ex = w * hidden * 4 * 8 * layers + 6 * 4 * rows * min(w, 64)
    bs = batch_size or auto_batch_size(str(dev), per_ex)
    parts: list[dict[str, npt.NDArray[Any]]] = []
    ids = example_ids if example_ids is not None else np.arange(n, dtype=np.int64)
    ws = Workspace() if str(dev) == "cpu" else None  # CUDA's allocator already reuses memory

    def step(i: int, j: int) -> None:
        x = torch.as_tensor(tokens[i:j], dtype=torch.long, device=dev)
        parts.append(
            forward_scores(
                model,
                x,
                prefix,
                reference=reference,
                vocab=vocab,
                reverse_kl=reverse_kl,
                reference_scores=reference_scores,
                seq_chunk=seq_chunk,
                first_id=int(ids[i]),
                workspace=ws,
            )
        )

    meter = (
        progress
        if isinstance(progress, Meter)
        else Meter(progress, "measure", n, "seq", tokens_per=w)
    )
    used = run_batches(step, n, bs, meter)
    if not parts:
        return {}, used
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, used


def measure(
    model: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    prefix: int = 50,
    suffix: int = 50,
    reference: str | os.PathLike[str] | None = None,
    reverse_kl: bool = False,
    reference_out: str | os.PathLike[str] | None = None,
    batch_size: int | None = None,
    dtype: str = "float32",
    device: str | None = None,
    attn_implementation: str | None = None,
    seq_chunk: int | None = None,
    verify_generate: int = 0,
    spot_checks: int = 0,
    tie_threshold: float | None = None,
    chunk_size: int = 4096,
    strict: bool = False,
    role: str | None = None,
    partial: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Measure ``model`` (hub id or local dir, safetensors) on study set ``data`` into
    ``out`` (Parquet; schema in docs/formats.md). See ``kdmem measure --help``.

    Examples shorter than ``prefix + suffix`` are skipped and counted in the metadata
    (``n_short``), or rejected with ``strict``. ``reference`` adds ``kl_to_reference``
    (and ``kl_reference_to_model`` with ``reverse_kl``) on the aligned vocabulary;
    ``reference_out`` also writes the reference's own labels and scores there (pair mode,
    role = the file stem), from the same forward pass.
    ``verify_generate`` > 0 re-decodes that many random examples plus every example whose
    ``tie_gap`` is below ``tie_threshold`` (default :data:`TIE_THRESHOLD` of the dtype: a
    few units in the last place of a logit of magnitude ~20) and stores the flip rate under
    ``verify``. ``spot_checks`` > 0 also re-decodes that many random memorized examples and
    keeps their decoded suffixes (``verify.spot_checks``, shown by the report).
    ``partial`` adds ``match_frac``, the decoded partial score of Biderman et al. 2023
    (:func:`~kdmem.measure.generate.decoded_match_frac`: greedy decoding of every
    non-memorized example, for the reference too in pair mode).
    A rerun with the same inputs and options resumes from finished chunks and returns
    immediately if ``out`` is complete. Returns ``out`` (on every rank).
    """
    if prefix < 1 or suffix < 1:
        raise InvalidArgumentError(f"invalid prefix/suffix = {prefix}/{suffix}: both must be >= 1")
    if reverse_kl and reference is None:
        raise InvalidArgumentError("--reverse-kl needs --reference")
    if reference_out is not None and reference is None:
        raise InvalidArgumentError("--reference-out needs --reference")
    out_p = Path(out)
    ref_out = Path(reference_out) if reference_out is not None else None
    if ref_out is not None and ref_out.resolve() == out_p.resolve():
        raise InvalidArgumentError(
            f"--reference-out {ref_out} is the --out file; give the reference its own table"
        )
    w = prefix + suffix
    ex = load_examples(data, w, strict=strict)
    # rank 0 holds the output's write lock: a second writer of the same file fails at once
    lock = output_lock(out_p, "kdmem measure") if is_main_process() else nullcontext()
    with lock:
        d = init_distributed(device, timeout=MEASURE_TIMEOUT)
        try:
            dev = d.device
            m = load_model(model, dtype=dtype, device=dev, attn_implementation=attn_implementation)
            rows = lm_head_rows(m)
            check_token_range(ex.tokens, rows, f"{model} ({rows} lm-head rows)")
            tok = model_tokenizer(model)
            tok_hash = "" if tok is None else tokenizer_hash(tok)
            tok_check = check_same_tokenizer(ex.tokenizer_hash, str(data), tok_hash, str(model))
            if tok_check == "skipped" and d.is_main:
                # A model without a tokenizer (or data without a recorded one): nothing to
                # compare, so say so; the metadata records tokenizer_check = "skipped".
                print(
                    f"kdmem measure: warning: tokenizers not compared ({model} ships no "
                    "tokenizer or the data records none); the ids are assumed to be the "
                    "model's (recorded as tokenizer_check = skipped)",
                    file=sys.stderr,
                )
            m_hash = weights_hash(model, m)
            ref = None
            ref_hash = ""
            r_rows = 0
            r_tok_check = "skipped"
            vocab = None
            if reference is not None:
                ref = load_model(
                    reference,
                    dtype=dtype,
                    device=dev,
                    attn_implementation=attn_implementation,
                    what="--reference",
                )
                r_rows = lm_head_rows(ref)
                check_token_range(ex.tokens, r_rows, f"{reference} ({r_rows} lm-head rows)")
                r_tok = model_tokenizer(reference)
                r_tok_hash = "" if r_tok is None else tokenizer_hash(r_tok)
                r_tok_check = check_same_tokenizer(
                    ex.tokenizer_hash, str(data), r_tok_hash, str(reference)
                )
                check_same_tokenizer(
                    tok_hash,
                    str(model),
                    r_tok_hash,
                    f"reference {reference}",
                    fix="KL needs one shared vocabulary",
                )
                t_size = len(tok) if tok is not None else min(rows, r_rows)
                vocab = aligned_vocab(t_size, rows, r_rows)
                ref_hash = weights_hash(reference, ref)
            options = {
                "prefix": prefix,
                "suffix": suffix,
                "dtype": dtype,
                "attn": attn_implementation,
                "reference_hash": ref_hash,
                "reverse_kl": reverse_kl,
                "reference_scores": ref_out is not None,
                "vocab": vocab,
                "chunk_size": chunk_size,
                "mink_frac": MINK_FRAC,
                "entropy_k": ENTROPY_K,
                "partial": partial,
                "version": FORMAT_VERSION,
            }
            fingerprint = hashlib.sha256(
                json.dumps(
                    [m_hash, data_fingerprint(ex.example_ids, ex.tokens), options], sort_keys=True
                ).encode()
            ).hexdigest()
            run = ChunkedRun(out_p, fingerprint, len(ex), chunk_size, d)
            if run.done() and (ref_out is None or made_from(ref_out, fingerprint)):
                return out_p
            mine = run.prepare()
            meter = Meter(progress, "measure", run.n_rows(mine), "seq", tokens_per=w)
            for k in mine:
                sl = run.rows(k)
                cols, used = measure_tokens(
                    m,
                    ex.tokens[sl],
                    prefix,
                    reference=ref,
                    vocab=vocab,
                    reverse_kl=reverse_kl,
                    reference_scores=ref_out is not None,
                    batch_size=batch_size,
                    seq_chunk=seq_chunk,
                    example_ids=ex.example_ids[sl],
                    progress=meter,
                )
                if partial and cols:
                    # decoded partial score (Biderman et al. 2023): greedy steps, opt-in
                    cols["match_frac"] = decoded_match_frac(
                        m, ex.tokens[sl], prefix, cols["memorized"], batch_size=batch_size
                    )
                    if ref is not None and ref_out is not None:
                        cols[REFERENCE_PREFIX + "match_frac"] = decoded_match_frac(
                            ref,
                            ex.tokens[sl],
                            prefix,
                            cols[REFERENCE_PREFIX + "memorized"],
                            batch_size=batch_size,
                        )
                table = (
                    _table(ex.example_ids[sl], cols)
                    if cols
                    else _empty_table(reference, reverse_kl, ref_out is not None, partial)
                )
                run.write_chunk(k, table, {"chunk": k, "batch_sizes": used, "rank": d.rank})
            merged, metas = run.merge()
            if merged is not None:
                table = merged
                ref_table = None
                if ref_out is not None:  # split off the reference's own columns
                    names = table.column_names
                    ref_cols = [c for c in names if c.startswith(REFERENCE_PREFIX)]
                    ref_table = table.select(["example_id", *ref_cols]).rename_columns(
                        ["example_id", *(c.removeprefix(REFERENCE_PREFIX) for c in ref_cols)]
                    )
                    table = table.select([c for c in names if not c.startswith(REFERENCE_PREFIX)])
                batch_sizes = sorted({b for mt in metas for b in mt.get("batch_sizes", [])})

                def meta_of(
                    t: Any, lm: Any, who: Any, name: str, its_hash: str, its_rows: int, check: str
                ) -> dict[str, Any]:
                    return {
                        "format": "kdmem-measure",
                        "version": FORMAT_VERSION,
                        "role": name,
                        "model": str(who),
                        "model_hash": its_hash,
                        "reference": None,
                        "reference_hash": None,
                        "dtype": dtype,
                        "batch_size": batch_sizes[-1] if batch_sizes else None,
                        "batch_sizes": batch_sizes,
                        "attn_implementation": str(lm.config._attn_implementation),
                        "prefix": prefix,
                        "suffix": suffix,
                        "mink_frac": MINK_FRAC,
                        "entropy_k": min(ENTROPY_K, w - 1),
                        "aligned_vocab": None,
                        "lm_head_rows": its_rows,
                        "n_examples": len(ex),
                        "n_short": ex.n_short,
                        "n_memorized": int(np.asarray(t.column("memorized")).sum()),
                        "tokenizer_hash": ex.tokenizer_hash,
                        "tokenizer_check": check,
                        "world_size": d.world_size,
                        "device": dev.split(":")[0],
                        "source": str(data),
                        "verify": None,
                    }

                def verify_of(lm: Any, t: Any) -> dict[str, Any]:
                    return verify_labels(
                        lm,
                        ex.tokens,
                        ex.example_ids,
                        prefix,
                        np.asarray(t.column("memorized")),
                        np.asarray(t.column("first_mismatch")),
                        np.asarray(t.column("tie_gap")),
                        k=verify_generate,
                        tie_threshold=TIE_THRESHOLD[dtype]
                        if tie_threshold is None
                        else tie_threshold,
                        batch_size=batch_size,
                        spot_checks=spot_checks,
                    )

                meta = meta_of(table, m, model, role or out_p.stem, m_hash, rows, tok_check)
                if reference is not None:
                    meta.update(
                        reference=str(reference), reference_hash=ref_hash, aligned_vocab=vocab
                    )
                if verify_generate > 0 or spot_checks > 0:
                    meta["verify"] = verify_of(m, table)
                if ref_out is not None and ref_table is not None:
                    # Written first: a finished --out (parts removed) implies a finished pair.
                    r_meta = meta_of(
                        ref_table,
                        ref,
                        reference,
                        ref_out.stem,
                        ref_hash,
                        r_rows,
                        r_tok_check,
                    )
                    r_meta.update(measured_with=str(model), fingerprint=fingerprint)
                    if verify_generate > 0 or spot_checks > 0:
                        r_meta["verify"] = verify_of(ref, ref_table)
                    write_parquet_atomic(ref_out, with_table_meta(ref_table, r_meta))
                run.finish(table, meta)
            d.barrier()
        finally:
            close_distributed(d)
        return out_p


def _empty_table(reference: object, reverse_kl: bool, pair: bool, partial: bool) -> pa.Table:
    def empty(c: str) -> npt.NDArray[Any]:
        return np.empty(0, dtype={"memorized": bool, "first_mismatch": np.int32}.get(c, float))

    cols = {c: empty(c) for c in COLUMNS}
    if reference is not None:
        cols["kl_to_reference"] = empty("kl")
        if reverse_kl:
            cols["kl_reference_to_model"] = empty("kl")
    if partial:
        cols["match_frac"] = empty("match_frac")
    if pair:
        cols.update({REFERENCE_PREFIX + c: empty(c) for c in COLUMNS})
        if partial:
            cols[REFERENCE_PREFIX + "match_frac"] = empty("match_frac")
    return _table(np.empty(0, dtype=np.int64), cols)
