"""Sections on how the labels came about: memorization over training (the rate of each kept
model on a fixed subset, ``measure.every_steps``), decoded spot checks of memorized examples
(greedy decoding re-run on a few of them, ``measure.spot_checks``) and the overlap with other
model families' runs over the same documents (:func:`kdmem.analysis.sets.cross_family`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdmem.analysis.figures import StepsPlot
from kdmem.analysis.sections.base import (
    OPTIONAL,
    Cell,
    Figure,
    Section,
    Table,
    missing,
    num,
    omitted,
    pct,
    table,
)
from kdmem.analysis.sets import cross_family
from kdmem.analysis.tables import RunDir
from kdmem.identity import is_known, tokenizer_hash

__all__ = ["families", "spot_checks", "training"]

MAX_SPOT_CHECKS = 24  # decoded spot checks shown, over all models
MAX_DECODED_CHARS = 300


# ---- memorization over training ---------------------------------------------------------------


@dataclass(frozen=True)
class TrainingView:
    """training.html.j2: memorization rate of the subset per kept model (table and lines)."""

    n_subset: int | None
    table: Table
    figure: Figure


def training(run: RunDir) -> Section:
    steps = run.steps()
    if not steps:
        return omitted(
            "training",
            "Section omitted: no measure/steps/<role>.json (set measure.every_steps = K in the "
            "config to keep a model every K optimizer steps and measure it, see docs/run_dir.md).",
        )
    series = []
    n_subset = None
    by_role: dict[str, dict[int, dict[str, Any]]] = {}
    for role, points in steps.items():
        pts = sorted(points, key=lambda p: int(p["step"]))
        by_role[role] = {int(p["step"]): p for p in pts}
        for p in pts:
            if p.get("n") is not None:
                n_subset = int(p["n"])
        series.append(
            (role, [int(p["step"]) for p in pts], [100 * float(p.get("rate") or 0.0) for p in pts])
        )
    all_steps = sorted({s for pts in by_role.values() for s in pts})
    rows: list[list[Cell]] = [
        [
            role,
            *[
                f"{pts[s].get('memorized')} ({pct(pts[s].get('rate'))})" if s in pts else "-"
                for s in all_steps
            ],
        ]
        for role, pts in by_role.items()
    ]
    view = TrainingView(
        n_subset=n_subset,
        table=table("training", ["model", *[f"step {s}" for s in all_steps]], rows),
        figure=Figure("training", "memorization vs training step", StepsPlot(series)),
    )
    return Section("training", view, summary={"memorization_over_training": steps})


# ---- decoded spot checks ----------------------------------------------------------------------


@dataclass(frozen=True)
class SpotChecksView:
    """spot_checks.html.j2: memorized examples decoded again, suffix vs decoded text."""

    decoded_with: str  # the tokenizer used, or why ids are shown
    table: Table
    n_checked: int
    n_agree: int


def _decoder(run: RunDir, hashes: set[str]) -> tuple[Any, str]:
    """The run's tokenizer when it is the one the measure tables were made with, else None
    and the reason ids are shown instead."""
    path = run.layout.tokenizer_json
    if not path.is_file():
        return None, f"token ids (no {path} to decode them with)"
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    known = {h for h in hashes if is_known(h)}
    if known and known != {tokenizer_hash(tok)}:
        return None, (
            f"token ids: {path} is not the tokenizer the measure tables were made with "
            "(tokenizer hashes differ)"
        )
    return tok, str(path)


def spot_checks(run: RunDir) -> Section:
    """The decoded spot checks recorded by ``kdmem measure --spot-checks`` (metadata
    ``verify.spot_checks``) beside the true suffix, escaped by the template."""
    checks: list[tuple[str, dict[str, Any]]] = []
    hashes: set[str] = set()
    suffix_len = None
    for name, t in run.all_measures().items():
        verify = t.metadata.get("verify") or {}
        for c in verify.get("spot_checks") or []:
            checks.append((name, c))
            hashes.add(str(t.metadata.get("tokenizer_hash") or ""))
            suffix_len = t.metadata.get("suffix", suffix_len)
    if not checks:
        return omitted(
            "spot_checks",
            "Section omitted: the measure tables hold no decoded spot checks "
            "(measure.spot_checks in the config, or kdmem measure --spot-checks N).",
        )
    tok, decoded_with = _decoder(run, hashes)
    ids = sorted({int(c["example_id"]) for _, c in checks})
    texts = run.texts(ids)
    shown = checks[:MAX_SPOT_CHECKS]

    def cut(s: str) -> str:
        return s if len(s) <= MAX_DECODED_CHARS else s[:MAX_DECODED_CHARS] + " …"

    rows: list[list[Cell]] = []
    for role, c in shown:
        dec = [int(x) for x in c["decoded"]]
        text = tok.decode(dec, skip_special_tokens=False) if tok is not None else str(dec)
        whole = texts.get(int(c["example_id"]))
        rows.append(
            [
                role,
                int(c["example_id"]),
                "yes" if c["match"] else "NO",
                cut(whole[-MAX_DECODED_CHARS:]) if whole else "(text unavailable)",
                cut(text),
            ]
        )
    n_agree = sum(bool(c["match"]) for _, c in checks)
    view = SpotChecksView(
        decoded_with=decoded_with,
        n_checked=len(checks),
        n_agree=n_agree,
        table=table(
            "spot-checks",
            ["model", "example_id", "decoded = suffix", "end of the example", "decoded suffix"],
            rows,
            left=1,
            text_last=True,
        ),
    )
    summary = {"n": len(checks), "n_agree": n_agree, "suffix": suffix_len}
    return Section("spot_checks", view, summary={"spot_checks": summary})


# ---- other families ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FamiliesView:
    """families.html.j2: per pair of families, the overlap of memorized sets per role."""

    tables: tuple[tuple[str, int, Table, str], ...]  # (title, common examples, overlap, zlib)


def families(run: RunDir, others: Mapping[str, RunDir]) -> Section:
    """Cross-family overlap of this run with ``others`` (runs of other model families over the
    same documents: ``kdmem report RUN --family NAME=DIR``)."""
    if not others:
        return omitted(
            "families",
            "Section omitted: one model family (give runs of other families over the same "
            "documents with kdmem report RUN --family NAME=DIR).",
        )
    runs = {run.name: run, **others}
    try:
        pairs = cross_family(runs)
    except OPTIONAL as e:
        return omitted("families", missing(e))
    out = []
    for pair in pairs:
        a, b = pair["families"]
        rows: list[list[Cell]] = [
            [
                kind,
                f"{v['roles'][0]} / {v['roles'][1]}",
                v["first"],
                v["second"],
                v["intersection"],
                pct(v["jaccard"]),
            ]
            for kind, v in pair["overlap"].items()
        ]
        zc = pair.get("zlib_correlation")
        z = (
            f"zlib_bytes correlation over the common examples: Pearson {num(zc['pearson'])}, "
            f"Spearman {num(zc['spearman'])}"
            if zc
            else "zlib correlation: features.parquet missing in one of the runs"
        )
        out.append(
            (
                f"{a} vs {b}",
                int(pair["n_common"]),
                table("families", ["models", "roles", a, b, "both", "Jaccard"], rows, left=2),
                z,
            )
        )
    n_common = [t[1] for t in out]
    summary = {"cross_family": pairs, "min_common": int(np.min(n_common)) if n_common else 0}
    return Section("families", FamiliesView(tuple(out)), summary=summary)
