"""``kdmem report RUN_DIR``: one self-contained HTML page, a summary JSON and figure files.

Writes ``RUN/report/index.html`` (inline CSS, every figure embedded as a PNG data URI so the
file alone is the whole report), ``RUN/report/summary.json`` and ``RUN/report/fig-*.png``.
Sections follow the paper's analyses (Borkar et al. 2026): rates, T/B/S overlaps (UpSet),
zlib vs baseline perplexity of easy examples, entropy vs log-probability on (T ∩ B) \\ S,
memorization vs distillation temperature, the predictor (metrics, ROC/PR, coefficients),
utility (validation loss/perplexity), pre-filtering (memorization before and after
re-distilling without the flagged examples) and the memorized examples with their text.

Only measure tables are required. A section whose inputs are missing is replaced by a note
naming the file and the command that writes it; inconsistent inputs (different study sets, an
incompatible run directory) are errors. Every string taken from the data is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdmem._version import __version__
from kdmem.analysis.sets import family_sets
from kdmem.analysis.tables import (
    STAGE_FEATURIZE,
    STAGE_MEASURE,
    STAGE_PREDICT,
    MeasureTable,
    RunDir,
)
from kdmem.atomic import write_bytes_atomic, write_json_atomic
from kdmem.errors import MissingStageInputError, NoPositiveExamplesError, TableSchemaError

REPORT_FORMAT = "kdmem-report"
REPORT_FORMAT_VERSION = 1

# Optional inputs that may be absent: their sections become notes instead of errors.
_OPTIONAL = (MissingStageInputError, TableSchemaError, NoPositiveExamplesError)

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d232a;background:#fff}
header{background:#1f3b57;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;opacity:.85;font-size:14px}
main{padding:8px 32px 40px;max-width:1200px}
section{margin:28px 0;border-top:1px solid #d9dee4;padding-top:8px}
h2{font-size:18px;margin:8px 0 10px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #d0d6dd;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#eef2f6} td.l,th.l{text-align:left}
td.text{text-align:left;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;
 max-width:640px;white-space:pre-wrap;word-break:break-word}
.note{background:#fff7e0;border-left:4px solid #e0a800;padding:6px 10px;font-size:13px}
.cap{color:#55606b;font-size:13px;max-width:900px}
img{max-width:100%;height:auto;border:1px solid #eef0f2}
nav a{margin-right:12px;font-size:13px}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, float) and np.isnan(v):
        return "-"
    return f"{float(v):.{digits}g}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.3g}%"


def html_table(
    header: Sequence[str | Raw], rows: Sequence[Sequence[Any]], *, left: int = 1, cls: str = ""
) -> str:
    """An escaped HTML table; the first ``left`` columns are left-aligned. Cells are escaped
    unless given as :class:`Raw`."""

    def cell(tag: str, i: int, v: Any) -> str:
        c = ' class="l"' if i < left else ""
        if isinstance(v, Raw):
            return f"<{tag}{v.attrs or c}>{v.html}</{tag}>"
        return f"<{tag}{c}>{_e(v if isinstance(v, str) else _num(v))}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows
    )
    klass = f' class="{_e(cls)}"' if cls else ""
    return f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass(frozen=True)
class Raw:
    """Pre-escaped HTML for a table cell."""

    html: str
    attrs: str = ""


@dataclass
class _Section:
    id: str
    title: str
    body: str = ""
    note: str | None = None


@dataclass
class _Ctx:
    run: RunDir
    out: Path
    seed: int
    sample_size: int
    max_examples: int
    figures: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    sets: dict[str, Any] | None = None

    def figure(self, fig: Any, name: str, alt: str) -> str:
        """Save a matplotlib Figure as ``fig-<name>.png`` and return an embedded <img>."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
        data = buf.getvalue()
        write_bytes_atomic(self.out / f"fig-{name}.png", data)
        self.figures.append(f"fig-{name}.png")
        b64 = base64.b64encode(data).decode("ascii")
        return f'<p><img src="data:image/png;base64,{b64}" alt="{_e(alt)}" data-file="fig-{_e(name)}.png"></p>'


def _figure(w: float = 6.4, h: float = 4.0) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def _missing(e: Exception) -> str:
    return f"Section omitted: {e}"


