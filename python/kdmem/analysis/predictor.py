"""Predict student memorization before distillation (Borkar et al. 2026, "Predicting ...").

Logistic regression on standardised features available before the student is trained.
Default features (docs/formats.md): ``zlib_bytes`` (features.parquet), ``ppl_teacher`` /
``ppl_baseline`` (``ppl_window`` of the teacher's / primary baseline's measure table) and
``kl_teacher_baseline`` (``kl_to_reference`` of the teacher's table measured against the
baseline). The target is the ``memorized`` column of one student table.

Feature names understood by :func:`feature_matrix`:

* any column of ``features.parquet`` (``zlib_bytes``, ``suffix_count``, ...);
* ``ppl_<kind or role>``: ``ppl_window`` of that table (``ppl_teacher``, ``ppl_baseline_seed1``);
* ``kl_teacher_baseline``;
* ``<role>.<column>``: any numeric column of a measure table (``teacher.mink_logprob``);
* ``log_<name>`` / ``log1p_<name>``: the natural log / log(1 + x) of any of the above
  (the opt-in corpus features use ``log1p_`` on duplicate counts, Carlini et al. 2022).

Two evaluations:

* **paper protocol**: positives = memorized examples, negatives sampled without replacement
  at ``neg_ratio`` (3) per positive, a stratified ``test_size`` (30%) split, ``resamples`` (100)
  times; mean ± sample std of ROC-AUC, precision and recall at probability 0.5 on the test
  split, and of the standardised coefficients;
* **natural prevalence**: stratified k-fold CV over every example; out-of-fold scores give
  ROC-AUC, PR-AUC (average precision), TPR at 0.1% and 1% FPR, the Brier score and
  reliability bins (10 equal-width bins of predicted probability).

The saved model (``predictor/predictor.json``, never pickle) is the scaler and logistic
regression refit on every example at natural prevalence, so its probabilities are calibrated
to the real base rate; :class:`Predictor` reloads it and scores new examples with numpy only.
Everything is deterministic for a given ``seed``; sklearn runs single-threaded (these
problems are tiny in features, and BLAS threads on a shared machine only slow them down).

Why one file (~520 lines): the feature matrix, both protocols' evaluation, the saved models
and their JSON share one dataset and one format; split, each part would import the others.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from kdmem._version import __version__
from kdmem.analysis.protocols import (
    fit_logistic,
    natural_prevalence,
    paper_protocol,
    sklearn_api,
)
from kdmem.analysis.sets import text_table
from kdmem.analysis.tables import (
    KINDS,
    STAGE_MEASURE,
    STAGE_PREDICT,
    MeasureTable,
    RunDir,
    parse_role,
)
from kdmem.atomic import write_json_atomic, write_parquet_atomic
from kdmem.errors import (
    FormatVersionError,
    InvalidArgumentError,
    KdmemIOError,
    MissingStageInputError,
    NoPositiveExamplesError,
    TableSchemaError,
)
from kdmem.rundir import PREDICTOR_JSON, PREDICTOR_SCORES

PREDICTOR_FORMAT = "kdmem-predictor"
PREDICTOR_FORMAT_VERSION = 2  # 2: "models" (paper + natural, with thresholds); reads 1
MODELS = ("paper", "natural")
DEFAULT_TARGET_RECALL = 0.95
DEFAULT_FEATURES = ("zlib_bytes", "ppl_teacher", "ppl_baseline", "kl_teacher_baseline")
CORPUS_FEATURES = (
    "log1p_suffix_count",
    "log1p_window_count",
    "longest_match_max",
    "longest_match_mean",
)


# ---- features ---------------------------------------------------------------------------------


def _measure_table(run: RunDir, ref: str) -> MeasureTable:
    if ref in KINDS:
        return run.primary(ref)
    parse_role(ref)
    if not run.has_measure(ref):
        raise MissingStageInputError(
            f"{run.measure_path(ref)} is missing; it is written by `{STAGE_MEASURE}`: run that first"
        )
    return run.measure(ref)


def _resolve(run: RunDir, name: str) -> np.ndarray:
    if name.startswith("log1p_"):
        return np.log1p(_resolve(run, name[len("log1p_") :]).astype(np.float64))
    if name.startswith("log_"):
        x = _resolve(run, name[len("log_") :]).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(x)
    if name == "kl_teacher_baseline":
        teacher = run.primary("teacher")
        if "kl_to_reference" not in teacher.columns:
            raise TableSchemaError(
                f"{teacher.path} has no kl_to_reference column, needed for kl_teacher_baseline; "
                f"re-run `{STAGE_MEASURE}` on the teacher with --reference set to the baseline"
            )
        return np.asarray(teacher.columns["kl_to_reference"])
    if "." in name:
        role, col = name.split(".", 1)
        return np.asarray(_measure_table(run, role).column(col))
    if name.startswith("ppl_"):
        return np.asarray(_measure_table(run, name[len("ppl_") :]).column("ppl_window"))
    return np.asarray(run.features().column(name))


@dataclass(frozen=True)
class Dataset:
    """Rows of the predictor: ``X`` (n, d) float64, ``y`` (n,) bool, kept after dropping rows
    with a non-finite feature."""

    example_id: npt.NDArray[np.int64]
    X: npt.NDArray[np.float64]
    y: npt.NDArray[np.bool_]
    feature_names: tuple[str, ...]
    target: str
    n_dropped_nonfinite: int


def default_target(run: RunDir) -> str:
    """The main soft student (untagged, else lowest seed)."""
    return run.primary("student_soft").role.name


def feature_matrix(
    run: RunDir, features: Sequence[str] = DEFAULT_FEATURES, target: str | None = None
) -> Dataset:
    """Join the named features and the target's ``memorized`` column by example id.

    Raises:
        MissingStageInputError: a needed table is absent (names it and its stage).
        TableSchemaError: a needed column is absent.
        StudySetMismatchError: the tables have different example ids.
    """
    if not features:
        raise InvalidArgumentError("no features given; pass at least one (e.g. zlib_bytes)")
    if len(set(features)) != len(features):
        raise InvalidArgumentError(f"features listed twice in {list(features)}")
    target = target or default_target(run)
    tgt = _measure_table(run, target)
    cols = []
    for name in features:
        x = np.asarray(_resolve(run, name))
        if x.dtype == np.bool_ or np.issubdtype(x.dtype, np.number):
            cols.append(x.astype(np.float64))
        else:
            raise TableSchemaError(f"feature {name!r} has non-numeric type {x.dtype}")
    X = np.column_stack(cols) if cols else np.empty((tgt.n, 0))
    keep = np.all(np.isfinite(X), axis=1)
    return Dataset(
        example_id=tgt.example_id[keep],
        X=X[keep],
        y=tgt.memorized[keep].copy(),
        feature_names=tuple(features),
        target=tgt.role.name,
        n_dropped_nonfinite=int((~keep).sum()),
    )


def _check_positives(y: np.ndarray, target: str, needed: int = 2) -> None:
    n_pos = int(y.sum())
    if n_pos < needed or n_pos == len(y):
        what = "none" if n_pos == 0 else f"only {n_pos}" if n_pos < needed else "all"
        raise NoPositiveExamplesError(
            f"{target} memorized {what} of {len(y)} usable examples; the predictor needs at "
            f"least {needed} memorized and some non-memorized examples: pick another --target "
            "or use a larger study set"
        )


# ---- evaluation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Predictor:
    """A fitted standardise-then-logistic model, as stored in ``predictor.json``.

    ``P(memorized | x) = 1 / (1 + exp(-(((x - mean) / scale) @ coefficients + intercept)))``.
    """

    feature_names: tuple[str, ...]
    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]
    coefficients: npt.NDArray[np.float64]
    intercept: float
    threshold: float = 0.5
    """Flag at probability >= this (paper model: 0.5; natural: chosen for a target recall)."""

    def decision_function(self, X: np.ndarray) -> npt.NDArray[np.float64]:
        """Log-odds of memorization; ``X`` is (n, d) in ``feature_names`` order."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise InvalidArgumentError(
                f"X has shape {X.shape}; expected (n, {len(self.feature_names)}) with columns "
                f"{list(self.feature_names)}"
            )
        Z = (X - self.mean) / self.scale
        return Z @ self.coefficients + self.intercept

    def predict_proba(self, X: np.ndarray) -> npt.NDArray[np.float64]:
        """P(memorized) per row, shape (n,)."""
        d = self.decision_function(X)
        # Stable logistic for large |d| (same values as scipy.special.expit).
        out = np.empty_like(d)
        pos = d >= 0
        out[pos] = 1.0 / (1.0 + np.exp(-d[pos]))
        e = np.exp(d[~pos])
        out[~pos] = e / (1.0 + e)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature_names": list(self.feature_names),
            "scaler": {"mean": self.mean.tolist(), "scale": self.scale.tolist()},
            "coefficients": self.coefficients.tolist(),
            "intercept": float(self.intercept),
            "threshold": float(self.threshold),
        }

    @classmethod
    def from_dict(
        cls, obj: dict[str, Any], source: str = "predictor JSON", model: str = "natural"
    ) -> Predictor:
        """One model of a ``predictor.json``: ``"paper"`` (the 1:3 protocol's fit, threshold
        0.5) or ``"natural"`` (fit on every example). Version 1 files hold the natural one."""
        version = obj.get("version", PREDICTOR_FORMAT_VERSION)
        if obj.get("format", PREDICTOR_FORMAT) != PREDICTOR_FORMAT or version not in (1, 2):
            raise FormatVersionError(
                f"{source} is {obj.get('format')!r} version {version}; this kdmem reads "
                f"{PREDICTOR_FORMAT!r} versions 1-{PREDICTOR_FORMAT_VERSION}: re-run "
                f"`{STAGE_PREDICT}`"
            )
        if model not in MODELS:
            raise InvalidArgumentError(f"invalid model = {model!r}: choose paper or natural")
        if "models" in obj:
            obj = {"feature_names": obj.get("feature_names"), **obj["models"][model]}
        elif model != "natural":
            raise FormatVersionError(
                f"{source} (version 1) holds the natural-prevalence model only; re-run "
                f"`{STAGE_PREDICT}` for the paper-protocol model"
            )
        try:
            names = tuple(obj["feature_names"])
            p = cls(
                feature_names=names,
                mean=np.asarray(obj["scaler"]["mean"], dtype=np.float64),
                scale=np.asarray(obj["scaler"]["scale"], dtype=np.float64),
                coefficients=np.asarray(obj["coefficients"], dtype=np.float64),
                intercept=float(obj["intercept"]),
                threshold=float(obj.get("threshold", 0.5)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise TableSchemaError(
                f"{source} lacks or mangles field {e}; re-run `{STAGE_PREDICT}`"
            ) from None
        d = len(names)
        if not (p.mean.shape == p.scale.shape == p.coefficients.shape == (d,)):
            raise TableSchemaError(f"{source}: scaler/coefficients do not match {d} features")
        return p

    @classmethod
    def load(cls, path: str | Path, model: str = "natural") -> Predictor:
        """Read one model (``paper`` or ``natural``) of ``predictor.json`` (or the directory
        holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / PREDICTOR_JSON
        if not path.exists():
            raise MissingStageInputError(
                f"{path} is missing; it is written by `{STAGE_PREDICT}`: run that first"
            )
        try:
            obj = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as e:
            raise KdmemIOError(f"cannot read {path} ({e}); re-run `{STAGE_PREDICT}`") from None
        return cls.from_dict(obj, str(path), model)

    def features_of(self, run: RunDir) -> tuple[npt.NDArray[np.int64], np.ndarray]:
        """(example ids, X) of a run directory in this predictor's feature order (rows with a
        non-finite feature dropped)."""
        cols = [np.asarray(_resolve(run, n), dtype=np.float64) for n in self.feature_names]
        X = np.column_stack(cols)
        ids = run.features().example_id if run.has_features() else run.primary("teacher").example_id
        keep = np.all(np.isfinite(X), axis=1)
        return ids[keep], X[keep]


def _fit_predictor(X: np.ndarray, y: np.ndarray, names: tuple[str, ...], C: float) -> Predictor:
    with sklearn_api().threadpool_limits(limits=1):
        scaler, lr = fit_logistic(X, y, C)
    return Predictor(
        feature_names=names,
        mean=scaler.mean_.astype(np.float64),
        scale=scaler.scale_.astype(np.float64),
        coefficients=lr.coef_[0].astype(np.float64),
        intercept=float(lr.intercept_[0]),
    )


def _model_entry(p: Predictor) -> dict[str, Any]:
    d = p.to_dict()
    del d["feature_names"]  # once, at the top level
    return d


def _held_out_metrics(y: np.ndarray, oof: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """ROC-AUC and PR-AUC of the out-of-fold (held-out) scores inside one example group."""
    yg, sg = np.asarray(y, dtype=bool)[mask], np.asarray(oof)[mask]
    out: dict[str, Any] = {"n": int(mask.sum()), "n_positive": int(yg.sum())}
    if 0 < yg.sum() < len(yg):
        metrics = sklearn_api().metrics
        out["roc_auc"] = float(metrics.roc_auc_score(yg, sg))
        out["pr_auc"] = float(metrics.average_precision_score(yg, sg))
    else:
        out["roc_auc"] = out["pr_auc"] = None  # one class only: undefined
    return out


def recall_threshold(y: np.ndarray, scores: np.ndarray, target_recall: float) -> float:
    """The highest threshold ``t`` with ``recall(scores >= t) >= target_recall`` on labels
    ``y``: the ``ceil(target_recall * n_pos)``-th highest positive score."""
    pos = np.sort(np.asarray(scores, dtype=np.float64)[np.asarray(y, dtype=bool)])[::-1]
    if len(pos) == 0:
        raise NoPositiveExamplesError("no positive example to choose a recall threshold from")
    need = max(1, math.ceil(target_recall * len(pos) - 1e-9))
    return float(pos[need - 1])


# ---- the stage ---------------------------------------------------------------------------------


def train_predictor(
    data: Dataset,
    *,
    resamples: int = 100,
    neg_ratio: float = 3.0,
    test_size: float = 0.3,
    folds: int = 5,
    seed: int = 0,
    C: float = 1.0,
    target_recall: float = DEFAULT_TARGET_RECALL,
) -> tuple[dict[str, Any], Predictor, np.ndarray]:
    """Evaluate both protocols and fit the two saved models; returns (JSON dict, the natural
    model, oof scores). The paper model (``models.paper``) is fit on every positive plus
    ``neg_ratio`` negatives per positive and flags at 0.5; the natural one (``models.natural``,
    also the top-level fields) on every example, flagging at the highest threshold whose
    out-of-fold recall reaches ``target_recall``.

    Raises:
        NoPositiveExamplesError: fewer than 2 memorized examples (or no non-memorized ones).
    """
    if resamples < 1 or folds < 2 or not 0 < test_size < 1 or neg_ratio <= 0 or C <= 0:
        raise InvalidArgumentError(
            f"need resamples >= 1, folds >= 2, 0 < test_size < 1, neg_ratio > 0, C > 0 "
            f"(got {resamples}, {folds}, {test_size}, {neg_ratio}, {C})"
        )
    if not 0 < target_recall <= 1:
        raise InvalidArgumentError(f"invalid target_recall = {target_recall}: use (0, 1]")
    _check_positives(data.y, data.target)

    paper = paper_protocol(
        data.X,
        data.y,
        data.feature_names,
        resamples=resamples,
        neg_ratio=neg_ratio,
        test_size=test_size,
        seed=seed,
        C=C,
    )
    natural, oof = natural_prevalence(data.X, data.y, folds=folds, seed=seed, C=C)
    model = _fit_predictor(data.X, data.y, data.feature_names, C)
    model = dataclasses.replace(model, threshold=recall_threshold(data.y, oof, target_recall))
    # The paper's model: every positive plus neg_ratio negatives per positive (one seeded
    # draw), flagged at 0.5 (Borkar et al. 2026's pre-filtering).
    rng = np.random.default_rng([seed, 1])
    pos, neg = np.flatnonzero(data.y), np.flatnonzero(~data.y)
    k = min(len(neg), round(neg_ratio * len(pos)))
    rows = np.sort(np.concatenate([pos, rng.choice(neg, size=k, replace=False)]))
    paper_model = _fit_predictor(data.X[rows], data.y[rows], data.feature_names, C)
    result = {
        "format": PREDICTOR_FORMAT,
        "version": PREDICTOR_FORMAT_VERSION,
        "kdmem_version": __version__,
        "target": data.target,
        **model.to_dict(),
        "model": {
            "type": "logistic_regression",
            "library": "scikit-learn",
            "C": C,
            "penalty": "l2",
            "solver": "lbfgs",
            "fit_on": "every example (natural prevalence)",
        },
        "models": {
            "paper": {
                **_model_entry(paper_model),
                "fit_on": f"every positive and {neg_ratio:g} negatives per positive (the "
                "paper protocol, one seeded draw)",
                "n_fit": len(rows),
            },
            "natural": {
                **_model_entry(model),
                "fit_on": "every example (natural prevalence)",
                "target_recall": target_recall,
                "threshold_rule": "the highest threshold whose out-of-fold recall reaches "
                "target_recall",
                "n_fit": len(data.y),
            },
        },
        "seed": seed,
        "n_examples": len(data.y),
        "n_positive": int(data.y.sum()),
        "n_dropped_nonfinite": data.n_dropped_nonfinite,
        "metrics": {"paper_protocol": paper, "natural_prevalence": natural},
    }
    return result, model, oof


def run_predict(
    run: RunDir,
    *,
    features: Sequence[str] = DEFAULT_FEATURES,
    target: str | None = None,
    out: str | Path | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """``kdmem predict``: build the dataset, evaluate, write ``predictor.json`` and
    ``scores.parquet`` (example_id, memorized, score_cv out-of-fold, score of the saved model)
    into ``out`` (default ``RUN/predictor/``). Returns the JSON dict."""
    data = feature_matrix(run, features, target)
    result, model, oof = train_predictor(data, **kwargs)
    groups = run.groups()
    if groups is not None:
        result["by_group"] = {
            g: _held_out_metrics(data.y, oof, np.isin(data.example_id, ids))
            for g, ids in groups.items()
        }
    out_dir = Path(out) if out is not None else run.layout.predictor_dir
    scores = pa.table(
        {
            "example_id": pa.array(data.example_id, pa.int64()),
            "memorized": pa.array(data.y, pa.bool_()),
            "score_cv": pa.array(oof, pa.float64()),
            "score": pa.array(model.predict_proba(data.X), pa.float64()),
            "score_paper": pa.array(
                Predictor.from_dict(result, model="paper").predict_proba(data.X), pa.float64()
            ),
        }
    )
    write_parquet_atomic(out_dir / PREDICTOR_SCORES, scores)
    write_json_atomic(out_dir / PREDICTOR_JSON, result)
    return result


def format_predict(result: dict[str, Any]) -> str:
    """A short plain-text summary of a predictor result."""

    pp = result["metrics"]["paper_protocol"]
    nat = result["metrics"]["natural_prevalence"]

    def ms(s: dict[str, Any]) -> str:
        if s["mean"] is None:
            return "-"
        return f"{s['mean']:.4f} ± {s['std']:.4f}" if s["std"] is not None else f"{s['mean']:.4f}"

    lines = [
        f"target {result['target']}: {result['n_positive']} memorized of {result['n_examples']} "
        f"({100 * nat['prevalence']:.3g}%)",
        "",
        f"paper protocol ({pp['resamples']} resamples, 1:{pp['neg_ratio']:g} negatives, "
        f"{100 * pp['test_size']:g}% test):",
        text_table(
            ["metric", "mean ± std"],
            [
                ["ROC-AUC", ms(pp["roc_auc"])],
                ["precision", ms(pp["precision"])],
                ["recall", ms(pp["recall"])],
            ],
        ),
        "",
        text_table(
            ["feature", "std. coefficient (paper protocol)", "saved model"],
            [
                [n, ms(pp["coefficients"][n]), f"{c:.4f}"]
                for n, c in zip(result["feature_names"], result["coefficients"], strict=True)
            ],
        ),
        "",
        f"natural prevalence ({nat['folds']}-fold CV):",
        text_table(
            ["metric", "value"],
            [
                ["ROC-AUC", f"{nat['roc_auc']:.4f}"],
                ["PR-AUC", f"{nat['pr_auc']:.4f}"],
                *[
                    [f"TPR at {100 * float(k):g}% FPR", f"{v['tpr']:.4f}"]
                    for k, v in nat["tpr_at_fpr"].items()
                ],
                ["Brier", f"{nat['brier']:.5f} (base rate alone {nat['brier_of_base_rate']:.5f})"],
                ["ECE", f"{nat['expected_calibration_error']:.5f}"],
            ],
        ),
    ]
    return "\n".join(lines) + "\n"
