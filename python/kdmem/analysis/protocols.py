"""The statistics of the memorization predictor (Borkar et al. 2026): fitting the standardised
logistic regression, the paper's balanced 1:3 protocol, and the natural-prevalence evaluation
(ROC-AUC, PR-AUC, TPR at low FPR, Brier score, reliability bins). See
:mod:`kdmem.analysis.predictor` for the features, the saved model and the command.

scikit-learn is imported in one place (:func:`sklearn_api`), on first use, so importing this
module stays light and a missing scikit-learn is one line naming ``kdmem[analysis]``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np

from kdmem import extras

__all__ = [
    "FPR_TARGETS",
    "fit_logistic",
    "natural_prevalence",
    "paper_protocol",
    "paper_split",
    "reliability_bins",
    "sklearn_api",
]

FPR_TARGETS = (0.001, 0.01)


@functools.cache
def sklearn_api() -> Any:
    """The scikit-learn modules the predictor uses (and threadpoolctl, which it installs),
    imported on first use: the one place they are imported, so ``import kdmem.analysis``
    stays light and a missing scikit-learn is one line naming ``kdmem[analysis]``."""
    extras.require("sklearn", why="the memorization predictor")
    from sklearn import linear_model, metrics, model_selection, preprocessing
    from threadpoolctl import threadpool_limits

    return SimpleNamespace(
        linear_model=linear_model,
        metrics=metrics,
        model_selection=model_selection,
        preprocessing=preprocessing,
        threadpool_limits=threadpool_limits,
    )


def fit_logistic(X: np.ndarray, y: np.ndarray, C: float) -> tuple[Any, Any]:
    """Standardise, then fit an L2 logistic regression: ``(scaler, model)``."""
    scaler = sklearn_api().preprocessing.StandardScaler().fit(X)
    lr = (
        sklearn_api()
        .linear_model.LogisticRegression(C=C, max_iter=1000)
        .fit(scaler.transform(X), y)
    )
    return scaler, lr


def _summary(values: Sequence[float]) -> dict[str, Any]:
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if len(arr) == 0:
        return {"mean": None, "std": None, "n": 0}
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if len(arr) > 1 else None,
        "n": len(arr),
    }


def paper_split(
    y: np.ndarray, rng: np.random.Generator, neg_ratio: float = 3.0, test_size: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """One resample of the paper protocol: (train indices, test indices) into ``y``.

    Every positive, ``round(neg_ratio * n_pos)`` negatives drawn without replacement (all of
    them if fewer), then a stratified split with ``test_size`` of the rows in the test part.
    """

    pos = np.flatnonzero(y)
    neg = np.flatnonzero(~y)
    k = min(len(neg), round(neg_ratio * len(pos)))
    chosen = np.sort(np.concatenate([pos, rng.choice(neg, size=k, replace=False)]))
    train, test = sklearn_api().model_selection.train_test_split(
        chosen,
        test_size=test_size,
        stratify=y[chosen],
        random_state=int(rng.integers(2**31 - 1)),
    )
    return np.sort(train), np.sort(test)


def paper_protocol(
    X: np.ndarray,
    y: np.ndarray,
    feature_names: Sequence[str],
    *,
    resamples: int = 100,
    neg_ratio: float = 3.0,
    test_size: float = 0.3,
    seed: int = 0,
    C: float = 1.0,
) -> dict[str, Any]:
    """The paper's balanced-resampling evaluation; see the module docstring."""

    rng = np.random.default_rng(seed)
    per: dict[str, list[float]] = {"roc_auc": [], "precision": [], "recall": []}
    coefs: list[np.ndarray] = []
    with sklearn_api().threadpool_limits(limits=1):
        for _ in range(resamples):
            train, test = paper_split(y, rng, neg_ratio, test_size)
            scaler, lr = fit_logistic(X[train], y[train], C)
            p = lr.predict_proba(scaler.transform(X[test]))[:, 1]
            yt = y[test]
            pred = p >= 0.5
            both = 0 < yt.sum() < len(yt)
            per["roc_auc"].append(
                float(sklearn_api().metrics.roc_auc_score(yt, p)) if both else math.nan
            )
            per["precision"].append(
                float(sklearn_api().metrics.precision_score(yt, pred, zero_division=0.0))
            )
            per["recall"].append(
                float(sklearn_api().metrics.recall_score(yt, pred, zero_division=0.0))
            )
            coefs.append(lr.coef_[0].copy())
    c = np.array(coefs)
    return {
        "resamples": resamples,
        "neg_ratio": neg_ratio,
        "test_size": test_size,
        "threshold": 0.5,
        **{k: _summary(v) for k, v in per.items()},
        "coefficients": {name: _summary(c[:, j].tolist()) for j, name in enumerate(feature_names)},
        "per_resample": per,
    }


def _tpr_at_fpr(y: np.ndarray, s: np.ndarray, fpr_max: float) -> dict[str, Any]:

    fpr, tpr, thr = sklearn_api().metrics.roc_curve(y, s)
    ok = np.flatnonzero(fpr <= fpr_max)
    i = ok[np.argmax(tpr[ok])]
    return {
        "fpr_max": fpr_max,
        "tpr": float(tpr[i]),
        "fpr": float(fpr[i]),
        "threshold": float(min(thr[i], 1.0)),
    }


def reliability_bins(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    """Equal-width bins of predicted probability: count, mean prediction, observed rate."""
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        cnt = int(m.sum())
        out.append(
            {
                "lo": b / bins,
                "hi": (b + 1) / bins,
                "count": cnt,
                "mean_predicted": float(p[m].mean()) if cnt else None,
                "observed_rate": float(y[m].mean()) if cnt else None,
            }
        )
    return out


def natural_prevalence(
    X: np.ndarray,
    y: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    C: float = 1.0,
    bins: int = 10,
) -> tuple[dict[str, Any], np.ndarray]:
    """Stratified k-fold CV at the real base rate; returns (metrics, out-of-fold scores)."""

    k = min(folds, int(y.sum()), int((~y).sum()))
    skf = sklearn_api().model_selection.StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    oof = np.empty(len(y), dtype=np.float64)
    with sklearn_api().threadpool_limits(limits=1):
        for train, test in skf.split(X, y):
            scaler, lr = fit_logistic(X[train], y[train], C)
            oof[test] = lr.predict_proba(scaler.transform(X[test]))[:, 1]
    ece = 0.0
    rel = reliability_bins(y, oof, bins)
    for b in rel:
        if b["count"]:
            ece += b["count"] / len(y) * abs(b["mean_predicted"] - b["observed_rate"])
    metrics = {
        "folds": k,
        "n": len(y),
        "n_positive": int(y.sum()),
        "prevalence": float(y.mean()),
        "roc_auc": float(sklearn_api().metrics.roc_auc_score(y, oof)),
        "pr_auc": float(sklearn_api().metrics.average_precision_score(y, oof)),
        "tpr_at_fpr": {f"{f:g}": _tpr_at_fpr(y, oof, f) for f in FPR_TARGETS},
        "brier": float(sklearn_api().metrics.brier_score_loss(y, oof)),
        "brier_of_base_rate": float(y.mean() * (1 - y.mean())),
        "expected_calibration_error": float(ece),
        "reliability": rel,
    }
    return metrics, oof


# ---- the saved model -------------------------------------------------------------------------