# ---- sections -----------------------------------------------------------------------------------


def _rates(ctx: _Ctx) -> _Section:
    s = _Section("rates", "Memorization rates")
    ms = ctx.run.all_measures()
    first = next(iter(ms.values()), None)
    prefix = _e(first.metadata.get("prefix", "?")) if first is not None else "?"
    suffix = _e(first.metadata.get("suffix", "?")) if first is not None else "?"
    rows = []
    for name, t in ms.items():
        nm = int(t.memorized.sum())
        rows.append(
            [
                name,
                t.role.kind,
                _num(t.role.temperature),
                _num(t.role.seed),
                t.n,
                nm,
                _pct(nm / t.n if t.n else None),
            ]
        )
    ctx.summary["rates"] = {
        name: {
            "n_memorized": int(t.memorized.sum()),
            "n": t.n,
            "rate": float(t.memorized.mean()) if t.n else None,
        }
        for name, t in ms.items()
    }
    body = [
        f'<p class="cap">An example is memorized when greedy decoding of its {prefix}-token '
        f"prefix reproduces the {suffix}-token suffix exactly (discoverable extraction).</p>",
        html_table(
            ["role", "kind", "T", "seed", "examples", "memorized", "rate"],
            rows,
            left=2,
            cls="rates",
        ),
    ]
    fig = _figure(6.4, 0.35 * len(ms) + 1.2)
    ax = fig.subplots()
    names = list(ms)
    ax.barh(
        range(len(names)), [100 * float(ms[n].memorized.mean()) for n in names], color="#3c6e9f"
    )
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("memorized (% of the study set)")
    body.append(ctx.figure(fig, "rates", "memorization rate per role"))
    s.body = "\n".join(body)
    return s


def _sets(ctx: _Ctx) -> _Section:
    s = _Section("sets", "Who memorized what: T, B and S")
    try:
        fam = family_sets(ctx.run)
    except _OPTIONAL as e:
        s.note = _missing(e)
        return s
    ctx.sets = fam
    ctx.summary["sets"] = fam
    rows = []
    for entry in fam["per_seed"]:
        row: list[Any] = [
            _num(entry["seed"]),
            entry["teacher"],
            entry["baseline"],
            entry["easy"],
            entry["teacher_specific"],
        ]
        for kind in ("soft", "hard"):
            b = entry.get(kind)
            row += [b["n_memorized"], _pct(b["share_in_easy"]), b["inherited"]] if b else ["-"] * 3
        row.append(_num(entry.get("inherited_ratio_hard_to_soft"), 3))
        sh = entry.get("soft_hard")
        row += (
            [_pct(sh["jaccard"]), sh["hard_only"], sh["hard_only_in_teacher"]] if sh else ["-"] * 3
        )
        rows.append(row)
    body = [
        '<p class="cap">T, B, S: examples memorized by the teacher, the baseline and the student. '
        "Easy examples = T ∩ B; teacher-specific inheritance = (T ∩ S) \\ B.</p>",
        html_table(
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
            cls="sets",
        ),
    ]
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
    if stab_rows:
        body.append("<h3>Seed stability</h3>")
        body.append(
            html_table(
                [
                    "student",
                    "baseline seeds",
                    "student seeds",
                    "B in every seed",
                    "… and S in none",
                ],
                stab_rows,
                cls="stability",
            )
        )
    body.append(_upset(ctx))
    for n in fam["notes"]:
        body.append(f'<p class="note">{_e(n)}</p>')
    s.body = "\n".join(body)
    return s


