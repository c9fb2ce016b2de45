"""Sections on who memorized what: rates, T/B/S overlaps (UpSet), zlib vs baseline perplexity
of the easy examples, entropy vs log-probability on (T ∩ B) \\ S, memorization vs
distillation temperature, utility (validation loss and perplexity) and the memorized examples
with their text (Borkar et al. 2026; definitions in :mod:`kdmem.analysis.sets`).

Why one file (~560 lines): seven sections of one theme (who memorized what), each a view
dataclass and the function that fills it; they share the table helpers and the set algebra.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdmem.analysis.figures import EntropyPlot, RatesPlot, TemperaturePlot, UpSetPlot, ZlibPlot
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
from kdmem.analysis.sets import family_sets
from kdmem.analysis.tables import STAGE_FEATURIZE, MeasureTable, RunDir
from kdmem.errors import MissingStageInputError

__all__ = ["examples", "mechanism", "rates", "sets", "temperature", "utility", "zlib"]

MAX_TEXT_CHARS = 600  # an example's text is cut here in the examples table


# ---- rates ------------------------------------------------------------------------------------


SEED_MEANING = {
    "none": "Baselines and students start from the same pretrained weights: a seed changes "
    "the order of the training data only (as in the paper).",
    "random_head": "A seed changes the data order and re-initialises the lm-head "
    '(run.seed_init = "random_head"): seeds differ in initialisation too.',
}


@dataclass(frozen=True)
class RatesView:
    """rates.html.j2: rate per role (table and bars); prefix/suffix lengths in tokens; what a
    seed means in this run."""

    prefix: str
    suffix: str
    table: Table
    figure: Figure
    seed_note: str | None


def _mean_of(t: MeasureTable, column: str) -> str:
    """Mean of an optional per-example score column, ``-`` when the table lacks it."""
    return num(float(np.mean(t.columns[column]))) if column in t.columns and t.n else "-"


def rates(run: RunDir) -> Section:
    ms = run.all_measures()
    first = next(iter(ms.values()), None)
    prefix = str(first.metadata.get("prefix", "?")) if first is not None else "?"
    suffix = str(first.metadata.get("suffix", "?")) if first is not None else "?"
    rows: list[list[Cell]] = []
    for name, t in ms.items():
        nm = int(t.memorized.sum())
        rows.append(
            [
                name,
                t.role.kind,
                num(t.role.temperature),
                num(t.role.seed),
                t.n,
                nm,
                pct(nm / t.n if t.n else None),
                _mean_of(t, "tf_match_frac"),
                _mean_of(t, "match_frac"),
            ]
        )
    summary = {
        name: {
            "n_memorized": int(t.memorized.sum()),
            "n": t.n,
            "rate": float(t.memorized.mean()) if t.n else None,
            **{
                f"mean_{c}": float(np.mean(t.columns[c]))
                for c in ("tf_match_frac", "match_frac")
                if c in t.columns and t.n
            },
        }
        for name, t in ms.items()
    }
    plot = RatesPlot(roles=list(ms), percent=[100 * float(t.memorized.mean()) for t in ms.values()])
    view = RatesView(
        prefix=prefix,
        suffix=suffix,
        table=table(
            "rates",
            [
                "role",
                "kind",
                "T",
                "seed",
                "examples",
                "memorized",
                "rate",
                "partial (teacher-forced)",
                "partial (decoded)",
            ],
            rows,
            left=2,
        ),
        figure=Figure("rates", "memorization rate per role", plot),
        seed_note=SEED_MEANING.get(seed_init) if (seed_init := run.seed_init()) else None,
    )
    return Section(
        "rates", view, summary={"rates": summary, "seed_init": run.seed_init() or "unknown"}
    )


# ---- sets -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetsView:
    """sets.html.j2: per-seed set sizes and inheritance, seed stability, the UpSet regions
    and the family analysis' notes."""

    directions: Table
    table: Table
    stability: Table | None
    jaccard: Table | None
    groups: Table | None
    upset: Table
    upset_figure: Figure | None
    notes: tuple[str, ...]


def _holds(v: bool | None) -> str:
    return "not checked" if v is None else ("yes" if v else "NO")


