"""Sections on predicting memorization before distillation and pre-filtering with it: the
predictor's metrics (paper protocol and natural prevalence), coefficients, ROC/PR curves and
calibration (:mod:`kdmem.analysis.predictor`), and memorization before and after
re-distilling without the flagged examples (:mod:`kdmem.analysis.filter`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

from kdmem.analysis.figures import CoefficientsPlot, RocPrPlot
from kdmem.analysis.predictor import Predictor
from kdmem.analysis.sections.base import Cell, Figure, Section, Table, num, omitted, pct, table
from kdmem.analysis.tables import STAGE_PREDICT, RunDir

__all__ = ["predictor", "prefilter"]

MAX_NEW_IDS = 50  # newly memorized example ids listed in the filter section


# ---- predictor --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictorView:
    """predictor.html.j2: metrics, coefficients, ROC/PR curves and calibration."""

    target: str
    n_positive: int
    n_examples: int
    paper: Table
    natural: Table
    coefficients: Table
    coefficients_figure: Figure
    roc_pr: Figure | None
    roc_pr_note: str | None  # why ``roc_pr`` is None
    calibration: Table
    by_group: Table | None  # held-out metrics per example group (data/groups.parquet)


def _mean_std(x: Mapping[str, Any]) -> str:
    if x["mean"] is None:
        return "-"
    return f"{x['mean']:.4f} ± {x['std']:.4f}" if x["std"] is not None else f"{x['mean']:.4f}"


def predictor(run: RunDir) -> Section:
    pj = run.layout.predictor
    if not pj.exists():
        return omitted(
            "predictor", f"Section omitted: {pj} is missing (written by `{STAGE_PREDICT}`)."
        )
    Predictor.load(pj)  # validates format and version
    res = json.loads(pj.read_text("utf-8"))
    pp = res["metrics"]["paper_protocol"]
    nat = res["metrics"]["natural_prevalence"]
    summary = {
        "target": res["target"],
        "feature_names": res["feature_names"],
        "paper_protocol": {k: pp[k] for k in ("roc_auc", "precision", "recall")},
        "coefficients_paper_protocol": pp["coefficients"],
        "natural_prevalence": {k: v for k, v in nat.items() if k != "reliability"},
    }
    by_group = res.get("by_group") or {}
    if by_group:
        summary["by_group"] = by_group
    names = res["feature_names"]
    scores_path = run.layout.predictor_scores
    roc_pr = None
    if scores_path.exists():
        sc = pq.read_table(scores_path, columns=["memorized", "score_cv"])
        plot = RocPrPlot(
            memorized=sc.column("memorized").to_numpy(zero_copy_only=False),
            score=sc.column("score_cv").to_numpy(),
            roc_auc=nat["roc_auc"],
            pr_auc=nat["pr_auc"],
            prevalence=nat["prevalence"],
        )
        roc_pr = Figure("roc-pr", "ROC and precision-recall curves", plot)
    view = PredictorView(
        target=str(res["target"]),
        n_positive=res["n_positive"],
        n_examples=res["n_examples"],
        paper=table(
            "predictor-paper",
            ["metric", f"paper protocol ({pp['resamples']} resamples, 1:{pp['neg_ratio']:g})"],
            [
                ["ROC-AUC", _mean_std(pp["roc_auc"])],
                ["precision", _mean_std(pp["precision"])],
                ["recall", _mean_std(pp["recall"])],
            ],
        ),
        natural=table(
            "predictor-natural",
            [
                "metric",
                f"natural prevalence ({nat['folds']}-fold CV, {pct(nat['prevalence'])} positive)",
            ],
            [
                ["ROC-AUC", num(nat["roc_auc"])],
                ["PR-AUC", num(nat["pr_auc"])],
                *[
                    [f"TPR at {100 * float(k):g}% FPR", num(v["tpr"])]
                    for k, v in nat["tpr_at_fpr"].items()
                ],
                ["Brier", f"{nat['brier']:.5f} (base rate alone {nat['brier_of_base_rate']:.5f})"],
                ["expected calibration error", num(nat["expected_calibration_error"])],
            ],
        ),
        coefficients=table(
            "coefficients",
            [
                "feature",
                "std. coefficient (paper protocol)",
                "saved model",
                "scaler mean",
                "scaler scale",
            ],
            [
                [n, _mean_std(pp["coefficients"][n]), num(c), num(m), num(s)]
                for n, c, m, s in zip(
                    names,
                    res["coefficients"],
                    res["scaler"]["mean"],
                    res["scaler"]["scale"],
                    strict=True,
                )
            ],
        ),
        coefficients_figure=Figure(
            "coefficients",
            "predictor coefficients",
            CoefficientsPlot(
                features=names,
                mean=[pp["coefficients"][n]["mean"] or 0.0 for n in names],
                std=[pp["coefficients"][n]["std"] or 0.0 for n in names],
            ),
        ),
        roc_pr=roc_pr,
        roc_pr_note=None
        if roc_pr is not None
        else f"ROC/PR curves omitted: {scores_path} is missing (written by `{STAGE_PREDICT}`).",
        calibration=table(
            "calibration",
            ["predicted in", "examples", "mean predicted", "observed rate"],
            [
                [
                    f"[{b['lo']:.1f}, {b['hi']:.1f})",
                    b["count"],
                    num(b["mean_predicted"]),
                    num(b["observed_rate"]),
                ]
                for b in nat["reliability"]
                if b["count"]
            ],
        ),
        by_group=table(
            "predictor-groups",
            ["group", "examples", "memorized", "held-out ROC-AUC", "held-out PR-AUC"],
            [
                [g, v["n"], v["n_positive"], num(v["roc_auc"]), num(v["pr_auc"])]
                for g, v in by_group.items()
            ],
        )
        if by_group
        else None,
    )
    return Section("predictor", view, summary={"predictor": summary})


# ---- pre-filtering ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FilterView:
    """filter.html.j2: flagged examples and memorization before and after filtering."""

    table: Table
    models: Table | None  # what each saved predictor would flag (flagged.json "models")
    new_total: int  # newly memorized examples after filtering
    new_shown: tuple[int, ...]  # the first MAX_NEW_IDS of their ids


_FILTER_SUMMARY = (
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


def prefilter(run: RunDir) -> Section:
    """The pre-filtering experiment: flagged examples, memorization before and after."""
    path = run.layout.filter_result
    if not path.is_file():
        return omitted(
            "filter",
            f"Section omitted: no {path} (written by the study's filter stage or "
            "`kdmem filter --compare`, see docs/run_dir.md).",
        )
    try:
        res = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return omitted(
            "filter",
            f"Section omitted: {path} is not readable JSON ({e}); rerun the filter stage.",
        )
    if "skipped" in res:
        return omitted(
            "filter", f"Section omitted: the filter stage was skipped ({res['skipped']})."
        )
    flagged: dict[str, Any] = {}
    fpath = run.layout.flagged
    if fpath.is_file():
        try:
            flagged = json.loads(fpath.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            flagged = {}
    rows: list[list[Cell]] = [
        ["examples in D", res.get("n_examples")],
        [
            "flagged by the predictor (removed before re-distilling)",
            f"{res.get('n_flagged')}"
            + (f" at threshold {num(flagged['threshold'])}" if "threshold" in flagged else ""),
        ],
        [f"memorized before ({res.get('before_role')})", res.get("memorized_before")],
        [f"memorized after ({res.get('after_role')})", res.get("memorized_after")],
        ["reduction", pct(res.get("reduction"))],
        [
            "flagged and memorized before (what the filter was for)",
            res.get("removed_and_memorized"),
        ],
        ["newly memorized after filtering", res.get("n_new")],
        ["memorized both before and after", len(res.get("still_memorized", []))],
    ]
    new = [int(i) for i in res.get("new", [])]
    model_rows = [
        [
            str(m.get("model")) + (" (used)" if m.get("model") == flagged.get("model") else ""),
            num(m.get("threshold")),
            m.get("n_flagged"),
            pct(m.get("flagged_share")),
            f"{m.get('target_memorized_flagged')} of {m.get('target_memorized')}"
            if "target_memorized" in m
            else "-",
            pct(m.get("recall_of_target")),
        ]
        for m in flagged.get("models", [])
    ]
    summary = {k: res.get(k) for k in _FILTER_SUMMARY}
    if flagged.get("models"):
        summary["models"] = flagged["models"]
        summary["model_used"] = flagged.get("model")
    view = FilterView(
        models=table(
            "filter-models",
            [
                "predictor",
                "threshold",
                "flagged",
                "share of D",
                "student's memorized flagged",
                "recall",
            ],
            model_rows,
        )
        if model_rows
        else None,
        table=table("filter", ["", "value"], rows),
        new_total=len(new),
        new_shown=tuple(new[:MAX_NEW_IDS]),
    )
    return Section("filter", view, summary={"filter": summary})