def _upset(ctx: _Ctx) -> str:
    run = ctx.run
    named: dict[str, np.ndarray] = {
        "T": run.primary("teacher").example_id[run.primary("teacher").memorized],
        "B": run.primary("baseline").example_id[run.primary("baseline").memorized],
    }
    for kind, label in (("student_soft", "S soft"), ("student_hard", "S hard")):
        found = run.find(kind)
        if found:
            named[label] = found[0].example_id[found[0].memorized]
    labels = list(named)
    every = np.unique(np.concatenate(list(named.values()))) if named else np.array([], np.int64)
    member = np.array([np.isin(every, named[k]) for k in labels])  # (sets, ids)
    regions: dict[tuple[bool, ...], int] = {}
    for col in member.T:
        key = tuple(bool(v) for v in col)
        regions[key] = regions.get(key, 0) + 1
    items = sorted(regions.items(), key=lambda kv: -kv[1])
    rows = [
        [" ∩ ".join(lab for lab, m in zip(labels, key, strict=True) if m) + " only", cnt]
        for key, cnt in items
    ]
    out = [
        "<h3>Overlaps (UpSet)</h3>",
        '<p class="cap">Each bar counts the examples memorized by exactly the marked models '
        "(primary seed of each role).</p>",
        html_table(["exactly in", "examples"], rows, cls="upset"),
    ]
    if items:
        fig = _figure(0.6 * len(items) + 2.5, 4.2)
        ax_bar, ax_dot = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.4])
        xs = np.arange(len(items))
        ax_bar.bar(xs, [c for _, c in items], color="#3c6e9f")
        for xi, (_, cnt) in enumerate(items):
            ax_bar.annotate(str(cnt), (xi, cnt), ha="center", va="bottom", fontsize=8)
        ax_bar.set_ylabel("examples")
        for x, (key, _) in enumerate(items):
            ys = [i for i, m in enumerate(key) if m]
            ax_dot.scatter([x] * len(labels), range(len(labels)), color="#d0d6dd", s=30)
            ax_dot.scatter([x] * len(ys), ys, color="#1d232a", s=30)
            if len(ys) > 1:
                ax_dot.plot([x, x], [min(ys), max(ys)], color="#1d232a")
        ax_dot.set_yticks(range(len(labels)), labels)
        ax_dot.set_xticks([])
        ax_dot.invert_yaxis()
        out.append(ctx.figure(fig, "upset", "UpSet plot of memorized sets"))
    return "\n".join(out)