def _directions_table(d: Mapping[str, Any]) -> Table:
    """The paper's three directional findings (:func:`kdmem.analysis.sets.paper_directions`)
    with the counts behind each."""
    below, easy, inh = (
        d["students_below_baseline"],
        d["students_in_easy"],
        d["hard_inherits_more"],
    )
    rates = "; ".join(
        f"{k} {pct(below[f'{k}_rate'])}" for k in ("soft", "hard") if f"{k}_rate" in below
    )
    shares = "; ".join(
        f"{k} {easy[k]['in_easy']} of {easy[k]['n_memorized']} ({pct(easy[k]['share'])})"
        for k in ("soft", "hard")
        if k in easy
    )
    return table(
        "directions",
        ["the paper finds", "here", "counts"],
        [
            [
                "students memorize less than the baseline",
                _holds(below["holds"]),
                f"baseline {pct(below['baseline_rate'])}; {rates or 'no students'}",
            ],
            [
                f">= {100 * easy['threshold']:.0f}% of a student's memorized set lies in T ∩ B",
                _holds(easy["holds"]),
                shares or "no students",
            ],
            [
                "hard KD inherits more teacher-specific examples, (T ∩ S) \\ B, than soft KD",
                _holds(inh["holds"]),
                f"hard {inh['hard_inherited']}, soft {inh['soft_inherited']} "
                f"(over {inh['seeds']} seed(s) with both)",
            ],
        ],
        left=3,
    )


def sets(run: RunDir) -> tuple[Section, dict[str, Any] | None]:
    """The T/B/S section and the family analysis it shows (None when omitted)."""
    try:
        fam = family_sets(run)
    except OPTIONAL as e:
        return omitted("sets", missing(e)), None
    rows = []
    for entry in fam["per_seed"]:
        row: list[Cell] = [
            num(entry["seed"]),
            entry["teacher"],
            entry["baseline"],
            entry["easy"],
            entry["teacher_specific"],
        ]
        for kind in ("soft", "hard"):
            b = entry.get(kind)
            row += [b["n_memorized"], pct(b["share_in_easy"]), b["inherited"]] if b else ["-"] * 3
        row.append(num(entry.get("inherited_ratio_hard_to_soft"), 3))
        sh = entry.get("soft_hard")
        row += (
            [pct(sh["jaccard"]), sh["hard_only"], sh["hard_only_in_teacher"]] if sh else ["-"] * 3
        )
        rows.append(row)
    st = fam["seed_stability"]
    stab_rows = [
        [
            kind,
            st["n_baseline_seeds"],
            st[kind]["n_student_seeds"],
            st["baseline_all_seeds"],
            st[kind]["baseline_all_student_none"],
        ]
        for kind in ("soft", "hard")
        if kind in st
    ]
    labels, regions = _upset_regions(run)
    jac_rows = [
        [
            kind,
            len(v["pairs"]),
            pct(v["mean"]),
            ", ".join(f"{p['seeds'][0]}~{p['seeds'][1]} {pct(p['jaccard'])}" for p in v["pairs"]),
        ]
        for kind, v in st.get("jaccard", {}).items()
    ]
    groups = fam.get("groups") or {}
    roles = list(run.all_measures())
    group_rows = [
        [g, v["n"], *[v["memorized"].get(r, 0) for r in roles]] for g, v in groups.items()
    ]
    view = SetsView(
        directions=_directions_table(fam["directions"]),
        jaccard=table(
            "jaccard", ["models", "seed pairs", "mean Jaccard", "pairs"], jac_rows, left=1
        )
        if jac_rows
        else None,
        groups=table("groups", ["group", "examples", *roles], group_rows) if group_rows else None,
        table=table(
            "sets",
            [
                "seed",
                "|T|",
                "|B|",
                "|T∩B|",
                "|T\\B|",
                "|S soft|",
                "soft in T∩B",
                "(T∩S)\\B soft",
                "|S hard|",
                "hard in T∩B",
                "(T∩S)\\B hard",
                "hard/soft",
                "soft~hard Jaccard",
                "hard-only",
                "hard-only in T",
            ],
            rows,
        ),
        stability=table(
            "stability",
            ["student", "baseline seeds", "student seeds", "B in every seed", "… and S in none"],
            stab_rows,
        )
        if stab_rows
        else None,
        upset=table(
            "upset",
            ["exactly in", "examples"],
            [
                [" ∩ ".join(lab for lab, m in zip(labels, key, strict=True) if m) + " only", cnt]
                for key, cnt in regions
            ],
        ),
        upset_figure=Figure("upset", "UpSet plot of memorized sets", UpSetPlot(labels, regions))
        if regions
        else None,
        notes=tuple(fam["notes"]),
    )
    return Section("sets", view, summary={"sets": fam}), fam


