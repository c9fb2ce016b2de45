"""The audit of the hard-distillation data: which of the teacher's continuations (the tokens
it generated after each prefix, ``scan/teacher_continuations.parquet``) carry a maximal
verbatim span of at least ``min_len`` tokens of the training corpus
(``scan/teacher_spans.parquet``, :mod:`kdmem.corpus.scan`). A hard student is trained on
exactly these tokens, so a copied span is training data it sees again (paper: hard
distillation inherits more teacher-specific memorization than soft).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pyarrow.parquet as pq

from kdmem.analysis.sections.base import Cell, Section, Table, omitted, pct, table
from kdmem.analysis.tables import RunDir
from kdmem.rundir import read_table_meta

__all__ = ["scan"]

MAX_SPANS = 5  # longest spans shown with their text
MAX_CHARS = 300


@dataclass(frozen=True)
class ScanView:
    """scan.html.j2: the share of continuations with a span, and the longest spans."""

    min_len: int
    decoded_with: str  # the tokenizer used, or why ids are shown
    table: Table
    longest: Table


def _decoder(run: RunDir) -> tuple[Any, str]:
    path = run.layout.tokenizer_json
    if not path.is_file():
        return None, f"token ids (no {path} to decode them with)"
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path)), str(path)


def scan(run: RunDir) -> Section:
    path = run.layout.spans
    if not path.is_file():
        return omitted(
            "scan",
            f"Section omitted: no {path} (the scan stage writes it when [hard] and [scan] are "
            "enabled; or kdmem scan CONTINUATIONS --index SHARDS --out FILE).",
        )
    meta = read_table_meta(path)
    spans = pq.read_table(path, columns=["example_id", "start", "length", "count"])
    n = int(meta.get("n_generations", 0))
    min_len = int(meta.get("min_len", 0))
    ids = spans.column("example_id").to_numpy()
    starts = spans.column("start").to_numpy().astype(np.int64)
    lengths = spans.column("length").to_numpy().astype(np.int64)
    counts = spans.column("count").to_numpy().astype(np.int64)
    n_with = len(np.unique(ids))
    share = n_with / n if n else None
    longest = int(lengths.max()) if len(lengths) else None
    tok, decoded_with = _decoder(run)
    tokens: dict[int, list[int]] = {}
    order = np.argsort(-lengths, kind="stable")[:MAX_SPANS]
    cont = run.layout.continuations
    if len(order) and cont.is_file():
        want = sorted({int(ids[i]) for i in order})
        t = pq.read_table(cont, filters=[("example_id", "in", want)])
        eids = cast("list[int]", t.column("example_id").to_pylist())
        toks = cast("list[list[int]]", t.column("input_ids").to_pylist())
        tokens = dict(zip(eids, toks, strict=True))
    rows: list[list[Cell]] = []
    for i in order:
        eid, st, ln = int(ids[i]), int(starts[i]), int(lengths[i])
        piece = tokens.get(eid, [])[st : st + ln]
        if not piece:
            text = "(tokens unavailable)"
        else:
            text = tok.decode(piece, skip_special_tokens=False) if tok is not None else str(piece)
        text = text if len(text) <= MAX_CHARS else text[:MAX_CHARS] + " …"
        rows.append([eid, st, ln, int(counts[i]), text])
    view = ScanView(
        min_len=min_len,
        decoded_with=decoded_with,
        table=table(
            "scan",
            ["continuations", f"with a span >= {min_len} tokens", "share", "spans", "longest"],
            [[n, n_with, pct(share), len(ids), longest]],
            left=0,
        ),
        longest=table(
            "scan-longest",
            ["example_id", "start", "tokens", "corpus count", "span"],
            rows,
            text_last=True,
        ),
    )
    summary = {
        "n_continuations": n,
        "min_len": min_len,
        "n_with_span": n_with,
        "share_with_span": share,
        "n_spans": len(ids),
        "longest": longest,
    }
    return Section("scan", view, summary={"scan": summary})