def _scatter_zlib(ctx: _Ctx) -> _Section:
    s = _Section("zlib", "Easy examples: zlib entropy vs baseline perplexity")
    run = ctx.run
    if not run.has_features():
        s.note = (
            f"Section omitted: {run.features_path} is missing (written by `{STAGE_FEATURIZE}`)."
        )
        return s
    try:
        feats = run.features()
        zl = feats.column("zlib_bytes").astype(np.float64)
        t, b = run.primary("teacher"), run.primary("baseline")
        ppl = b.column("ppl_window")
    except _OPTIONAL as e:
        s.note = _missing(e)
        return s
    easy = t.memorized & b.memorized
    rng = np.random.default_rng(ctx.seed)
    k = min(ctx.sample_size, len(zl))
    sample = rng.choice(len(zl), size=k, replace=False)
    fig = _figure()
    ax = fig.subplots()
    ax.scatter(
        zl[sample], ppl[sample], s=6, alpha=0.4, color="#8a96a3", label=f"random sample ({k})"
    )
    ax.scatter(
        zl[easy],
        ppl[easy],
        s=10,
        alpha=0.8,
        color="#c8402d",
        label=f"easy: T ∩ B ({int(easy.sum())})",
    )
    if np.all(ppl[np.concatenate([sample, np.flatnonzero(easy)])] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("zlib_bytes (compressed size of the example text)")
    ax.set_ylabel(f"baseline perplexity ({b.role.name})")
    ax.legend()
    rows = [
        [
            "easy (T ∩ B)",
            int(easy.sum()),
            _num(np.median(zl[easy]) if easy.any() else None),
            _num(np.median(ppl[easy]) if easy.any() else None),
        ],
        ["all examples", len(zl), _num(np.median(zl)), _num(np.median(ppl))],
    ]
    s.body = "\n".join(
        [
            '<p class="cap">Examples both teacher and baseline memorize are the compressible, '
            "low-perplexity ones.</p>",
            html_table(
                ["group", "examples", "median zlib_bytes", "median baseline ppl"], rows, cls="zlib"
            ),
            ctx.figure(fig, "zlib-vs-ppl", "zlib bytes vs baseline perplexity"),
        ]
    )
    return s


def _entropy(ctx: _Ctx) -> _Section:
    s = _Section("mechanism", "Entropy vs log-probability on (T ∩ B) \\ S")
    run = ctx.run
    try:
        t, b, st = run.primary("teacher"), run.primary("baseline"), run.primary("student_soft")
        mask = t.memorized & b.memorized & ~st.memorized
        series = [
            (m.role.name, m.column("seq_logprob")[mask], m.column("entropy_last_k")[mask])
            for m in (t, b, st)
        ]
    except _OPTIONAL as e:
        s.note = _missing(e)
        return s
    if not mask.any():
        s.note = f"Section omitted: (T ∩ B) \\ S is empty for {st.role.name}."
        return s
    fig = _figure()
    ax = fig.subplots()
    rows = []
    for (name, lp, ent), color in zip(series, ("#c8402d", "#3c6e9f", "#2e8b57"), strict=True):
        ax.scatter(lp, ent, s=10, alpha=0.7, color=color, label=name)
        rows.append([name, int(mask.sum()), _num(float(np.mean(lp))), _num(float(np.mean(ent)))])
    ax.set_xlabel("sequence log-probability (nats)")
    ax.set_ylabel("mean next-token entropy, last 50 positions (nats)")
    ax.legend()
    s.body = "\n".join(
        [
            '<p class="cap">On the easy examples the student does not memorize, the paper finds the '
            "student spreads probability more (higher entropy, lower log-probability).</p>",
            html_table(
                ["model", "examples", "mean seq_logprob", "mean entropy_last_k"],
                rows,
                cls="mechanism",
            ),
            ctx.figure(fig, "entropy-vs-logprob", "entropy vs log-probability"),
        ]
    )
    return s


def _temperature(ctx: _Ctx) -> _Section:
    s = _Section("temperature", "Memorization vs distillation temperature")
    sweep = (ctx.sets or {}).get("temperature_sweep") or []
    if not sweep:
        s.note = (
            "Section omitted: no temperature sweep in this run "
            "(measure/student_soft_T<t>_seed<k>.parquet, see docs/run_dir.md)."
        )
        return s
    fig = _figure(5.5, 3.6)
    ax = fig.subplots()
    temps = [x["temperature"] for x in sweep]
    means = [100 * x["mean"] for x in sweep]
    errs = [100 * (x["std"] or 0.0) for x in sweep]
    ax.errorbar(temps, means, yerr=errs, marker="o", capsize=3, color="#3c6e9f")
    ax.set_xlabel("temperature T")
    ax.set_ylabel("soft student memorized (%)")
    rows = [[_num(x["temperature"]), x["n_runs"], _pct(x["mean"]), _pct(x["std"])] for x in sweep]
    ctx.summary["temperature_sweep"] = sweep
    s.body = "\n".join(
        [
            html_table(["T", "runs", "rate (mean)", "rate (std)"], rows, cls="temperature"),
            ctx.figure(fig, "temperature", "memorization vs temperature"),
        ]
    )
    return s


def _predictor(ctx: _Ctx) -> _Section:
    s = _Section("predictor", "Predicting student memorization before distillation")
    pdir = ctx.run.path / "predictor"
    pj = pdir / "predictor.json"
    if not pj.exists():
        s.note = f"Section omitted: {pj} is missing (written by `{STAGE_PREDICT}`)."
        return s
    import json

    import pyarrow.parquet as pq

    from kdmem.analysis.predictor import Predictor

    Predictor.load(pj)  # validates format and version
    res = json.loads(pj.read_text("utf-8"))
    pp = res["metrics"]["paper_protocol"]
    nat = res["metrics"]["natural_prevalence"]

    def ms(x: dict[str, Any]) -> str:
        if x["mean"] is None:
            return "-"
        return f"{x['mean']:.4f} ± {x['std']:.4f}" if x["std"] is not None else f"{x['mean']:.4f}"

    ctx.summary["predictor"] = {
        "target": res["target"],
        "feature_names": res["feature_names"],
        "paper_protocol": {k: pp[k] for k in ("roc_auc", "precision", "recall")},
        "coefficients_paper_protocol": pp["coefficients"],
        "natural_prevalence": {k: v for k, v in nat.items() if k != "reliability"},
    }
    body = [
        f'<p class="cap">Logistic regression on standardised features predicting whether '
        f"<b>{_e(res['target'])}</b> memorizes an example ({res['n_positive']} of {res['n_examples']}). "
        "The paper's balanced protocol flatters precision at a low base rate; the natural-prevalence "
        "numbers are what a pre-filter would see.</p>",
        html_table(
            ["metric", f"paper protocol ({pp['resamples']} resamples, 1:{pp['neg_ratio']:g})"],
            [
                ["ROC-AUC", ms(pp["roc_auc"])],
                ["precision", ms(pp["precision"])],
                ["recall", ms(pp["recall"])],
            ],
            cls="predictor-paper",
        ),
        html_table(
            [
                "metric",
                f"natural prevalence ({nat['folds']}-fold CV, {_pct(nat['prevalence'])} positive)",
            ],
            [
                ["ROC-AUC", _num(nat["roc_auc"])],
                ["PR-AUC", _num(nat["pr_auc"])],
                *[
                    [f"TPR at {100 * float(k):g}% FPR", _num(v["tpr"])]
                    for k, v in nat["tpr_at_fpr"].items()
                ],
                ["Brier", f"{nat['brier']:.5f} (base rate alone {nat['brier_of_base_rate']:.5f})"],
                ["expected calibration error", _num(nat["expected_calibration_error"])],
            ],
            cls="predictor-natural",
        ),
        html_table(
            [
                "feature",
                "std. coefficient (paper protocol)",
                "saved model",
                "scaler mean",
                "scaler scale",
            ],
            [
                [n, ms(pp["coefficients"][n]), _num(c), _num(m), _num(sc)]
                for n, c, m, sc in zip(
                    res["feature_names"],
                    res["coefficients"],
                    res["scaler"]["mean"],
                    res["scaler"]["scale"],
                    strict=True,
                )
            ],
            cls="coefficients",
        ),
    ]
    names = res["feature_names"]
    fig = _figure(5.5, 0.4 * len(names) + 1.2)
    ax = fig.subplots()
    means = [pp["coefficients"][n]["mean"] or 0.0 for n in names]
    stds = [pp["coefficients"][n]["std"] or 0.0 for n in names]
    ax.barh(range(len(names)), means, xerr=stds, color="#3c6e9f", capsize=3)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.axvline(0, color="#1d232a", lw=0.8)
    ax.set_xlabel("standardised coefficient (paper protocol, mean ± std)")
    body.append(ctx.figure(fig, "coefficients", "predictor coefficients"))
    scores_path = pdir / "scores.parquet"
    if scores_path.exists():
        from sklearn.metrics import precision_recall_curve, roc_curve

        sc = pq.read_table(scores_path, columns=["memorized", "score_cv"])
        y = sc.column("memorized").to_numpy(zero_copy_only=False)
        p = sc.column("score_cv").to_numpy()
        fig = _figure(9.0, 3.8)
        ax1, ax2 = fig.subplots(1, 2)
        fpr, tpr, _ = roc_curve(y, p)
        ax1.plot(fpr, tpr, color="#3c6e9f")
        ax1.plot([0, 1], [0, 1], ls="--", color="#8a96a3", lw=0.8)
        ax1.set_xlabel("false positive rate")
        ax1.set_ylabel("true positive rate")
        ax1.set_title(f"ROC (AUC {nat['roc_auc']:.3f})")
        prec, rec, _ = precision_recall_curve(y, p)
        ax2.plot(rec, prec, color="#c8402d")
        ax2.axhline(nat["prevalence"], ls="--", color="#8a96a3", lw=0.8)
        ax2.set_xlabel("recall")
        ax2.set_ylabel("precision")
        ax2.set_title(f"PR (AUC {nat['pr_auc']:.3f})")
        body.append('<p class="cap">Out-of-fold scores at natural prevalence.</p>')
        body.append(ctx.figure(fig, "roc-pr", "ROC and precision-recall curves"))
    else:
        body.append(
            f'<p class="note">ROC/PR curves omitted: {_e(scores_path)} is missing (written by `{STAGE_PREDICT}`).</p>'
        )
    rel = [b for b in nat["reliability"] if b["count"]]
    body.append("<h3>Calibration (out-of-fold)</h3>")
    body.append(
        html_table(
            ["predicted in", "examples", "mean predicted", "observed rate"],
            [
                [
                    f"[{b['lo']:.1f}, {b['hi']:.1f})",
                    b["count"],
                    _num(b["mean_predicted"]),
                    _num(b["observed_rate"]),
                ]
                for b in rel
            ],
            cls="calibration",
        )
    )
    s.body = "\n".join(body)
    return s


def _utility(ctx: _Ctx) -> _Section:
    s = _Section("utility", "Utility: held-out validation loss and perplexity")
    val = ctx.run.validation()
    if not val:
        s.note = (
            f"Section omitted: no {ctx.run.path / 'validation'}/<role>.json files "
            "(written by the training stages, see docs/run_dir.md)."
        )
        return s
    rows = [
        [role, _num(v.get("loss")), _num(v.get("ppl")), _num(v.get("n_tokens"))]
        for role, v in val.items()
    ]
    ctx.summary["utility"] = val
    s.body = html_table(
        ["model", "validation loss (nats/token)", "validation perplexity", "tokens"],
        rows,
        cls="utility",
    )
    return s


def _filter(ctx: _Ctx) -> _Section:
    """The pre-filtering experiment: flagged examples, memorization before and after."""
    import json

    s = _Section("filter", "Pre-filtering and re-distillation")
    path = ctx.run.path / "filter" / "filter.json"
    if not path.is_file():
        s.note = (
            f"Section omitted: no {path} (written by the study's filter stage or "
            "`kdmem filter --compare`, see docs/run_dir.md)."
        )
        return s
    try:
        res = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        s.note = f"Section omitted: {path} is not readable JSON ({e}); rerun the filter stage."
        return s
    if "skipped" in res:
        s.note = f"Section omitted: the filter stage was skipped ({res['skipped']})."
        return s
    flagged: dict[str, Any] = {}
    fpath = ctx.run.path / "filter" / "flagged.json"
    if fpath.is_file():
        try:
            flagged = json.loads(fpath.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            flagged = {}
    n = res.get("n_examples")
    rows: list[list[Any]] = [
        ["examples in D", n],
        [
            "flagged by the predictor (removed before re-distilling)",
            f"{res.get('n_flagged')}"
            + (f" at threshold {_num(flagged['threshold'])}" if "threshold" in flagged else ""),
        ],
        [f"memorized before ({res.get('before_role')})", res.get("memorized_before")],
        [f"memorized after ({res.get('after_role')})", res.get("memorized_after")],
        ["reduction", _pct(res.get("reduction"))],
        [
            "flagged and memorized before (what the filter was for)",
            res.get("removed_and_memorized"),
        ],
        ["newly memorized after filtering", res.get("n_new")],
        ["memorized both before and after", len(res.get("still_memorized", []))],
    ]
    new = [int(i) for i in res.get("new", [])]
    ctx.summary["filter"] = {
        k: res.get(k)
        for k in (
            "before_role",
            "after_role",
            "n_examples",
            "n_flagged",
            "memorized_before",
            "memorized_after",
            "reduction",
            "removed_and_memorized",
            "n_new",
        )
    }
    body = [
        '<p class="cap">Both students are measured on the full study set D; the filtered '
        "student never saw the flagged examples.</p>",
        html_table(["", "value"], rows, cls="filter"),
    ]
    if new:
        shown = ", ".join(str(i) for i in new[:50])
        more = f" (first 50 of {len(new)})" if len(new) > 50 else ""
        body.append(f'<p class="cap">Newly memorized example ids{more}: {_e(shown)}</p>')
    s.body = "\n".join(body)
    return s


def _examples(ctx: _Ctx) -> _Section:
    s = _Section("examples", "Memorized examples")
    run = ctx.run
    try:
        student = run.primary("student_soft")
    except MissingStageInputError:
        found = [t for t in run.all_measures().values() if t.role.kind.startswith("student")]
        if not found:
            s.note = "Section omitted: no student measure tables."
            return s
        student = found[0]
    ids = student.example_id[student.memorized]
    member: dict[str, MeasureTable] = {}
    for kind in ("teacher", "baseline", "student_soft", "student_hard"):
        found = run.find(kind)
        if found:
            member[found[0].role.name] = found[0]
    # Teacher-specific inheritance first (the leak), then the rest, by id.
    teachers, baselines = run.find("teacher"), run.find("baseline")
    t = teachers[0] if teachers else None
    b = baselines[0] if baselines else None

    def flag(tab: MeasureTable, i: int) -> bool:
        return bool(tab.memorized[np.searchsorted(tab.example_id, i)])

    def inherited(i: int) -> bool:
        return t is not None and b is not None and flag(t, i) and not flag(b, i)

    order = sorted(ids.tolist(), key=lambda i: (not inherited(i), i))[: ctx.max_examples]
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
        shown = (
            "(text unavailable)"
            if text is None
            else (text if len(text) <= 600 else text[:600] + " …")
        )
        rows.append(
            [
                i,
                *["✓" if flag(tab, i) else "" for tab in member.values()],
                "✓" if inherited(i) else "",
                _num(zl.get(i)),
                Raw(_e(shown), ' class="text"'),
            ]
        )
    notes = []
    if not run.examples_path.exists():
        notes.append(
            f'<p class="note">Texts unavailable: {_e(run.examples_path)} is missing (see docs/run_dir.md).</p>'
        )
    cap = (
        f'<p class="cap">Examples memorized by {_e(student.role.name)} ({len(ids)}; showing {len(order)}), '
        "teacher-specific inheritance first. Text is the decoded example, shown as plain text.</p>"
    )
    s.body = "\n".join(
        [
            cap,
            *notes,
            html_table(
                ["example_id", *member, "(T∩S)\\B", "zlib_bytes", Raw("text", ' class="l"')],
                rows,
                cls="examples",
            ),
        ]
    )
    return s


_SECTIONS: tuple[Callable[[_Ctx], _Section], ...] = (
    _rates,
    _sets,
    _scatter_zlib,
    _entropy,
    _temperature,
    _predictor,
    _utility,
    _filter,
    _examples,
)


@dataclass(frozen=True)
class Report:
    """Where the report went and what it says."""

    index: Path
    summary_path: Path
    summary: dict[str, Any]


def build_report(
    run_dir: str | Path | RunDir,
    out: str | Path | None = None,
    *,
    max_examples: int = 50,
    sample_size: int = 2000,
    seed: int = 0,
) -> Report:
    """Write ``index.html``, ``summary.json`` and ``fig-*.png`` into ``out`` (default
    ``RUN/report/``).

    Raises:
        MissingStageInputError: the run has no measure tables at all.
        StudySetMismatchError: its tables describe different study sets.
        FormatVersionError: the run directory was written by an incompatible kdmem.
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    if not run.roles():
        raise MissingStageInputError(
            f"{run.path / 'measure'} holds no <role>.parquet tables; they are written by "
            f"`{STAGE_MEASURE}`: run that first"
        )
    out_dir = Path(out) if out is not None else run.path / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("fig-*.png"):
        old.unlink()
    ctx = _Ctx(run=run, out=out_dir, seed=seed, sample_size=sample_size, max_examples=max_examples)
    sections = [make(ctx) for make in _SECTIONS]
    n = next(iter(run.all_measures().values())).n
    title = f"kdmem report: {run.name}"
    nav = " ".join(f'<a href="#{_e(s.id)}">{_e(s.title)}</a>' for s in sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{_e(title)}</h1><p>{n} examples · kdmem {_e(__version__)} · "
        "memorization in knowledge distillation (Borkar et al. 2026)</p></header>",
        f"<main><nav>{nav}</nav>",
    ]
    for s in sections:
        parts.append(f'<section id="{_e(s.id)}"><h2>{_e(s.title)}</h2>')
        if s.note:
            parts.append(f'<p class="note">{_e(s.note)}</p>')
        else:
            parts.append(s.body)
        parts.append("</section>")
    parts.append("</main></body></html>")
    index = out_dir / "index.html"
    write_bytes_atomic(index, ("\n".join(parts) + "\n").encode("utf-8"))
    summary = {
        "format": REPORT_FORMAT,
        "version": REPORT_FORMAT_VERSION,
        "kdmem_version": __version__,
        "run": str(run.path),
        "n_examples": n,
        "sections": {s.id: "omitted" if s.note else "ok" for s in sections},
        "notes": {s.id: s.note for s in sections if s.note},
        "figures": ctx.figures,
        **ctx.summary,
    }
    summary_path = out_dir / "summary.json"
    write_json_atomic(summary_path, summary)
    return Report(index=index, summary_path=summary_path, summary=summary)