def _upset_regions(run: RunDir) -> tuple[list[str], list[tuple[tuple[bool, ...], int]]]:
    """Labels (T, B, S soft, S hard: primary seed of each role present) and the UpSet regions:
    (membership per label, number of examples memorized by exactly those), largest first."""
    named: dict[str, np.ndarray] = {
        "T": run.primary("teacher").example_id[run.primary("teacher").memorized],
        "B": run.primary("baseline").example_id[run.primary("baseline").memorized],
    }
    for kind, label in (("student_soft", "S soft"), ("student_hard", "S hard")):
        found = run.find(kind)
        if found:
            named[label] = found[0].example_id[found[0].memorized]
    labels = list(named)
    every = np.unique(np.concatenate(list(named.values())))
    member = np.array([np.isin(every, named[k]) for k in labels])  # (sets, ids)
    regions: dict[tuple[bool, ...], int] = {}
    for col in member.T:
        key = tuple(bool(v) for v in col)
        regions[key] = regions.get(key, 0) + 1
    return labels, sorted(regions.items(), key=lambda kv: -kv[1])


# ---- easy examples: zlib vs perplexity ----------------------------------------------------------


@dataclass(frozen=True)
class ZlibView:
    """zlib.html.j2: median zlib_bytes and baseline perplexity, easy vs all; the scatter."""

    table: Table
    figure: Figure


def zlib(run: RunDir, *, sample_size: int, seed: int) -> Section:
    if not run.has_features():
        return omitted(
            "zlib",
            f"Section omitted: {run.features_path} is missing (written by `{STAGE_FEATURIZE}`).",
        )
    try:
        feats = run.features()
        zl = feats.column("zlib_bytes").astype(np.float64)
        t, b = run.primary("teacher"), run.primary("baseline")
        ppl = b.column("ppl_window")
    except OPTIONAL as e:
        return omitted("zlib", missing(e))
    easy = t.memorized & b.memorized
    rng = np.random.default_rng(seed)
    k = min(sample_size, len(zl))
    sample = rng.choice(len(zl), size=k, replace=False)
    rows: list[list[Cell]] = [
        [
            "easy (T ∩ B)",
            int(easy.sum()),
            num(np.median(zl[easy]) if easy.any() else None),
            num(np.median(ppl[easy]) if easy.any() else None),
        ],
        ["all examples", len(zl), num(np.median(zl)), num(np.median(ppl))],
    ]
    plot = ZlibPlot(zl[sample], ppl[sample], zl[easy], ppl[easy], baseline=b.role.name)
    view = ZlibView(
        table=table(
            "zlib", ["group", "examples", "median zlib_bytes", "median baseline ppl"], rows
        ),
        figure=Figure("zlib-vs-ppl", "zlib bytes vs baseline perplexity", plot),
    )
    return Section("zlib", view)


# ---- mechanism: entropy vs log-probability ------------------------------------------------------


@dataclass(frozen=True)
class MechanismView:
    """mechanism.html.j2: mean log-probability and entropy per model on (T ∩ B) \\ S."""

    table: Table
    figure: Figure


def mechanism(run: RunDir) -> Section:
    try:
        t, b, st = run.primary("teacher"), run.primary("baseline"), run.primary("student_soft")
        mask = t.memorized & b.memorized & ~st.memorized
        series = [
            (m.role.name, m.column("seq_logprob")[mask], m.column("entropy_last_k")[mask])
            for m in (t, b, st)
        ]
    except OPTIONAL as e:
        return omitted("mechanism", missing(e))
    if not mask.any():
        return omitted("mechanism", f"Section omitted: (T ∩ B) \\ S is empty for {st.role.name}.")
    rows: list[list[Cell]] = [
        [name, int(mask.sum()), num(float(np.mean(lp))), num(float(np.mean(ent)))]
        for name, lp, ent in series
    ]
    view = MechanismView(
        table=table(
            "mechanism", ["model", "examples", "mean seq_logprob", "mean entropy_last_k"], rows
        ),
        figure=Figure("entropy-vs-logprob", "entropy vs log-probability", EntropyPlot(series)),
    )
    return Section("mechanism", view)


# ---- temperature sweep ------------------------------------------------------------------------


@dataclass(frozen=True)
class TemperatureView:
    """temperature.html.j2: soft-student rate per temperature (mean, std over seeds)."""

    table: Table
    figure: Figure


