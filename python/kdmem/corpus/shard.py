"""``kdmem shard``: turn a text corpus into token shards (``docs/formats.md``).

:func:`shard_corpus` sends natively read files (``.jsonl``/``.json``/``.ndjson``/``.txt``,
plain, ``.gz`` or ``.zst``) to the Rust pipeline (``kdmem_core::shard::pipeline``: a reader
thread, rayon tokenization, ordered writes, GIL released) and everything else (``.parquet``,
``datasets`` directories, ``hf:NAME``; see :mod:`kdmem.corpus.sources`) through the Rust
``ShardWriter`` in batches. Both paths follow the same rules:

- ids equal ``tokenizers.Tokenizer.encode(text, add_special_tokens=False).ids`` of the given
  ``tokenizer.json``, then the EOS id (``eos="auto"``: the first of ``<|endoftext|>``,
  ``<|end_of_text|>``, ``</s>``, ``<eos>``, ``<|eos|>``, ``<|end|>`` in the vocabulary, else
  none; ``"none"``; or a token / id);
- ``dtype="auto"`` stores u16 when the vocabulary has at most 65,536 ids, else u32;
- shards are cut after the document that brings a shard to ``shard_tokens`` tokens (and
  before one that would take it past what ``memory`` can index), so the bytes do not depend
  on ``threads``, and reruns are byte-identical;
- a killed run resumes: finished shards are verified and kept, their records skipped;
- ``append=True`` adds the inputs to a finished set as new shards (document ids continue;
  the set's manifest is replaced in one atomic rename once every new shard is written, so a
  killed append leaves the old set as it was and resumes when rerun).

Byte-level BPE tokenizers of the GPT-2, GPT-NeoX/Pythia, Llama-3, OLMo-2 and Qwen families are
encoded by kdmem's own encoder (identical ids, several times faster than ``tokenizers``;
``kdmem_core::shard::bpe`` says which tokenizers qualify); others by ``tokenizers``. The
manifest's ``encoder`` says which (``kdmem-bpe`` or ``tokenizers``); ``encoder="tokenizers"``
forces the library.

**Memory** (``memory``, default three quarters of the machine's): shards are sized so that
indexing one fits the budget (about 6.5 bytes/token for u16 shards, 8.5 for u32; at most 2^30
tokens), and the writer's own buffers shrink to fit it. The writer itself needs about 100 MB
plus 16 MB per thread; the in-flight batches are at most 4 x 4 MiB of text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from kdmem.corpus.sources import Source, classify_source, describe
from kdmem.errors import InvalidArgumentError, KdmemIOError, MissingFieldError
from kdmem.lock import dir_lock
from kdmem.progress import Progress, Tick

DEFAULT_SHARD_TOKENS = 1 << 30

Counters = Callable[[int, int, int, int], Any]
"""What the Rust pipeline reports: ``(docs, tokens, bytes, total_bytes)``; bytes are on-disk
input bytes (``total_bytes`` 0 = unknown)."""


def _counters(progress: Progress | None) -> Counters | None:
    """The Rust pipeline's counters as :class:`~kdmem.progress.Tick` s of unit ``B`` (input
    bytes), with ``docs`` and ``tokens`` beside them."""
    if progress is None:
        return None

    def tick(docs: int, tokens: int, nbytes: int, total: int) -> None:
        progress(Tick("shard", nbytes, total or None, "B", {"docs": docs, "tokens": tokens}))

    return tick


@dataclass(frozen=True)
class ShardResult:
    """What a sharding run produced (the manifest plus bookkeeping)."""

    out: Path
    n_docs: int
    n_tokens: int
    n_shards: int
    skipped_bad: int
    """Records skipped by ``skip_bad`` (malformed JSON, invalid UTF-8, missing text)."""
    resumed_shards: int
    """Shards kept from an earlier, interrupted (or identical, finished) run."""
    dtype: str
    eos_id: int | None
    tokenizer_hash: str
    manifest: dict[str, Any]
    encoder: str | None = None
    """``kdmem-bpe`` or ``tokenizers`` (see the module docs)."""
    shard_tokens: int | None = None
    """Shard size this run used (from ``memory`` unless given)."""
    memory: int | None = None
    """Memory budget in bytes this run planned with."""
    appended_shards: int = 0
    """Shards this call added to an existing set (``append=True``)."""
    long_docs_split: int = 0
    """Documents longer than ``max_doc_bytes``, tokenized in pieces."""


def memory_bytes(memory: int | str | None) -> int | None:
    """``memory`` in bytes: an int as it is, a string such as ``8GB`` / ``512MiB`` parsed, None
    kept (the machine's default, three quarters of its memory)."""
    if memory is None or isinstance(memory, int):
        if isinstance(memory, int) and memory < 1:
            raise InvalidArgumentError(f"invalid memory = {memory}: pass a positive byte count")
        return memory
    from kdmem import _core

    return int(_core.parse_size(str(memory)))


def _result(
    out: Path,
    manifest_json: str,
    resumed: int,
    *,
    encoder: str | None = None,
    shard_tokens: int | None = None,
    memory: int | None = None,
    before: int | None = None,
) -> ShardResult:
    m = json.loads(manifest_json)
    return ShardResult(
        out=out,
        n_docs=m["n_docs"],
        n_tokens=m["n_tokens"],
        n_shards=len(m["shards"]),
        skipped_bad=m.get("skipped_bad", 0),
        resumed_shards=resumed,
        dtype=m["dtype"],
        eos_id=m["eos_id"],
        tokenizer_hash=m["tokenizer_hash"],
        manifest=m,
        encoder=m.get("encoder", encoder),
        shard_tokens=shard_tokens,
        memory=memory,
        appended_shards=0 if before is None else len(m["shards"]) - before,
        long_docs_split=m.get("long_docs_split", 0),
    )


def _shards_before(out: Path, append: bool) -> int | None:
    """Shards of the set an append adds to (None when not appending or nothing is there)."""
    if not append:
        return None
    try:
        return len(json.loads((out / "shards.json").read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return None  # the writer reports what is wrong


def shard_corpus(
    inputs: Sequence[str | PathLike[str]],
    tokenizer: str | PathLike[str],
    out: str | PathLike[str],
    *,
    threads: int | None = None,
    dtype: str = "auto",
    text_field: str = "text",
    eos: str = "auto",
    skip_bad: bool = False,
    shard_tokens: int | None = None,
    memory: int | str | None = None,
    max_doc_bytes: int | str | None = None,
    overwrite: bool = False,
    append: bool = False,
    encoder: str = "auto",
    split: str = "train",
    batch_size: int = 4096,
    max_documents: int | None = None,
    progress: Progress | None = None,
) -> ShardResult:
    """Tokenize ``inputs`` with ``tokenizer`` into shards under ``out``; see the module docs.

    Args:
        inputs: files, ``datasets`` directories or ``hf:NAME``, read in this order. Native
            files and Python-read sources cannot be mixed in one run.
        tokenizer: a ``tokenizer.json`` or a directory holding one.
        out: output directory (created; resumed if it holds a matching unfinished run).
        threads: tokenizer threads (default ``KDMEM_NUM_THREADS`` or every core).
        dtype: ``auto``, ``u16`` or ``u32``.
        text_field: the JSON key / column holding the text.
        eos: ``auto``, ``none`` or a token (string or id) appended after every document.
        skip_bad: count and skip malformed records instead of failing.
        shard_tokens: token budget per shard (a shard ends after the document reaching it);
            default: what ``memory`` can index, at most 2^30.
        memory: memory budget (bytes, or a string such as ``8GB``); default three quarters of
            the machine's memory. A budget too small for one document is an error naming the
            minimum.
        max_doc_bytes: documents longer than this (bytes, or a string such as ``16MB``) are
            tokenized in pieces of at most this size, cut before a space between two words
            (the same ids for byte-level BPE tokenizers), so that one huge record cannot
            exhaust memory; counted in ``long_docs_split``. Default: 1/1024 of the budget,
            between 1 MiB and 64 MiB. Natively read files (.jsonl, .txt) take it explicitly;
            streamed sources use the default.
        overwrite: replace a different earlier output in ``out`` (with ``append``: drop an
            unfinished append of other inputs; the set itself is never replaced).
        append: add the inputs to the finished shard set in ``out`` as new shards (same
            tokenizer, dtype and EOS; otherwise an error names both); rerunning it is a no-op.
        encoder: ``auto`` (kdmem's byte-level BPE encoder where it applies) or ``tokenizers``.
        split: split for ``datasets`` inputs.
        batch_size: rows per batch for Python-read sources.
        max_documents: read at most this many records (good and bad, in input order) from
            streamed sources (``hf:NAME``, Parquet, ``datasets`` directories): a cap for
            sampling a prefix of a hub corpus. Part of the run's identity (a rerun with
            another cap does not resume this one). Natively read files reject it.
        progress: receives ``Tick("shard", input_bytes, total_bytes, "B", {docs, tokens})``
            about ten times a second (:mod:`kdmem.progress`).
    """
    from kdmem import _core

    if not inputs:
        raise InvalidArgumentError("invalid inputs = []: pass at least one input path")
    if max_documents is not None and max_documents < 1:
        raise InvalidArgumentError(
            f"invalid max_documents = {max_documents}: pass a positive record count, or none"
        )
    specs = [str(i) for i in inputs]
    sources = [classify_source(s, text_field, split) for s in specs]
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    with dir_lock(outp, "kdmem shard"):
        mem = memory_bytes(memory)
        before = _shards_before(outp, append)
        if all(s is None for s in sources):
            if max_documents is not None:
                raise InvalidArgumentError(
                    f"invalid max_documents = {max_documents} for natively read files "
                    f"({specs[0]}, ...): the cap applies to streamed sources (hf:NAME, Parquet, "
                    "datasets directories); cut local files instead (e.g. head -n N)"
                )
            for s in specs:
                if not Path(s).exists():
                    raise KdmemIOError(
                        f"cannot read {s}: no such file; check that the path exists and that you may read it"
                    )
            manifest, resumed, planned, budget = _core.shard_files(
                [Path(s) for s in specs],
                Path(tokenizer),
                outp,
                threads=threads,
                dtype=dtype,
                text_field=text_field,
                eos=eos,
                skip_bad=skip_bad,
                shard_tokens=shard_tokens,
                memory=mem,
                overwrite=overwrite,
                append=append,
                encoder=encoder,
                max_doc_bytes=memory_bytes(max_doc_bytes),
                progress=_counters(progress),
            )
            return _result(
                outp, manifest, resumed, shard_tokens=planned, memory=budget, before=before
            )
        if max_doc_bytes is not None:
            raise InvalidArgumentError(
                f"invalid max_doc_bytes = {max_doc_bytes!r} for streamed sources ({specs[0]}, ...): "
                "they are capped at the default (1/1024 of --memory); set --memory instead"
            )
        if any(s is None for s in sources):
            native = [sp for sp, s in zip(specs, sources, strict=True) if s is None]
            raise InvalidArgumentError(
                f"invalid inputs = {native[:3]!r}: natively read files (.jsonl/.txt, .gz/.zst) and "
                "Parquet / datasets inputs cannot be mixed in one run; shard them into separate --out directories"
            )
        srcs = [s for s in sources if s is not None]
        ident: dict[str, Any] = {
            "sources": describe(srcs),
            "text_field": text_field,
            "skip_bad": skip_bad,
            "split": split,
        }
        if max_documents is not None:  # absent when unset: earlier runs keep their identity
            ident["max_documents"] = max_documents
        config = json.dumps(ident)
        w = _core.ShardWriter(
            outp,
            config=config,
            tokenizer=Path(tokenizer),
            dtype=dtype,
            eos=eos,
            shard_tokens=shard_tokens,
            memory=mem,
            overwrite=overwrite,
            append=append,
            encoder=encoder,
            threads=threads,
        )
        resumed = w.resumed_shards
        if not w.is_complete:
            _feed_texts(w, srcs, skip_bad, batch_size, _counters(progress), max_documents)
        return _result(
            outp, w.finish(", ".join(specs[:3])), resumed, encoder=w.encoder, before=before
        )


def _feed_texts(
    w: Any,
    sources: list[Source],
    skip_bad: bool,
    batch_size: int,
    progress: Counters | None,
    max_documents: int | None = None,
) -> None:
    skip = int(w.records_to_skip)
    docs = tokens = chars = 0
    seen = 0  # records of all sources so far, for max_documents
    for src in sources:
        record = 0
        for batch in src.batches(batch_size):
            if max_documents is not None:
                if seen >= max_documents:
                    return
                batch = batch[: max_documents - seen]
            seen += len(batch)
            start = record
            record += len(batch)
            if skip >= len(batch):
                skip -= len(batch)
                continue
            batch = batch[skip:]
            start += skip
            skip = 0
            # Records without a string are bad (skipped with skip_bad); runs of good ones go
            # to Rust in one call so the tokenizer sees big batches.
            run: list[str] = []
            run_start = start + 1
            for j, t in enumerate(batch):
                if isinstance(t, str):
                    run.append(t)
                    continue
                if not skip_bad:
                    raise MissingFieldError(
                        f"{src.name}:{start + j + 1}: no string field {src.text_field!r} in the "
                        f"record (found: {type(t).__name__}); pass --text-field with the right "
                        "name, or --skip-bad to count and skip such records"
                    )
                if run:
                    tokens += w.add_texts(run, src.name, run_start)
                w.skip_records(1, bad=True)
                run = []
                run_start = start + j + 2
            if run:
                tokens += w.add_texts(run, src.name, run_start)
            docs += len(batch)
            chars += sum(len(t) for t in batch if isinstance(t, str))
            if progress is not None:
                progress(docs, tokens, chars, 0)


__all__ = ["DEFAULT_SHARD_TOKENS", "ShardResult", "memory_bytes", "shard_corpus"]
