"""Who memorized what: the set algebra of T, B and S (Borkar et al. 2026, "Sets and the analyses").

T, B, S are the example ids memorized by the teacher, the baseline and a student (soft or
hard). Per run directory ("family") this computes

* rates of every measured role, and mean ± std over seeds per kind;
* per seed: the easy set T ∩ B, the share of S inside T ∩ B, teacher-specific inheritance
  |(T ∩ S) \\ B| for soft and hard and the hard/soft ratio, soft ∩ hard overlap (Jaccard and
  both containments), hard-only examples and how many of them the teacher memorized;
* seed stability: examples the baseline memorizes in every seed and the student in none;
* the soft-student temperature sweep (rate per temperature);

and across families (several run directories over the same source documents, matched by
example id): overlap of each role's memorized sets and the correlation of ``zlib_bytes``.

All set operations run on sorted int64 id arrays (``numpy`` set routines, O(n log n)); tests
check every number against plain Python ``set`` arithmetic. Standard deviations are sample
standard deviations (ddof=1), ``None`` for a single run; undefined ratios are ``None``.

Why one file (~600 lines): the family analysis, the cross-family comparison and their printed
tables (``kdmem sets``) read the same JSON-ready dict; its keys are defined and printed here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kdmem._version import __version__
from kdmem.analysis.tables import MeasureTable, RunDir
from kdmem.atomic import write_json_atomic
from kdmem.errors import StudySetMismatchError

SETS_FORMAT = "kdmem-sets"
SETS_FORMAT_VERSION = 1
MAX_IDS = 1000  # id lists in the JSON are cut here (counts are always exact)

Ids = npt.NDArray[np.int64]


def _ids(t: MeasureTable) -> Ids:
    return t.example_id[t.memorized]


def _inter(a: Ids, b: Ids) -> Ids:
    return np.intersect1d(a, b, assume_unique=True)


def _diff(a: Ids, b: Ids) -> Ids:
    return np.setdiff1d(a, b, assume_unique=True)


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else float(num) / float(den)


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else None
    return float(arr.mean()), std


def _id_list(ids: Ids) -> list[int]:
    return [int(i) for i in ids[:MAX_IDS]]


def _student_block(t: Ids, b: Ids, s: Ids) -> dict[str, Any]:
    easy = _inter(t, b)
    in_easy = len(_inter(s, easy))
    inherited = _diff(_inter(t, s), b)
    return {
        "n_memorized": len(s),
        "in_easy": in_easy,
        "share_in_easy": _ratio(in_easy, len(s)),
        "in_teacher": len(_inter(s, t)),
        "in_baseline": len(_inter(s, b)),
        "inherited": len(inherited),
        "inherited_ids": _id_list(inherited),
        "new": len(_diff(_diff(s, t), b)),
    }


def _soft_hard_block(t: Ids, soft: Ids, hard: Ids) -> dict[str, Any]:
    both = _inter(soft, hard)
    union = np.union1d(soft, hard)
    hard_only = _diff(hard, soft)
    soft_only = _diff(soft, hard)
    return {
        "intersection": len(both),
        "union": len(union),
        "jaccard": _ratio(len(both), len(union)),
        "share_of_soft_in_hard": _ratio(len(both), len(soft)),
        "share_of_hard_in_soft": _ratio(len(both), len(hard)),
        "hard_only": len(hard_only),
        "hard_only_in_teacher": len(_inter(hard_only, t)),
        "hard_only_ids": _id_list(hard_only),
        "soft_only": len(soft_only),
        "soft_only_in_teacher": len(_inter(soft_only, t)),
    }


def _by_seed(tables: list[MeasureTable]) -> dict[int | None, MeasureTable]:
    return {t.role.seed: t for t in tables}


def family_sets(run: RunDir, name: str | None = None) -> dict[str, Any]:
    """Every single-family analysis of one run directory, as a JSON-ready dict.

    Needs the teacher's and at least one baseline table; students are optional (their
    analyses are then left out with a note).

    Raises:
        MissingStageInputError: no teacher or no baseline table.
        StudySetMismatchError: the tables have different example ids.
    """
    measures = run.all_measures()
    teacher = run.primary("teacher")
    baselines = run.find("baseline")
    if not baselines:
        run.primary("baseline")  # raises with the file name and the stage
    n = teacher.n
    notes: list[str] = []

    rates: list[dict[str, Any]] = [
        {
            "role": t.role.name,
            "kind": t.role.kind,
            "temperature": t.role.temperature,
            "seed": t.role.seed,
            "n_memorized": int(t.memorized.sum()),
            "rate": float(t.memorized.mean()) if t.n else None,
        }
        for t in measures.values()
    ]
    rates_by_kind: dict[str, Any] = {}
    for kind in sorted({r["kind"] for r in rates}):
        vals = [r["rate"] for r in rates if r["kind"] == kind and r["temperature"] is None]
        if not vals:
            continue
        mean, std = _mean_std(vals)
        rates_by_kind[kind] = {"n_runs": len(vals), "mean": mean, "std": std, "rates": vals}

    students = {"soft": run.find("student_soft"), "hard": run.find("student_hard")}
    for kind, found in students.items():
        if not found:
            notes.append(f"no student_{kind} tables: its analyses are left out")
    b_by_seed = _by_seed(baselines)
    soft_by_seed = _by_seed(students["soft"])
    hard_by_seed = _by_seed(students["hard"])
    seeds = sorted(
        set(soft_by_seed) | set(hard_by_seed) or {baselines[0].role.seed},
        key=lambda s: -1 if s is None else s,
    )
    t_ids = _ids(teacher)
    per_seed = []
    for seed in seeds:
        base = b_by_seed.get(seed, baselines[0])
        b_ids = _ids(base)
        entry: dict[str, Any] = {
            "seed": seed,
            "roles": {"teacher": teacher.role.name, "baseline": base.role.name},
            "teacher": len(t_ids),
            "baseline": len(b_ids),
            "easy": len(_inter(t_ids, b_ids)),
            "teacher_specific": len(_diff(t_ids, b_ids)),
            "baseline_specific": len(_diff(b_ids, t_ids)),
        }
        s_ids: dict[str, Ids] = {}
        for kind, by_seed in (("soft", soft_by_seed), ("hard", hard_by_seed)):
            if seed in by_seed:
                st = by_seed[seed]
                entry["roles"][f"student_{kind}"] = st.role.name
                s_ids[kind] = _ids(st)
                entry[kind] = _student_block(t_ids, b_ids, s_ids[kind])
        if "soft" in s_ids and "hard" in s_ids:
            entry["inherited_ratio_hard_to_soft"] = _ratio(
                entry["hard"]["inherited"], entry["soft"]["inherited"]
            )
            entry["soft_hard"] = _soft_hard_block(t_ids, s_ids["soft"], s_ids["hard"])
        per_seed.append(entry)

    stability: dict[str, Any] = {"n_baseline_seeds": len(baselines)}
    b_all = _ids(baselines[0])
    for b in baselines[1:]:
        b_all = _inter(b_all, _ids(b))
    stability["baseline_all_seeds"] = len(b_all)
    for kind, found in students.items():
        if not found:
            continue
        s_any = np.unique(np.concatenate([_ids(s) for s in found]))
        kept = _diff(b_all, s_any)
        stability[kind] = {
            "n_student_seeds": len(found),
            "student_any_seed": len(s_any),
            "baseline_all_student_none": len(kept),
            "baseline_all_student_none_ids": _id_list(kept),
        }
    if len(baselines) < 2:
        notes.append("one baseline seed: seed stability is over that single run")

    # Seeds' memorized sets: how much two seeds of one kind agree (Jaccard).
    jaccard: dict[str, Any] = {}
    for kind, found in (
        ("baseline", baselines),
        *((f"student_{k}", v) for k, v in students.items()),
    ):
        if len(found) < 2:
            continue
        sets_ = [set(_ids(t).tolist()) for t in found]
        pairs = [
            {
                "seeds": [found[i].role.seed, found[j].role.seed],
                "jaccard": len(sets_[i] & sets_[j]) / len(sets_[i] | sets_[j])
                if sets_[i] | sets_[j]
                else None,
            }
            for i in range(len(found))
            for j in range(i + 1, len(found))
        ]
        vals = [p["jaccard"] for p in pairs if p["jaccard"] is not None]
        jaccard[kind] = {"pairs": pairs, "mean": float(np.mean(vals)) if vals else None}
    stability["jaccard"] = jaccard

    # Temperature sweep: the extra temperatures beside the main soft students (whose
    # temperature config.toml records), with the spread over seeds where several ran.
    sweep = []
    main_t = run.main_temperature()
    by_temp: dict[float | None, list[MeasureTable]] = {}
    for r in run.roles():
        if r.kind == "student_soft":
            by_temp.setdefault(r.temperature, []).append(run.measure(r.name))
    if None in by_temp and (main_t is None or len(by_temp) == 1):
        del by_temp[None]  # no temperature to place the main students at, or no sweep
    rows: dict[float, dict[str, Any]] = {}
    for temp, tables in by_temp.items():
        at = main_t if temp is None else temp
        assert at is not None  # dropped above when unknown
        row = rows.setdefault(at, {"main": False, "rates": []})
        row["main"] |= temp is None
        row["rates"] += [float(t.memorized.mean()) for t in tables]
    for temp, row in sorted(rows.items()):
        mean, std = _mean_std(row["rates"])
        sweep.append(
            {
                "temperature": temp,
                "main": row["main"],
                "n_runs": len(row["rates"]),
                "mean": mean,
                "std": std,
                "rates": row["rates"],
            }
        )

    # Example groups (data/groups.parquet, e.g. the demo's planted vs natural): memorized
    # counts per role inside each group.
    groups_out: dict[str, Any] = {}
    groups = run.groups()
    if groups is not None:
        for g, ids in groups.items():
            groups_out[g] = {
                "n": len(np.intersect1d(ids, teacher.example_id)),  # in D (the file may hold more)
                "memorized": {
                    t.role.name: len(np.intersect1d(_ids(t), ids)) for t in measures.values()
                },
            }

    return {
        "name": name or run.name,
        "path": str(run.path),
        "n_examples": n,
        "directions": paper_directions(rates_by_kind, per_seed),
        "rates": rates,
        "rates_by_kind": rates_by_kind,
        "per_seed": per_seed,
        "seed_stability": stability,
        "temperature_sweep": sweep,
        "groups": groups_out,
        "notes": notes,
    }


EASY_SHARE = 0.9  # the paper: >= 90% of a student's memorized set lies in T ∩ B


def paper_directions(
    rates_by_kind: Mapping[str, Any], per_seed: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The paper's three directional findings, checked on one family, with the counts behind
    each (``holds`` is None where the run lacks the models to check it):

    * ``students_below_baseline``: each student kind's mean rate (main temperature, over
      seeds) is below the baselines' mean rate;
    * ``students_in_easy``: >= 90% of each student kind's memorized examples (pooled over
      seeds) lie in T ∩ B;
    * ``hard_inherits_more``: hard students inherit more teacher-specific examples,
      (T ∩ S) \\ B, than soft students (summed over the seeds where both ran).
    """
    out: dict[str, Any] = {}
    base = rates_by_kind.get("baseline")
    below: dict[str, Any] = {"baseline_rate": base["mean"] if base else None}
    checks = []
    for kind in ("soft", "hard"):
        st = rates_by_kind.get(f"student_{kind}")
        if st is None or base is None:
            continue
        below[f"{kind}_rate"] = st["mean"]
        checks.append(st["mean"] < base["mean"])
    below["holds"] = all(checks) if checks else None
    out["students_below_baseline"] = below

    easy: dict[str, Any] = {"threshold": EASY_SHARE}
    checks = []
    for kind in ("soft", "hard"):
        blocks = [e[kind] for e in per_seed if kind in e]
        if not blocks:
            continue
        n_mem = sum(int(b["n_memorized"]) for b in blocks)
        in_easy = sum(int(b["in_easy"]) for b in blocks)
        share = _ratio(in_easy, n_mem)
        easy[kind] = {"n_memorized": n_mem, "in_easy": in_easy, "share": share}
        if share is not None:
            checks.append(share >= EASY_SHARE)
    easy["holds"] = all(checks) if checks else None
    out["students_in_easy"] = easy

    both = [e for e in per_seed if "soft" in e and "hard" in e]
    soft_inh = sum(int(e["soft"]["inherited"]) for e in both)
    hard_inh = sum(int(e["hard"]["inherited"]) for e in both)
    out["hard_inherits_more"] = {
        "seeds": len(both),
        "soft_inherited": soft_inh,
        "hard_inherited": hard_inh,
        "holds": hard_inh > soft_inh if both else None,
    }
    return out


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 2 or float(x.std()) == 0.0 or float(y.std()) == 0.0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), as in Spearman's rho."""
    order = np.argsort(x, kind="stable")
    sx = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, sx[1:] != sx[:-1]])
    ends = np.r_[starts[1:], len(x)]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e - 1) / 2.0
    return ranks


