"""``kdmem shard`` as independent tasks (a Slurm array), then one merge.

The inputs are split into ``tasks`` *contiguous slices* (:func:`input_slices`); task ``k``
shards slice ``k`` with :func:`~kdmem.corpus.shard.shard_corpus` into a shard set of its own,
``PARTS/task-0000k/`` (:func:`shard_task`), and :func:`merge_tasks` then puts those sets
together, in slice order, as one shard set: shard files hard-linked (renamed where the file
system has no hard links) into ``OUT`` under consecutive numbers, document ids continued
(``first_doc``), and ``OUT/shards.json`` written last, in one atomic rename.

What is the same as one ``kdmem shard INPUTS --out OUT`` run: every document, its ids and its
global id (records are numbered across the inputs in order, and a slice is a run of whole
inputs, so concatenating the slices' documents is the one-process order). What may differ:
where shards end (each slice ends its last shard early), so the set can hold up to
``tasks - 1`` more, smaller shards, and ``config_hash`` (the merge's, made from the parts').
What is computed from the set does not depend on where shards end (study sets are drawn by
global document id; index counts and matches never cross a document), so a study's labels,
features, spans and report come out the same; only outputs that name a location's shard
(``kdmem scan``'s ``shard`` column, ``kdmem locate``) number this set's shards.

**How inputs split.** Each input (a file, a ``datasets`` directory, an ``hf:NAME``) goes
whole to one task. Slices are balanced by bytes on disk: input ``i`` goes to task
``floor(tasks * (bytes before i + bytes of i / 2) / all bytes)``, so a task may get none
(and exits 0 with a note). Hub names have no size here: with one among the inputs every
input weighs the same. One input, or ``max_documents`` (a cap on the records of all inputs
together, in order), gives everything to task 0. A single large JSONL/TXT file could in
principle be cut by byte ranges at line starts (the Rust reader is sequential, so it would
need a start offset and a record count per task; compressed files cannot be cut at all);
that is not built.

**Reruns.** A task writes ``slice.json`` (its inputs and options) only after its set is
complete, and a rerun resumes or keeps its set (``shard_corpus``), replacing one made from
other inputs. The merge refuses a slice whose part is missing, unfinished or made from other
inputs or options, and parts that disagree on tokenizer, dtype, EOS or vocabulary size (one
line naming both); rerunning it is a no-op once done.

Costs: a task costs what ``kdmem shard`` costs on its slice; the merge reads every part's
manifest and shard headers, O(number of shards), and copies no token.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from kdmem.atomic import write_json_atomic
from kdmem.corpus.shard import ShardResult, shard_corpus
from kdmem.corpus.shards import MANIFEST, read_shard
from kdmem.corpus.sources import HF_PREFIX
from kdmem.errors import (
    IncompleteShardSetError,
    InvalidArgumentError,
    KdmemError,
    MissingStageInputError,
    TokenizerMismatchError,
)
from kdmem.identity import tokenizer_hash
from kdmem.lock import dir_lock

__all__ = ["SLICE_FILE", "input_slices", "merge_tasks", "part_dir", "shard_task"]

SLICE_FILE = "slice.json"
SLICE_FORMAT = "kdmem-shard-slice"

# The options that shape the documents and their ids, with shard_corpus's defaults: a part
# made with other values than the merge is told is refused.
_IDENTITY: dict[str, Any] = {
    "dtype": "auto",
    "text_field": "text",
    "eos": "auto",
    "skip_bad": False,
    "split": "train",
    "max_documents": None,
    "max_doc_bytes": None,
}


def _identity(options: dict[str, Any]) -> dict[str, Any]:
    return {k: (d if options.get(k) is None else options[k]) for k, d in _IDENTITY.items()}


def _bytes_on_disk(spec: str) -> int | None:
    p = Path(spec)
    if spec.startswith(HF_PREFIX) or not p.exists():
        return None
    if p.is_file():
        return p.stat().st_size
    return sum(q.stat().st_size for q in p.rglob("*") if q.is_file())


def input_slices(
    inputs: Sequence[str | PathLike[str]], tasks: int, *, max_documents: int | None = None
) -> list[list[str]]:
    """``inputs`` as ``tasks`` contiguous slices (some may be empty) whose concatenation is
    ``inputs``; see the module docs for the rule. O(inputs) file stats."""
    if tasks < 1:
        raise InvalidArgumentError(f"invalid tasks = {tasks}: use >= 1")
    specs = [str(i) for i in inputs]
    out: list[list[str]] = [[] for _ in range(tasks)]
    if len(specs) <= 1 or max_documents is not None:
        out[0] = specs
        return out
    sizes = [_bytes_on_disk(s) for s in specs]
    weights = [1] * len(specs) if any(s is None for s in sizes) else [s or 0 for s in sizes]
    total = sum(weights)
    if total == 0:
        weights, total = [1] * len(specs), len(specs)
    before = 0
    for spec, w in zip(specs, weights, strict=True):
        k = min(tasks - 1, (tasks * (2 * before + w)) // (2 * total))
        out[k].append(spec)
        before += w
    return out


def part_dir(parts: str | PathLike[str], task: int) -> Path:
    """Where task ``task`` writes its shard set: ``PARTS/task-NNNNN``."""
    return Path(parts) / f"task-{task:05d}"


def shard_task(
    inputs: Sequence[str | PathLike[str]],
    tokenizer: str | PathLike[str],
    parts: str | PathLike[str],
    task: int,
    tasks: int,
    **options: Any,
) -> ShardResult | None:
    """Shard slice ``task`` of ``tasks`` of ``inputs`` into :func:`part_dir` ``(parts,
    task)``; None when the slice is empty (nothing to do). ``options``: those of
    :func:`~kdmem.corpus.shard.shard_corpus` (not ``overwrite`` / ``append``: a part is
    replaced when its inputs change, and merged sets grow by merging again)."""
    if not 0 <= task < tasks:
        raise InvalidArgumentError(f"invalid task = {task}: use 0..{tasks - 1} for {tasks} tasks")
    for bad in ("overwrite", "append"):
        if options.pop(bad, False):
            raise InvalidArgumentError(
                f"--{bad} does not apply to one task of a split shard run (--task/--partial-out)"
            )
    mine = input_slices(inputs, tasks, max_documents=options.get("max_documents"))[task]
    if not mine:
        return None
    d = part_dir(parts, task)
    d.mkdir(parents=True, exist_ok=True)
    (d / SLICE_FILE).unlink(missing_ok=True)
    res = shard_corpus(mine, tokenizer, d, overwrite=True, **options)
    write_json_atomic(
        d / SLICE_FILE,
        {
            "format": SLICE_FORMAT,
            "version": 1,
            "task": task,
            "tasks": tasks,
            "inputs": mine,
            "options": _identity(options),
        },
    )
    return res


def _read_json(path: Path, fix: str) -> dict[str, Any]:
    try:
        v = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise MissingStageInputError(f"{path} does not exist: {fix}") from None
    except ValueError as e:
        raise IncompleteShardSetError(f"{path} is not valid JSON ({e}): {fix}") from None
    if not isinstance(v, dict):
        raise IncompleteShardSetError(f"{path} is not a JSON object: {fix}")
    return v


def _holds(path: Path, checksum: int) -> bool:
    """Whether ``path`` is a readable shard file with data checksum ``checksum``."""
    if not path.exists():
        return False
    try:
        return read_shard(path).checksum == checksum
    except KdmemError:
        return False


def _place(src: Path, dst: Path, checksum: int) -> None:
    """``dst`` as the shard file ``src`` (a hard link; the file moved where links fail);
    kept when it already is that file, so a rerun after a kill finishes the job."""
    if _holds(dst, checksum) and (not src.exists() or os.path.samefile(src, dst)):
        return
    if not src.exists():
        raise MissingStageInputError(
            f"{src} is missing: rerun the shard task that wrote {src.parent.name}"
        )
    tmp = dst.with_name(f"{dst.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # a file system without hard links: move the file instead
        os.replace(src, dst)
        return
    os.replace(tmp, dst)


def merge_tasks(
    inputs: Sequence[str | PathLike[str]],
    tokenizer: str | PathLike[str],
    parts: str | PathLike[str],
    out: str | PathLike[str],
    tasks: int,
    **options: Any,
) -> ShardResult:
    """The shard set of ``inputs`` in ``out``, from the parts :func:`shard_task` wrote into
    ``parts`` for ``tasks`` tasks with the same ``options`` (see the module docs).

    Raises:
        MissingStageInputError: a task's part (or one of its files) is missing.
        IncompleteShardSetError: a part is unfinished, or made from other inputs or options.
        TokenizerMismatchError: a part's tokenizer is not ``tokenizer``, or parts disagree on
            dtype, EOS id or vocabulary size.
    """
    want_opts = _identity(options)
    slices = input_slices(inputs, tasks, max_documents=want_opts["max_documents"])
    want_hash = tokenizer_hash(tokenizer)
    manifests: list[tuple[Path, dict[str, Any]]] = []
    for k, mine in enumerate(slices):
        if not mine:
            continue
        d = part_dir(parts, k)
        fix = f"rerun shard task {k} (kdmem shard ... --task {k} --tasks {tasks} --partial-out {parts})"
        sl = _read_json(d / SLICE_FILE, f"task {k} has not finished; {fix}")
        if sl.get("inputs") != mine or sl.get("options") != want_opts:
            raise IncompleteShardSetError(
                f"{d} holds the shards of inputs {sl.get('inputs')} with options "
                f"{sl.get('options')}, not of {mine} with {want_opts}: {fix}"
            )
        m = _read_json(d / MANIFEST, fix)
        if not m.get("complete"):
            raise IncompleteShardSetError(f"{d} holds an unfinished shard run: {fix}")
        if m["tokenizer_hash"] != want_hash:
            raise TokenizerMismatchError(
                f"{d} was tokenized with tokenizer {m['tokenizer_hash'][:12]}, not with "
                f"{tokenizer} ({want_hash[:12]}): {fix}"
            )
        if manifests:
            first_dir, first = manifests[0]
            for key in ("dtype", "eos_id", "vocab_size"):
                if m.get(key) != first.get(key):
                    raise TokenizerMismatchError(
                        f"shard parts disagree on {key}: {first_dir} has {first.get(key)}, "
                        f"{d} has {m.get(key)}; rerun both tasks with the same --dtype / --eos"
                    )
        manifests.append((d, m))
    if not manifests:
        raise InvalidArgumentError(f"invalid inputs = {list(inputs)!r}: nothing to merge")
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    with dir_lock(outp, "kdmem shard"):
        entries: list[dict[str, Any]] = []
        merged_from: list[dict[str, Any]] = []
        n_docs = 0
        for d, m in manifests:
            merged_from.append(
                {
                    "part": d.name,
                    "config_hash": m.get("config_hash", ""),
                    "first_shard": len(entries),
                    "n_shards": len(m["shards"]),
                }
            )
            for e in m["shards"]:
                name = f"shard-{len(entries):05d}.kdt"
                _place(d / e["name"], outp / name, int(e["checksum"]))
                entries.append({**e, "name": name, "first_doc": n_docs})
                n_docs += int(e["n_docs"])
        keep = {e["name"] for e in entries}
        for stale in outp.glob("shard-*.kdt"):
            if stale.name not in keep:
                stale.unlink()
        manifest = _merged_manifest(manifests, entries, merged_from)
        write_json_atomic(outp / MANIFEST, manifest)
    first = manifests[0][1]
    return ShardResult(
        out=outp,
        n_docs=manifest["n_docs"],
        n_tokens=manifest["n_tokens"],
        n_shards=len(entries),
        skipped_bad=manifest["skipped_bad"],
        resumed_shards=0,
        dtype=first["dtype"],
        eos_id=first["eos_id"],
        tokenizer_hash=first["tokenizer_hash"],
        manifest=manifest,
        encoder=manifest.get("encoder"),
        long_docs_split=manifest.get("long_docs_split", 0),
    )


def _merged_manifest(
    manifests: list[tuple[Path, dict[str, Any]]],
    entries: list[dict[str, Any]],
    merged_from: list[dict[str, Any]],
) -> dict[str, Any]:
    """``shards.json`` of the merged set: the keys the Rust writer writes, in its order,
    plus ``merged_from`` (which part gave which shards)."""
    first = manifests[0][1]
    encoders: list[str] = []
    for _d, m in manifests:
        for e in str(m.get("encoder") or "").split(", then "):
            if e and (not encoders or encoders[-1] != e):
                encoders.append(e)
    h = hashlib.sha256(b"kdmem-shards merged v1\n")
    for _d, m in manifests:
        h.update(f"{m.get('config_hash', '')}\n".encode())
    long_split = sum(int(e.get("long_docs_split", 0)) for e in entries)
    v: dict[str, Any] = {
        "format": "kdmem-shards",
        "version": first["version"],
        "dtype": first["dtype"],
        "tokenizer_hash": first["tokenizer_hash"],
        "vocab_size": first["vocab_size"],
        "eos_id": first["eos_id"],
        "n_docs": sum(int(e["n_docs"]) for e in entries),
        "n_tokens": sum(int(e["n_tokens"]) for e in entries),
        "skipped_bad": sum(int(e.get("skipped_bad", 0)) for e in entries),
        "complete": True,
        "config_hash": h.hexdigest(),
    }
    if encoders:
        v["encoder"] = ", then ".join(encoders)
    if long_split:
        v["long_docs_split"] = long_split
    v["merged_from"] = merged_from
    v["shards"] = entries
    return v
