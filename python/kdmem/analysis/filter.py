"""Pre-filtering (Borkar et al. 2026): drop the examples the predictor flags, re-distill with
the same teacher, measure again on the full study set, and compare.

Two halves, both plain functions:

* :func:`flag_examples` scores every example of a run with a saved predictor
  (``predictor/predictor.json``; features are pre-distillation ones) and flags those with
  probability >= ``threshold``; :func:`write_filtered` writes the kept examples as a study set
  (Parquet, docs/formats.md) plus ``filter/flagged.json``.
* :func:`run_filter_flag` / :func:`run_filter_compare` are the two steps as ``kdmem filter``
  and the study's stages run them, with the run directory's paths.
* :func:`compare_filtered` reads the before/after measure tables (both measured on the *full*
  study set, as the paper measures against the original D) and reports before/after counts,
  the reduction, and which memorized examples are new (memorized after filtering but not
  before).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from kdmem.analysis.predictor import MODELS, Predictor
from kdmem.analysis.tables import RunDir, check_same_ids
from kdmem.atomic import write_json_atomic
from kdmem.corpus.examples import Examples, load_examples, write_examples
from kdmem.errors import FormatVersionError, InvalidArgumentError
from kdmem.rundir import Layout

FILTER_FORMAT = "kdmem-filter"


def flag_examples(
    run: RunDir,
    predictor_path: str | Path | None = None,
    threshold: float | None = None,
    model: str = "paper",
) -> dict[str, Any]:
    """Score every example with one saved model and flag probability >= threshold.

    ``model``: ``paper`` (fit under the paper's 1:3 protocol; its threshold 0.5, the paper's
    pre-filtering) or ``natural`` (fit at natural prevalence; its threshold chosen for a
    target recall at predict time). ``threshold`` overrides the model's own.
    Returns ``{"example_id": int64[n], "score": float64[n], "flagged": bool[n], ...}``.
    Examples whose features are not finite cannot be scored and are never flagged (counted
    in ``n_unscored``).
    """
    p = Predictor.load(predictor_path or run.layout.predictor, model)
    threshold = p.threshold if threshold is None else threshold
    if not 0.0 < threshold < 1.0:
        raise InvalidArgumentError(f"invalid threshold = {threshold}: use a probability in (0, 1)")
    model_obj = p
    ids, X = model_obj.features_of(run)
    score = model_obj.predict_proba(X)
    all_ids = run.primary("teacher").example_id
    return {
        "example_id": ids,
        "score": score,
        "flagged": score >= threshold,
        "n_unscored": int(len(all_ids) - len(ids)),
        "threshold": threshold,
        "model": model,
        "feature_names": list(model_obj.feature_names),
    }


def flag_summary(run: RunDir, flags: dict[str, Any], target: str) -> dict[str, Any]:
    """What a flagging would remove: ``n_flagged``, ``flagged_share`` of the study set and
    ``recall_of_target``, the share of ``target``'s memorized examples it flags."""
    flagged = set(np.asarray(flags["example_id"])[np.asarray(flags["flagged"], bool)].tolist())
    mem = run.measure(target).memorized_ids()
    n = run.primary("teacher").n
    return {
        "model": flags["model"],
        "threshold": flags["threshold"],
        "n_flagged": len(flagged),
        "flagged_share": len(flagged) / n if n else None,
        "target": target,
        "target_memorized": len(mem),
        "target_memorized_flagged": len(mem & flagged),
        "recall_of_target": len(mem & flagged) / len(mem) if mem else None,
    }