def cross_family(runs: Mapping[str, RunDir]) -> list[dict[str, Any]]:
    """Pairwise overlap of memorized sets (primary role of each kind) and zlib correlation.

    Families are matched by example id over the ids both study sets hold.

    Raises:
        StudySetMismatchError: two families share no example id.
    """
    names = list(runs)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ra, rb = runs[a], runs[b]
            ta, tb = ra.primary("teacher"), rb.primary("teacher")
            common = np.intersect1d(ta.example_id, tb.example_id, assume_unique=True)
            if len(common) == 0:
                raise StudySetMismatchError(
                    f"families {a} ({ra.path}) and {b} ({rb.path}) share no example id: "
                    "cross-family overlap needs study sets built from the same documents"
                )
            pair: dict[str, Any] = {
                "families": [a, b],
                "n_common": len(common),
                "n_only_first": ta.n - len(common),
                "n_only_second": tb.n - len(common),
                "overlap": {},
            }
            for kind in ("teacher", "baseline", "student_soft", "student_hard"):
                fa, fb = ra.find(kind), rb.find(kind)
                if not fa or not fb:
                    continue
                sa, sb = _inter(_ids(fa[0]), common), _inter(_ids(fb[0]), common)
                both = _inter(sa, sb)
                union = np.union1d(sa, sb)
                pair["overlap"][kind] = {
                    "roles": [fa[0].role.name, fb[0].role.name],
                    "first": len(sa),
                    "second": len(sb),
                    "intersection": len(both),
                    "jaccard": _ratio(len(both), len(union)),
                    "ids": _id_list(both),
                }
            if ra.has_features() and rb.has_features():
                fa_, fb_ = ra.features(), rb.features()
                xa = fa_.column("zlib_bytes")[np.searchsorted(fa_.example_id, common)]
                xb = fb_.column("zlib_bytes")[np.searchsorted(fb_.example_id, common)]
                xa = xa.astype(np.float64)
                xb = xb.astype(np.float64)
                pair["zlib_correlation"] = {
                    "pearson": _pearson(xa, xb),
                    "spearman": _pearson(_ranks(xa), _ranks(xb)),
                }
            out.append(pair)
    return out