def temperature(fam: Mapping[str, Any] | None) -> Section:
    """The sweep of the family analysis (``sets`` section) over soft-student temperatures."""
    sweep = (fam or {}).get("temperature_sweep") or []
    if not sweep:
        return omitted(
            "temperature",
            "Section omitted: no temperature sweep in this run "
            "(measure/student_soft_T<t>_seed<k>.parquet, see docs/run_dir.md).",
        )
    plot = TemperaturePlot(
        temperatures=[x["temperature"] for x in sweep],
        percent_mean=[100 * x["mean"] for x in sweep],
        percent_std=[100 * (x["std"] or 0.0) for x in sweep],
    )
    rows = [
        [
            num(x["temperature"]),
            "main students" if x.get("main") else "sweep",
            x["n_runs"],
            pct(x["mean"]),
            pct(x["std"]),
        ]
        for x in sweep
    ]
    view = TemperatureView(
        table=table(
            "temperature", ["T", "runs from", "runs", "rate (mean)", "rate (std)"], rows, left=2
        ),
        figure=Figure("temperature", "memorization vs temperature", plot),
    )
    return Section("temperature", view, summary={"temperature_sweep": sweep})


# ---- utility ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UtilityView:
    """utility.html.j2: held-out loss and perplexity per model."""

    table: Table


def utility(run: RunDir) -> Section:
    val = run.validation()
    if not val:
        return omitted(
            "utility",
            f"Section omitted: no {run.layout.validation_dir}/<role>.json files "
            "(written by the training stages, see docs/run_dir.md).",
        )
    rows = [
        [role, num(v.get("loss")), num(v.get("ppl")), num(v.get("n_tokens"))]
        for role, v in val.items()
    ]
    view = UtilityView(
        table(
            "utility",
            ["model", "validation loss (nats/token)", "validation perplexity", "tokens"],
            rows,
        )
    )
    return Section("utility", view, summary={"utility": val})


# ---- memorized examples -----------------------------------------------------------------------


@dataclass(frozen=True)
class ExamplesView:
    """examples.html.j2: the student's memorized examples with membership and text."""

    student: str
    n_memorized: int
    n_shown: int
    texts_missing: Path | None  # data/examples.parquet, when it is absent
    table: Table


def examples(run: RunDir, *, max_examples: int) -> Section:
    """The student's memorized examples, teacher-specific inheritance ((T ∩ S) \\ B) first,
    then by id, with their text (cut at MAX_TEXT_CHARS) and zlib_bytes."""
    try:
        student = run.primary("student_soft")
    except MissingStageInputError:
        found = [t for t in run.all_measures().values() if t.role.kind.startswith("student")]
        if not found:
            return omitted("examples", "Section omitted: no student measure tables.")
        student = found[0]
    ids = student.example_id[student.memorized]
    member: dict[str, MeasureTable] = {}
    for kind in ("teacher", "baseline", "student_soft", "student_hard"):
        found = run.find(kind)
        if found:
            member[found[0].role.name] = found[0]
    teachers, baselines = run.find("teacher"), run.find("baseline")
    t = teachers[0] if teachers else None
    b = baselines[0] if baselines else None

    def flag(tab: MeasureTable, i: int) -> bool:
        return bool(tab.memorized[np.searchsorted(tab.example_id, i)])

    def inherited(i: int) -> bool:
        return t is not None and b is not None and flag(t, i) and not flag(b, i)

    order = sorted(ids.tolist(), key=lambda i: (not inherited(i), i))[:max_examples]
    texts = run.texts(order)
    zl: dict[int, float] = {}
    if run.has_features():
        f = run.features()
        if "zlib_bytes" in f.columns:
            zl = dict(
                zip(
                    order,
                    f.columns["zlib_bytes"][np.searchsorted(f.example_id, order)].tolist(),
                    strict=True,
                )
            )
    rows = []
    for i in order:
        text = texts.get(i)
        if text is None:
            shown = "(text unavailable)"
        elif len(text) <= MAX_TEXT_CHARS:
            shown = text
        else:
            shown = text[:MAX_TEXT_CHARS] + " …"
        rows.append(
            [
                i,
                *["✓" if flag(tab, i) else "" for tab in member.values()],
                "✓" if inherited(i) else "",
                num(zl.get(i)),
                shown,
            ]
        )
    view = ExamplesView(
        student=student.role.name,
        n_memorized=len(ids),
        n_shown=len(order),
        texts_missing=None if run.examples_path.exists() else run.examples_path,
        table=table(
            "examples",
            ["example_id", *member, "(T∩S)\\B", "zlib_bytes", "text"],
            rows,
            text_last=True,
        ),
    )
    return Section("examples", view)
