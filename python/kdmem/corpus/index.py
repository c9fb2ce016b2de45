"""Exact search over token shards with one suffix array per *unit*.

``kdmem index SHARDS_DIR`` (or :func:`build_index`) writes ``*.kdsa`` unit files next to the
``shard-NNNNN.kdt`` shards: small shards are grouped into one unit, a shard too large for the
memory budget is cut into pieces, so a query costs the number of units, not of shards.
:class:`Index` opens the directory and answers, over all shards, with the GIL released:

- ``count(q)``: occurrences of the token sequence ``q``;
- ``locate(q, limit)``: ``(shard, document, offset)`` rows, in corpus order;
- ``longest_match(q)``: for every position ``i`` the length of the longest prefix of ``q[i:]``
  that occurs in the corpus (matching statistics, as infini-gram's ``creativity``);
- ``ngram_overlap(q, n)``: which n-grams of ``q`` occur, and what fraction.

Matches never cross a document boundary: a document ends where the next begins (shards made
with an EOS id keep the EOS token inside each document, so a match may end with it). Results are
exact and do not depend on the thread count, the memory budget or how shards were grouped.
Costs and the on-disk format are documented in ``docs/formats.md`` and the Rust module
``kdmem_core::index``.

Why one file (~640 lines): :class:`Index` documents every query the extension answers (most
of the file); the build, the plan of its distributed groups (``--group``, ``--ray``) and its
stale-temp cleanup sit beside the reader they must agree with.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from kdmem import _core
from kdmem.corpus.fanout import map_shards
from kdmem.corpus.verified import ensure_verified
from kdmem.errors import (
    CorruptFileError,
    IncompleteShardSetError,
    InvalidArgumentError,
    KdmemIOError,
    TokenRangeError,
)
from kdmem.lock import dir_lock, output_lock
from kdmem.progress import Progress, Tick

TokenArray = npt.ArrayLike
"""Any 1-D integer numpy array or sequence of non-negative token ids."""

_U32_MAX = 2**32 - 1


class Locations(NamedTuple):
    """Occurrences of a query, in corpus order (shard, then position); int64 arrays of equal length."""

    shard: npt.NDArray[np.int64]
    """Shard index (file name order)."""
    document: npt.NDArray[np.int64]
    """Global document id (``shards.json`` ``first_doc`` + index in the shard)."""
    offset: npt.NDArray[np.int64]
    """Token offset of the match inside its document."""


class NgramOverlap(NamedTuple):
    """Which n-grams ``q[i:i+n]`` of a query occur in the index."""

    fraction: float
    """``len(positions) / total``; NaN when the query has fewer than ``n`` tokens."""
    positions: npt.NDArray[np.int64]
    """Start positions ``i`` of the n-grams that occur, ascending."""
    total: int
    """Number of n-grams in the query, ``max(len(q) - n + 1, 0)``."""


def _as_tokens(tokens: TokenArray, what: str = "tokens") -> npt.NDArray[np.uint32]:
    if (
        isinstance(tokens, np.ndarray)
        and tokens.ndim == 1
        and tokens.dtype.kind == "u"
        and tokens.dtype.itemsize <= 4
    ):
        # Unsigned ids of at most 32 bits are always in range: no scan needed.
        return np.ascontiguousarray(tokens, dtype=np.uint32)
    a = np.asarray(tokens)
    if a.size == 0:
        return np.zeros(0, dtype=np.uint32)
    if a.ndim != 1:
        raise InvalidArgumentError(
            f"invalid {what} = array of shape {a.shape}: pass a 1-D sequence of token ids "
            "(use the *_many methods for batches)"
        )
    return _checked_u32(a, what)


def _checked_u32(a: npt.NDArray[Any], what: str) -> npt.NDArray[np.uint32]:
    """``a`` (any shape) as contiguous uint32, rejecting non-integer and out-of-range ids."""
    if a.dtype.kind not in "iu":
        raise InvalidArgumentError(
            f"invalid {what} = array of dtype {a.dtype}: pass integer token ids"
        )
    u = np.ascontiguousarray(a, dtype=np.uint32)
    if (u != a).any():  # one pass instead of min() and max(): values that did not survive the cast
        bad = int(a[u != a][0])
        raise TokenRangeError(
            f"token id {bad} is out of range for a query (allowed 0..{_U32_MAX}); "
            "pass token ids produced by the index's tokenizer"
        )
    return u


# Dtypes the extension takes as they are for a single query (int64 is range-checked there).
_NATIVE = frozenset(np.dtype(t) for t in (np.uint32, np.uint16, np.int64))


def _query(tokens: TokenArray) -> npt.NDArray[Any]:
    """A single query for the extension: contiguous 1-D uint32/uint16/int64 arrays pass
    through untouched (the common case costs no numpy pass), anything else is converted."""
    if (
        type(tokens) is np.ndarray
        and tokens.dtype in _NATIVE
        and tokens.ndim == 1
        and tokens.flags.c_contiguous
    ):
        return tokens
    return _as_tokens(tokens)


def _as_batch(queries: npt.ArrayLike | Sequence[TokenArray]) -> list[npt.NDArray[np.uint32]]:
    if isinstance(queries, np.ndarray):
        if queries.ndim != 2:
            raise InvalidArgumentError(
                f"invalid queries = array of shape {queries.shape}: pass a 2-D array "
                "(one query per row) or a list of 1-D arrays"
            )
        if queries.size == 0:
            return [np.zeros(0, dtype=np.uint32) for _ in range(len(queries))]
        # One conversion and range check for the whole batch; the rows are views.
        return list(_checked_u32(queries, "queries[i]"))
    return [_as_tokens(q, "queries[i]") for q in queries]  # type: ignore[union-attr]


def _limit(limit: int | None) -> int:
    if limit is None:
        return 2**63 - 1
    if limit < 0:
        raise InvalidArgumentError(f"invalid limit = {limit}: pass a count >= 0, or None for all")
    return limit


def parse_memory(memory: int | str) -> int:
    """A memory size in bytes: an int, or text as ``kdmem shard --memory`` reads it
    (``kdmem_core::memory::parse_size``): ``"8GB"`` (powers of 1000), ``"8GiB"`` or ``"8G"``
    (powers of 1024), ``"1.5T"``, a byte count."""
    if isinstance(memory, int) and not isinstance(memory, bool):
        if memory <= 0:
            raise InvalidArgumentError(f"invalid memory = {memory!r}: pass a positive size")
        return memory
    return int(_core.parse_size(str(memory)))


def default_memory() -> int:
    """The default ``--memory`` of ``kdmem index`` (the same as ``kdmem shard``'s): three
    quarters of the machine's RAM or of its cgroup limit."""
    return int(_core.default_memory())


def build_index(
    shards_dir: str | PathLike[str],
    threads: int | None = None,
    progress: Progress | None = None,
    *,
    shards: Sequence[int] | None = None,
    groups: Sequence[int] | None = None,
    ray: bool = False,
    memory: int | str | None = None,
) -> dict[str, Any]:
    """Build the suffix arrays of every shard in ``shards_dir`` that no current unit covers.

    Shards are cut into units within the memory budget (``kdmem_core::index::plan``): small
    shards are grouped, about one unit per thread, so that every thread sorts one; a shard
    too large to sort within the whole budget is split into document-aligned pieces. Units
    are sorted largest first, at most ``threads`` at once and only as many as the budget
    holds (6.5 bytes/token of the units being sorted for u16 shards, 8.5 for u32): a tight
    budget sorts fewer at once rather than cutting shards, so peak memory stays within
    ``memory``. Resumable: finished units are kept.

    Args:
        shards_dir: a ``kdmem shard`` output directory.
        threads: worker threads (units built at once); default ``KDMEM_NUM_THREADS`` or every
            core. Answers do not depend on it (how shards are grouped does).
        progress: receives ``Tick("index", shards_done, shards, "shards", {"tokens": ...})``
            about ten times a second (:mod:`kdmem.progress`).
        shards: build only these shard numbers (positions of ``shard-NNNNN.kdt`` in name
            order), grouped only among themselves (``kdmem index DIR --shard K``; one shard
            per call makes one unit per shard). Default: every shard.
        groups: build only these planned groups (numbers into :func:`unit_groups`), each
            as one unit: one stateless task of a distributed build (``kdmem index DIR
            --group K``, e.g. one Slurm array element). Every task plans the same groups,
            so an array of such tasks writes the units of a grouped build and a later
            local ``build_index`` finds nothing to build. Not with ``shards``.
        ray: one Ray task per planned group (:func:`unit_groups`: small shards share a
            unit), each group one unit; the answers are the same as a local build's.
        memory: the memory budget, bytes or text such as ``"8GB"``; default three quarters of
            the machine's RAM. Too small for the largest document: an
            :class:`~kdmem.InvalidArgumentError` naming the minimum.

    Returns:
        ``{"shards", "built", "skipped", "units", "tokens_built", "seconds", "memory",
        "concurrency", "max_unit"}`` (``shards``: shards considered by this call; ``units``:
        units written; ``max_unit``: the largest unit the budget allows, in tokens).
    """
    mem = None if memory is None else parse_memory(memory)
    d = Path(shards_dir)
    if not d.is_dir():
        raise KdmemIOError(f"cannot read {d}: no such directory; pass a `kdmem shard` output")
    if groups is not None:
        if shards is not None:
            raise InvalidArgumentError(
                "pass shard numbers or group numbers, not both (--shard or --group)"
            )
        return _build_groups(d, _planned(d, groups), threads, progress, ray, mem)
    sel = None if shards is None else [int(k) for k in shards]
    # One writer at a time: a whole build holds the directory's lock (which `kdmem shard`
    # holds too); a per-shard build (a Slurm array element, a Ray task) the lock of its
    # shards only, so that per-shard builds of one directory run at once.
    lock = (
        dir_lock(d, "kdmem index")
        if sel is None
        else output_lock(d / f"shards-{'-'.join(map(str, sel[:4]))}.index", "kdmem index")
    )
    with lock:
        remove_stale_temps(d)
        if ray:
            t0 = time.perf_counter()
            plan = unit_groups(d, sel)
            reports = map_shards(_build_task, d, d, threads, mem, groups=plan)
            keys = ("shards", "built", "skipped", "units", "tokens_built")
            out: dict[str, Any] = {k: sum(r[k] for r in reports) for k in keys}
            out.update({k: reports[0][k] for k in ("memory", "concurrency", "max_unit")})
            out["seconds"] = time.perf_counter() - t0
            if sel is None:
                out["verified"] = ensure_verified(d, threads)
            return out
        tick = None
        if progress is not None:
            n = len(sel) if sel is not None else n_shard_files(d)

            def tick(done: int, tokens: int, _b: int, _t: int) -> None:
                progress(Tick("index", done, n, "shards", {"tokens": f"{tokens / 1e6:.1f}M"}))

        out = dict(_core.build_index(d, threads, tick, sel, mem))
        if sel is None:  # "up to date" only after the checksums are known good
            out["verified"] = ensure_verified(d, threads)
        return out


def _build_groups(
    d: Path,
    plan: list[list[int]],
    threads: int | None,
    progress: Progress | None,
    ray: bool,
    memory: int | None,
) -> dict[str, Any]:
    """:func:`build_index` of each group of ``plan`` in turn (one call each, so a group never
    merges with its neighbours in the core's plan); one report, progress counted over all."""
    t0 = time.perf_counter()
    total = sum(map(len, plan))
    reports = []
    done = 0
    for g in plan:
        sub = None if progress is None else _shifted(progress, done, total)
        reports.append(build_index(d, threads, sub, shards=g, ray=ray, memory=memory))
        done += len(g)
    keys = ("shards", "built", "skipped", "units", "tokens_built")
    out: dict[str, Any] = {k: sum(r[k] for r in reports) for k in keys}
    out.update({k: reports[-1][k] for k in ("memory", "concurrency", "max_unit")})
    out["seconds"] = time.perf_counter() - t0
    return out


def _shifted(progress: Progress, base: int, total: int) -> Progress:
    """``progress`` of one call of several: its counts start at ``base`` of ``total``."""

    def tick(t: Tick) -> None:
        progress(dataclasses.replace(t, done=base + t.done, total=total))

    return tick


SMALL_SHARD = 1 << 24
"""Shards of fewer tokens are grouped into shared units (``kdmem_core::index::plan``)."""
MIN_GROUP = 1 << 27
"""A group of small shards grows to at most this many tokens (the core's ``min_group``: the
core cuts a run of small shards into groups of at least this size, so a planned group of at
most this size is one unit when built alone)."""


def shard_sizes(shards_dir: str | PathLike[str]) -> list[int]:
    """Tokens of each ``*.kdt`` file of ``shards_dir`` (name order): from ``shards.json``
    when there is one (after checking that it describes a finished ``kdmem shard`` run of
    exactly these files), otherwise from each shard's header. O(shards), no token read."""
    d = Path(shards_dir)
    names = sorted(p.name for p in d.glob("*.kdt"))
    if not names:
        raise InvalidArgumentError(
            f"invalid SHARDS_DIR = {d}: it holds no shard-*.kdt files; run `kdmem shard` first "
            "or pass the directory it wrote"
        )
    manifest = d / "shards.json"
    if manifest.is_file():
        try:
            m = json.loads(manifest.read_text("utf-8"))
            listed = [str(e["name"]) for e in m["shards"]]
            sizes = [int(e["n_tokens"]) for e in m["shards"]]
            complete = bool(m.get("complete"))
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptFileError(
                f"{manifest}: not a kdmem shard manifest ({e}); rerun `kdmem shard`"
            ) from None
        if not complete:
            raise IncompleteShardSetError(
                f"{d} holds an unfinished `kdmem shard` run; rerun the same command to resume "
                "it before indexing"
            )
        if listed != names:
            extra = sorted(set(names) - set(listed))[:3]
            gone = sorted(set(listed) - set(names))[:3]
            raise IncompleteShardSetError(
                f"{d} holds {len(names)} shard files, not the {len(listed)} its shards.json "
                f"lists (unlisted: {extra}, missing: {gone}): the shard set changed since "
                "`kdmem shard` wrote it, so tasks would plan different groups; restore the "
                "files or rerun `kdmem shard`"
            )
        return sizes
    sizes = []
    for name in names:
        with open(d / name, "rb") as f:
            head = f.read(24)
        if len(head) < 24 or head[:8] != b"KDMEMTOK":
            raise CorruptFileError(
                f"{d / name}: not a kdmem shard (bad header); rewrite it with `kdmem shard`"
            )
        sizes.append(int.from_bytes(head[16:24], "little"))
    return sizes


def unit_groups(
    shards_dir: str | PathLike[str], shards: Sequence[int] | None = None
) -> list[list[int]]:
    """The planned shard groups of a distributed build (``--group K``, ``--ray``), one unit
    each: runs of consecutive small shards (< 2^24 tokens) grouped up to 2^27 tokens, each
    larger shard alone (its build cuts it into pieces if the budget needs). The plan depends
    on the shard sizes alone (:func:`shard_sizes`), so every task of an array, on any
    machine, plans the same groups; a local build groups the same runs, cut by its thread
    count instead (``kdmem_core::index::plan``). ``shards``: plan only these shard numbers."""
    d = Path(shards_dir)
    sizes = shard_sizes(d)
    sel = list(range(len(sizes))) if shards is None else sorted({int(k) for k in shards})
    if sel and not 0 <= sel[0] <= sel[-1] < len(sizes):
        bad = sel[0] if sel[0] < 0 else sel[-1]
        raise InvalidArgumentError(
            f"invalid shard = {bad}: {d} has {len(sizes)} shards; pass a number below {len(sizes)}"
        )
    groups: list[list[int]] = []
    run: list[int] = []
    total = 0
    for k in sel:
        if sizes[k] >= SMALL_SHARD:
            groups += [run, [k]] if run else [[k]]
            run, total = [], 0
            continue
        if run and (run[-1] != k - 1 or total + sizes[k] > MIN_GROUP):
            groups.append(run)
            run, total = [], 0
        run.append(k)
        total += sizes[k]
    if run:
        groups.append(run)
    return groups


def _planned(shards_dir: str | PathLike[str], groups: Sequence[int]) -> list[list[int]]:
    """The shard numbers of the planned groups numbered ``groups`` (:func:`unit_groups`),
    in group order; one clear error for a number the plan does not have."""
    d = Path(shards_dir)
    plan = unit_groups(d)
    want = sorted({int(g) for g in groups})
    if not want:
        raise InvalidArgumentError("no group numbers given; pass --group K (see --groups)")
    bad = [g for g in want if not 0 <= g < len(plan)]
    if bad:
        raise InvalidArgumentError(
            f"invalid group = {bad[0]}: {d} plans {len(plan)} group(s) of its "
            f"{sum(map(len, plan))} shards (numbers 0..{len(plan) - 1}); "
            f"`kdmem index {d} --groups` lists them"
        )
    return [plan[g] for g in want]


def group_shards(shards_dir: str | PathLike[str], groups: Sequence[int]) -> list[int]:
    """The shard numbers (ascending) of the planned groups ``groups``: what one per-group
    task of featurize or scan opens (``--group K``), a whole unit of a group-built index."""
    return [k for g in _planned(shards_dir, groups) for k in g]


STALE_AFTER_S = 600.0
"""A unit temp file untouched this long whose writer pid is gone is removed."""


def remove_stale_temps(shards_dir: Path, *, older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the temp files (``.NAME.tmp-PID``) of index builds that died: the writer's pid
    is not a live process here and the file has not been written for ``older_than_s``
    seconds (the second condition keeps the temps of writers on other hosts sharing the
    file system). Returns what was removed."""

    removed = []
    now = time.time()
    for p in shards_dir.glob(".*.tmp-*"):
        pid_text = p.name.rsplit("-", 1)[-1]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        try:
            os.kill(pid, 0)
            continue  # alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, another user's
        try:
            if now - p.stat().st_mtime >= older_than_s:
                p.unlink()
                removed.append(p)
        except FileNotFoundError:
            pass
    return removed


def _build_task(
    shards_dir: Path,
    _index: Path,
    threads: int | None,
    memory: int | None,
    *,
    shards: Sequence[int],
) -> dict[str, Any]:
    """One shard's build as a :func:`kdmem.corpus.fanout.map_shards` task."""
    return build_index(shards_dir, threads, shards=shards, memory=memory)


def n_shard_files(shards_dir: str | PathLike[str]) -> int:
    """Number of ``*.kdt`` shard files in ``shards_dir`` (the shard numbers are ``0..n-1``)."""
    return sum(1 for _ in Path(shards_dir).glob("*.kdt"))


def verify_index(shards_dir: str | PathLike[str], threads: int | None = None) -> None:
    """Recompute every checksum of the shards and suffix arrays of ``shards_dir``.

    Raises :class:`kdmem.CorruptFileError` (a file was damaged),
    :class:`kdmem.StaleIndexError` (a shard changed after indexing, or has no index).
    """
    _core.verify_index(Path(shards_dir), threads)


class Index:
    """An indexed shard directory, opened read-only (memory-mapped; opening is cheap).

    An infini-gram index directory (``tokenized.N``, ``table.N``, ``offset.N``; u16 tokens, as
    written by the ``infini-gram`` package's indexer) opens too, with the same queries; it has
    no vocabulary size, tokenizer hash or checksums (``verify()`` does nothing), and token id
    65535 (its document separator) is not a valid query token.

    Args:
        path: a directory where ``kdmem index`` has run.
        tokenizer_hash: when given (64 hex digits, see ``kdmem.corpus.tokenizer_hash``), raise
            :class:`kdmem.TokenizerMismatchError` unless the shards were made with that tokenizer.
        threads: default worker threads for queries (``KDMEM_NUM_THREADS`` or every core).
        shards: open only these shard numbers (positions in name order): the view of one
            per-shard task of a distributed featurize/scan. Document ids stay global and
            ``locate`` reports the directory's shard numbers; counts add over a partition of
            the shards, ``longest_match`` takes the elementwise max, locations concatenate in
            shard order. A unit holding selected and unselected shards is searched whole and
            its results filtered; selecting whole units (:attr:`units`, or
            :func:`group_shards` of an index built by groups) avoids that.

    Raises:
        StaleIndexError: a shard has no suffix array, or changed after indexing.
        CorruptFileError: a header or file size is wrong (``verify()`` checks the data too).
    """

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        tokenizer_hash: str | None = None,
        threads: int | None = None,
        shards: Sequence[int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.threads = threads
        sel = None if shards is None else [int(k) for k in shards]
        self._inner = _core.Index(self.path, sel)
        if self._inner.format == "kdmem":
            ensure_verified(self.path, threads)  # stat only, unless a file changed
        # Maps locate's position-in-subset shard numbers back to the directory's.
        self._shard_map = None if sel is None else np.asarray(self._inner.shard_ids, np.int64)
        if tokenizer_hash is not None:
            self._inner.check_tokenizer(tokenizer_hash)

    def __repr__(self) -> str:
        return (
            f"Index({str(self.path)!r}, shards={self.n_shards}, tokens={self.n_tokens}, "
            f"docs={self.n_docs})"
        )

    @property
    def format(self) -> str:
        """``"kdmem"``, or ``"infini-gram"`` for an infini-gram index directory (read-only)."""
        return self._inner.format

    @property
    def n_shards(self) -> int:
        """Number of shards."""
        return self._inner.n_shards

    @property
    def shard_ids(self) -> list[int]:
        """Numbers (positions in the directory) of the opened shards, ascending."""
        return self._inner.shard_ids

    @property
    def units(self) -> list[list[int]]:
        """The search units, as the shard numbers each covers (in order; a shard cut into
        pieces appears once per piece). A query costs about one lookup per unit; per-unit
        tasks (``Index(path, shards=unit)``) search each unit once."""
        return self._inner.units

    @property
    def ram_bytes(self) -> int:
        """Bytes this index holds in RAM beyond its memory maps (samples, document tables)."""
        return self._inner.ram_bytes

    @property
    def disk_bytes(self) -> int:
        """Bytes on disk of the unit and shard files searched."""
        return self._inner.disk_bytes

    @property
    def files(self) -> list[Path]:
        """The unit and shard files searched."""
        return [Path(p) for p in self._inner.files]

    @property
    def n_tokens(self) -> int:
        """Tokens over all shards."""
        return self._inner.n_tokens

    @property
    def n_docs(self) -> int:
        """Documents over all shards."""
        return self._inner.n_docs

    @property
    def vocab_size(self) -> int:
        """Tokenizer vocabulary size recorded in the shards (0 = unknown)."""
        return self._inner.vocab_size

    @property
    def dtype(self) -> np.dtype[Any]:
        """Token dtype of the shards: uint16 or uint32."""
        return np.dtype(np.uint16 if self._inner.token_width == 2 else np.uint32)

    @property
    def tokenizer_hash(self) -> str:
        """SHA-256 of the tokenizer vocabulary, 64 hex digits (all zeros = unknown)."""
        return self._inner.tokenizer_hash

    def check_tokenizer(self, tokenizer_hash: str) -> None:
        """Raise TokenizerMismatchError unless queries made with this tokenizer may be asked."""
        self._inner.check_tokenizer(tokenizer_hash)

    def _threads(self, threads: int | None) -> int | None:
        return self.threads if threads is None else threads

    def count(self, tokens: TokenArray, *, threads: int | None = None) -> int:
        """Occurrences of ``tokens`` inside documents; the empty query counts every token."""
        return self._inner.count(_query(tokens), self.threads if threads is None else threads)

    def locate(
        self, tokens: TokenArray, limit: int | None = None, *, threads: int | None = None
    ) -> Locations:
        """The first ``limit`` occurrences (all when None) in corpus order."""
        s, d, o = self._inner.locate(_query(tokens), _limit(limit), self._threads(threads))
        return self._rows(s, d, o)

    def _rows(
        self, s: npt.NDArray[np.int64], d: npt.NDArray[np.int64], o: npt.NDArray[np.int64]
    ) -> Locations:
        return Locations(s if self._shard_map is None else self._shard_map[s], d, o)

    def longest_match(
        self, tokens: TokenArray, *, threads: int | None = None
    ) -> npt.NDArray[np.int64]:
        """int64 array, shape ``(len(tokens),)``: entry ``i`` is the length of the longest
        prefix of ``tokens[i:]`` occurring inside one document (0 if ``tokens[i]`` never occurs).
        """
        out = self._inner.longest_match(_query(tokens), self._threads(threads))
        return out.astype(np.int64)

    def ngram_overlap(
        self, tokens: TokenArray, n: int, *, threads: int | None = None
    ) -> NgramOverlap:
        """Which n-grams ``tokens[i:i+n]`` occur in the index (``n >= 1``)."""
        if n < 1:
            raise InvalidArgumentError(f"invalid n = {n}: n-grams need n >= 1")
        pos, total, frac = self._inner.ngram_overlap(_query(tokens), n, self._threads(threads))
        return NgramOverlap(frac, pos.astype(np.int64), total)

    def count_many(
        self, queries: npt.ArrayLike | Sequence[TokenArray], *, threads: int | None = None
    ) -> npt.NDArray[np.int64]:
        """:meth:`count` of each query (rows of a 2-D array, or a list of 1-D arrays)."""
        out = self._inner.count_many(_as_batch(queries), self._threads(threads))
        return out.astype(np.int64)

    def locate_many(
        self,
        queries: npt.ArrayLike | Sequence[TokenArray],
        limit: int | None = None,
        *,
        threads: int | None = None,
    ) -> list[Locations]:
        """:meth:`locate` of each query."""
        rows = self._inner.locate_many(_as_batch(queries), _limit(limit), self._threads(threads))
        return [self._rows(s, d, o) for s, d, o in rows]

    def longest_match_many(
        self, queries: npt.ArrayLike | Sequence[TokenArray], *, threads: int | None = None
    ) -> list[npt.NDArray[np.int64]]:
        """:meth:`longest_match` of each query."""
        out = self._inner.longest_match_many(_as_batch(queries), self._threads(threads))
        return [x.astype(np.int64) for x in out]

    def ngram_overlap_many(
        self,
        queries: npt.ArrayLike | Sequence[TokenArray],
        n: int,
        *,
        threads: int | None = None,
    ) -> list[NgramOverlap]:
        """:meth:`ngram_overlap` of each query."""
        if n < 1:
            raise InvalidArgumentError(f"invalid n = {n}: n-grams need n >= 1")
        out = self._inner.ngram_overlap_many(_as_batch(queries), n, self._threads(threads))
        return [NgramOverlap(f, p.astype(np.int64), t) for p, t, f in out]

    def verify(self, *, threads: int | None = None) -> None:
        """Recompute every checksum (O(total bytes)); see :func:`verify_index`."""
        self._inner.verify(self._threads(threads), None)


__all__ = [
    "Index",
    "Locations",
    "NgramOverlap",
    "build_index",
    "default_memory",
    "group_shards",
    "n_shard_files",
    "parse_memory",
    "shard_sizes",
    "unit_groups",
    "verify_index",
]