def analyze_sets(runs: Sequence[RunDir] | Mapping[str, RunDir]) -> dict[str, Any]:
    """The full ``kdmem sets`` result for one or more families (run directories).

    Families are named by their directory names unless a mapping is given.
    """
    if not isinstance(runs, Mapping):
        named: dict[str, RunDir] = {}
        for r in runs:
            key = r.name
            k = 2
            while key in named:
                key = f"{r.name}-{k}"
                k += 1
            named[key] = r
        runs = named
    return {
        "format": SETS_FORMAT,
        "version": SETS_FORMAT_VERSION,
        "kdmem_version": __version__,
        "families": [family_sets(r, name) for name, r in runs.items()],
        "cross_family": cross_family(runs) if len(runs) > 1 else [],
    }


def write_sets(result: Mapping[str, Any], path: Path) -> None:
    """Write the result as JSON (atomic)."""
    write_json_atomic(Path(path), result)


# ---- printed tables ------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.4g}"
    return str(v)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.3g}%"


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain monospaced table (first column left-aligned, the rest right-aligned)."""
    cells = [list(header)] + [[_fmt(c) if not isinstance(c, str) else c for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for j, r in enumerate(cells):
        parts = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _holds(v: bool | None) -> str:
    return "not checked (models missing)" if v is None else ("holds" if v else "does NOT hold")


def format_directions(d: Mapping[str, Any]) -> list[str]:
    """One line per directional finding of the paper (:func:`paper_directions`)."""
    below = d["students_below_baseline"]
    rates = ", ".join(
        f"{k} {_pct(below[f'{k}_rate'])}" for k in ("soft", "hard") if f"{k}_rate" in below
    )
    easy = d["students_in_easy"]
    shares = ", ".join(
        f"{k} {easy[k]['in_easy']}/{easy[k]['n_memorized']}" for k in ("soft", "hard") if k in easy
    )
    inh = d["hard_inherits_more"]
    return [
        f"students memorize less than the baseline: {_holds(below['holds'])} "
        f"(baseline {_pct(below['baseline_rate'])}; {rates or 'no students'})",
        f">= {easy['threshold']:.0%} of each student's memorized set in T∩B: "
        f"{_holds(easy['holds'])} ({shares or 'no students'})",
        f"hard KD inherits more teacher-specific examples than soft: {_holds(inh['holds'])} "
        f"((T∩S)\\B: hard {inh['hard_inherited']}, soft {inh['soft_inherited']}, "
        f"over {inh['seeds']} seed(s))",
    ]


def format_sets(result: Mapping[str, Any]) -> str:
    """Human-readable tables of an :func:`analyze_sets` result."""
    out: list[str] = []
    for fam in result["families"]:
        n = fam["n_examples"]
        out.append(f"== {fam['name']}: {n} examples")
        out.append(
            text_table(
                ["role", "memorized", "rate"],
                [[r["role"], r["n_memorized"], _pct(r["rate"])] for r in fam["rates"]],
            )
        )
        rows = []
        for e in fam["per_seed"]:
            row: list[Any] = [_fmt(e["seed"]), e["easy"], e["teacher_specific"]]
            for kind in ("soft", "hard"):
                blk = e.get(kind)
                row += (
                    [blk["n_memorized"], _pct(blk["share_in_easy"]), blk["inherited"]]
                    if blk
                    else ["-", "-", "-"]
                )
            row.append(e.get("inherited_ratio_hard_to_soft"))
            sh = e.get("soft_hard")
            row += (
                [_pct(sh["jaccard"]), sh["hard_only"], sh["hard_only_in_teacher"]]
                if sh
                else ["-", "-", "-"]
            )
            rows.append(row)
        out.append("")
        out.append(
            text_table(
                [
                    "seed",
                    "|T∩B|",
                    "|T\\B|",
                    "|S_soft|",
                    "soft in T∩B",
                    "|(T∩S)\\B| soft",
                    "|S_hard|",
                    "hard in T∩B",
                    "|(T∩S)\\B| hard",
                    "hard/soft",
                    "soft~hard Jaccard",
                    "hard-only",
                    "hard-only in T",
                ],
                rows,
            )
        )
        st = fam["seed_stability"]
        line = f"seed stability: baseline memorizes {st['baseline_all_seeds']} in all {st['n_baseline_seeds']} seed(s)"
        for kind in ("soft", "hard"):
            if kind in st:
                blk = st[kind]
                line += f"; {blk['baseline_all_student_none']} of them in no {kind} seed ({blk['n_student_seeds']})"
        out.append("")
        out.append(line)
        out += ["", *format_directions(fam["directions"])]
        if fam["temperature_sweep"]:
            out.append("")
            out.append(
                text_table(
                    ["temperature", "runs", "rate mean", "rate std"],
                    [
                        [_fmt(s["temperature"]), s["n_runs"], _pct(s["mean"]), _pct(s["std"])]
                        for s in fam["temperature_sweep"]
                    ],
                )
            )
        for note in fam["notes"]:
            out.append(f"note: {note}")
        out.append("")
    for pair in result.get("cross_family", []):
        a, b = pair["families"]
        out.append(f"== {a} vs {b}: {pair['n_common']} common examples")
        out.append(
            text_table(
                ["role", f"|{a}|", f"|{b}|", "both", "Jaccard"],
                [
                    [k, v["first"], v["second"], v["intersection"], _pct(v["jaccard"])]
                    for k, v in pair["overlap"].items()
                ],
            )
        )
        if "zlib_correlation" in pair:
            zc = pair["zlib_correlation"]
            out.append(
                f"zlib_bytes correlation: Pearson {_fmt(zc['pearson'])}, Spearman {_fmt(zc['spearman'])}"
            )
        out.append("")
    return "\n".join(out).rstrip() + "\n"