def write_filtered(
    study: str | Path,
    flags: dict[str, Any],
    out: str | Path,
    flagged_json: str | Path,
    extra: dict[str, Any] | None = None,
) -> Examples:
    """Write the study set minus the flagged examples to ``out`` (Parquet) and the flagged
    ids (plus ``extra`` keys) to ``flagged_json``; returns the kept examples."""
    examples = load_examples(study)
    flagged_ids = np.asarray(flags["example_id"])[np.asarray(flags["flagged"], dtype=bool)]
    keep = ~np.isin(examples.example_ids, flagged_ids)
    kept = examples.select(keep)
    write_examples(kept, out)
    write_json_atomic(
        Path(flagged_json),
        {
            "format": FILTER_FORMAT,
            "version": 2,
            "model": flags.get("model", "natural"),
            "threshold": flags["threshold"],
            "feature_names": flags["feature_names"],
            "n_examples": len(examples),
            "n_flagged": len(flagged_ids),
            "n_kept": len(kept),
            "n_unscored": flags["n_unscored"],
            "flagged": sorted(int(i) for i in flagged_ids),
            **(extra or {}),
        },
    )
    return kept


def compare_filtered(
    run: RunDir, before: str, after: str, flagged: list[int] | None = None
) -> dict[str, Any]:
    """Before/after memorization of the filtering experiment (both roles' tables in ``run``).

    ``new`` = memorized after filtering but not before; ``removed_and_memorized`` = flagged
    examples the student had memorized before (what the filter was for).
    """
    b = run.measure(before)
    a = run.measure(after)
    check_same_ids([(b.path, b.example_id), (a.path, a.example_id)])
    mb, ma = b.memorized_ids(), a.memorized_ids()
    flagged_set = set(flagged or [])
    new = sorted(ma - mb)
    return {
        "format": FILTER_FORMAT,
        "version": 1,
        "before_role": before,
        "after_role": after,
        "n_examples": b.n,
        "memorized_before": len(mb),
        "memorized_after": len(ma),
        "reduction": None if not mb else 1.0 - len(ma) / len(mb),
        "new": new,
        "n_new": len(new),
        "still_memorized": sorted(ma & mb),
        "n_flagged": len(flagged_set),
        "removed_and_memorized": len(mb & flagged_set),
        "memorized_after_but_flagged": len(ma & flagged_set),
    }


def run_filter_flag(
    run_dir: str | os.PathLike[str],
    *,
    model: str = "paper",
    threshold: float | None = None,
    predictor: str | os.PathLike[str] | None = None,
    data: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Flag with one of the run's saved models and write the filtered study set (``kdmem
    filter``, the study's ``filter_flag`` stage). Defaults: the paper model at its 0.5
    threshold, ``predictor/predictor.json``, ``data/study.parquet`` ->
    ``data/filtered.parquet``. ``filter/flagged.json`` lists the flagged ids and, for every
    saved model, what it would flag (share of the study set, share of the predicted
    student's memorized set). Returns the counts (``n_flagged``, ``n_kept``) and the path."""
    lay = Layout(run_dir)
    run = RunDir(run_dir)
    path = Path(predictor) if predictor is not None else lay.predictor
    target = str(json.loads(path.read_text("utf-8")).get("target")) if path.is_file() else ""
    flags = flag_examples(run, path, threshold, model)
    models = []
    for m in MODELS:
        try:
            f = flags if m == model else flag_examples(run, path, None, m)
        except FormatVersionError:  # a version-1 predictor.json: the natural model only
            continue
        models.append(flag_summary(run, f, target) if target else {"model": m})
    target_path = Path(out) if out is not None else lay.filtered
    kept = write_filtered(
        Path(data) if data else lay.study,
        flags,
        target_path,
        lay.flagged,
        {"target": target, "models": models},
    )
    return {
        "n_flagged": int(np.asarray(flags["flagged"]).sum()),
        "n_kept": len(kept),
        "out": target_path,
    }


def run_filter_compare(run_dir: str | os.PathLike[str], before: str, after: str) -> dict[str, Any]:
    """Compare the measured roles ``before`` and ``after`` filtering (:func:`compare_filtered`,
    with the flagged ids of ``filter/flagged.json`` when present) and write
    ``filter/filter.json`` (``kdmem filter --compare``, the study's ``filter`` stage)."""
    lay = Layout(run_dir)
    flagged = json.loads(lay.flagged.read_text())["flagged"] if lay.flagged.exists() else []
    res = compare_filtered(RunDir(run_dir), before, after, flagged)
    write_json_atomic(lay.filter_result, res)
    return res
