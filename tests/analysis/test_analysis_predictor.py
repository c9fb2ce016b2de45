"""kdmem predict: metrics against direct scikit-learn computations, the JSON round trip,
determinism and the one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from kdmem.analysis import RunDir
from kdmem.analysis.predictor import (
    DEFAULT_FEATURES,
    Predictor,
    feature_matrix,
    run_predict,
    train_predictor,
)
from kdmem.analysis.protocols import paper_split
from kdmem.cli import main
from kdmem.errors import (
    FormatVersionError,
    MissingStageInputError,
    NoPositiveExamplesError,
    TableSchemaError,
)


def raw_design(run: Path, target: str = "student_soft_seed0") -> tuple[np.ndarray, np.ndarray]:
    """The default features assembled directly from the Parquet files (docs/formats.md)."""
    f = pq.read_table(run / "features.parquet").to_pydict()
    t = pq.read_table(run / "measure" / "teacher.parquet").to_pydict()
    b = pq.read_table(run / "measure" / "baseline_seed0.parquet").to_pydict()
    s = pq.read_table(run / "measure" / f"{target}.parquet").to_pydict()
    X = np.column_stack([f["zlib_bytes"], t["ppl_window"], b["ppl_window"], t["kl_to_reference"]])
    return X.astype(np.float64), np.asarray(s["memorized"])


def pipe() -> object:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


def test_feature_matrix_is_the_documented_join(synthetic_run: Path) -> None:
    data = feature_matrix(RunDir(synthetic_run))
    X, y = raw_design(synthetic_run)
    assert data.feature_names == DEFAULT_FEATURES
    assert data.target == "student_soft_seed0"
    np.testing.assert_array_equal(data.X, X)
    np.testing.assert_array_equal(data.y, y)


def test_natural_prevalence_metrics_match_sklearn(predicted_run: Path) -> None:
    res = json.loads((predicted_run / "predictor" / "predictor.json").read_text())
    nat = res["metrics"]["natural_prevalence"]
    X, y = raw_design(predicted_run)
    # out-of-fold scores recomputed from scratch
    oof = np.empty(len(y))
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(X, y):
        oof[te] = pipe().fit(X[tr], y[tr]).predict_proba(X[te])[:, 1]
    sc = pq.read_table(predicted_run / "predictor" / "scores.parquet").to_pydict()
    np.testing.assert_allclose(sc["score_cv"], oof, rtol=1e-9, atol=1e-12)
    assert nat["roc_auc"] == pytest.approx(roc_auc_score(y, oof))
    assert nat["pr_auc"] == pytest.approx(average_precision_score(y, oof))
    assert nat["brier"] == pytest.approx(brier_score_loss(y, oof))
    assert nat["prevalence"] == pytest.approx(y.mean())
    fpr, tpr, _ = roc_curve(y, oof)
    for key, f in (("0.001", 0.001), ("0.01", 0.01)):
        assert nat["tpr_at_fpr"][key]["tpr"] == pytest.approx(tpr[fpr <= f].max())
        assert nat["tpr_at_fpr"][key]["fpr"] <= f
    rel = nat["reliability"]
    assert len(rel) == 10 and sum(b["count"] for b in rel) == len(y)
    bin0 = oof < 0.1
    assert rel[0]["count"] == int(bin0.sum())
    assert rel[0]["observed_rate"] == pytest.approx(y[bin0].mean())
    # the planted relationship: compressible (low zlib) examples get memorized
    assert nat["roc_auc"] > 0.9
    assert res["coefficients"][0] < 0


def test_paper_protocol_matches_sklearn(synthetic_run: Path) -> None:
    data = feature_matrix(RunDir(synthetic_run))
    res, _, _ = train_predictor(data, resamples=5, seed=3)
    pp = res["metrics"]["paper_protocol"]
    rng = np.random.default_rng(3)
    aucs, precs, recs, coefs = [], [], [], []
    for _ in range(5):
        tr, te = paper_split(data.y, rng, 3.0, 0.3)
        n_pos = int(data.y.sum())
        assert len(tr) + len(te) == 4 * n_pos  # every positive and 3 negatives each
        assert data.y[np.concatenate([tr, te])].sum() == n_pos
        assert len(te) == pytest.approx(0.3 * 4 * n_pos, abs=1)
        m = pipe().fit(data.X[tr], data.y[tr])
        p = m.predict_proba(data.X[te])[:, 1]
        aucs.append(roc_auc_score(data.y[te], p))
        precs.append(precision_score(data.y[te], p >= 0.5))
        recs.append(recall_score(data.y[te], p >= 0.5))
        coefs.append(m[-1].coef_[0])
    np.testing.assert_allclose(pp["per_resample"]["roc_auc"], aucs)
    np.testing.assert_allclose(pp["per_resample"]["precision"], precs)
    np.testing.assert_allclose(pp["per_resample"]["recall"], recs)
    assert pp["roc_auc"]["mean"] == pytest.approx(np.mean(aucs))
    assert pp["roc_auc"]["std"] == pytest.approx(np.std(aucs, ddof=1))
    c = np.array(coefs)
    for j, name in enumerate(DEFAULT_FEATURES):
        assert pp["coefficients"][name]["mean"] == pytest.approx(c[:, j].mean())
        assert pp["coefficients"][name]["std"] == pytest.approx(c[:, j].std(ddof=1))


def test_json_round_trip_equals_sklearn(predicted_run: Path) -> None:
    pdir = predicted_run / "predictor"
    assert sorted(p.name for p in pdir.iterdir()) == ["predictor.json", "scores.parquet"]
    model = Predictor.load(pdir)
    X, y = raw_design(predicted_run)
    ref = pipe().fit(X, y)
    np.testing.assert_allclose(model.mean, ref[0].mean_, rtol=1e-12)
    np.testing.assert_allclose(
        model.predict_proba(X), ref.predict_proba(X)[:, 1], rtol=1e-9, atol=1e-15
    )
    np.testing.assert_allclose(
        model.decision_function(X), ref.decision_function(X), rtol=1e-9, atol=1e-12
    )
    sc = pq.read_table(pdir / "scores.parquet").to_pydict()
    np.testing.assert_allclose(sc["score"], model.predict_proba(X), rtol=1e-12)
    # the JSON → object → JSON round trip is exact
    again = Predictor.from_dict(model.to_dict())
    np.testing.assert_array_equal(again.coefficients, model.coefficients)
    ids, X2 = model.features_of(RunDir(predicted_run))
    np.testing.assert_array_equal(X2, X)
    assert ids[0] == 0 and len(ids) == len(y)


def test_deterministic_for_a_seed(synthetic_run: Path) -> None:
    data = feature_matrix(RunDir(synthetic_run))
    a, _, _ = train_predictor(data, resamples=5, seed=11)
    b, _, _ = train_predictor(data, resamples=5, seed=11)
    c, _, _ = train_predictor(data, resamples=5, seed=12)
    assert json.dumps(a) == json.dumps(b)
    assert json.dumps(a) != json.dumps(c)


def test_corpus_and_custom_features(synthetic_run: Path) -> None:
    names = ("zlib_bytes", "log1p_suffix_count", "teacher.mink_logprob", "ppl_baseline_seed2")
    data = feature_matrix(RunDir(synthetic_run), names, target="student_hard_seed1")
    f = pq.read_table(synthetic_run / "features.parquet").to_pydict()
    t = pq.read_table(synthetic_run / "measure" / "teacher.parquet").to_pydict()
    b2 = pq.read_table(synthetic_run / "measure" / "baseline_seed2.parquet").to_pydict()
    np.testing.assert_allclose(data.X[:, 1], np.log1p(f["suffix_count"]))
    np.testing.assert_array_equal(data.X[:, 2], t["mink_logprob"])
    np.testing.assert_array_equal(data.X[:, 3], b2["ppl_window"])
    assert data.target == "student_hard_seed1"


def test_no_positive_examples(run_copy: Path) -> None:
    path = run_copy / "measure" / "student_soft_seed0.parquet"
    t = pq.read_table(path)
    mem = np.zeros(t.num_rows, dtype=bool)
    import pyarrow as pa

    t = t.set_column(t.schema.get_field_index("memorized"), "memorized", pa.array(mem))
    pq.write_table(t, path)
    with pytest.raises(NoPositiveExamplesError, match="memorized none of 1500"):
        run_predict(RunDir(run_copy), resamples=2)
    r = CliRunner().invoke(main, ["predict", str(run_copy), "--resamples", "2"])
    assert r.exit_code == 2
    err = r.stderr.strip()
    assert err.startswith("kdmem: error: student_soft_seed0 memorized none") and "\n" not in err


def test_missing_inputs(run_copy: Path) -> None:
    (run_copy / "features.parquet").unlink()
    with pytest.raises(
        MissingStageInputError,
        match=re.escape("features.parquet is missing; it is written by `kdmem featurize`"),
    ):
        feature_matrix(RunDir(run_copy))
    with pytest.raises(
        MissingStageInputError, match=re.escape("student_hard_seed9.parquet is missing")
    ):
        feature_matrix(RunDir(run_copy), ["ppl_teacher"], target="student_hard_seed9")
    t = pq.read_table(run_copy / "measure" / "teacher.parquet")
    pq.write_table(t.drop_columns(["kl_to_reference"]), run_copy / "measure" / "teacher.parquet")
    with pytest.raises(TableSchemaError, match="--reference"):
        feature_matrix(RunDir(run_copy), ["kl_teacher_baseline"])
    with pytest.raises(MissingStageInputError, match="kdmem predict"):
        Predictor.load(run_copy / "predictor")


def test_incompatible_predictor_json(predicted_run: Path, tmp_path: Path) -> None:
    obj = json.loads((predicted_run / "predictor" / "predictor.json").read_text())
    obj["version"] = 99
    (tmp_path / "predictor.json").write_text(json.dumps(obj))
    with pytest.raises(FormatVersionError, match="kdmem-predictor"):
        Predictor.load(tmp_path)


def test_cli_predict(run_copy: Path) -> None:
    r = CliRunner().invoke(
        main, ["predict", str(run_copy), "--resamples", "3", "--corpus-features"]
    )
    assert r.exit_code == 0, r.output
    assert "paper protocol (3 resamples" in r.stdout and "TPR at 0.1% FPR" in r.stdout
    res = json.loads((run_copy / "predictor" / "predictor.json").read_text())
    assert res["feature_names"][-1] == "longest_match_mean" and len(res["feature_names"]) == 8


def test_saved_models_paper_and_natural(predicted_run: Path) -> None:
    """The paper model is a standardised logistic regression fit on every positive plus 1:3
    negatives (oracle: scikit-learn on the same rows); the natural model's threshold is the
    highest one whose out-of-fold recall reaches the target (oracle: brute force)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from kdmem.analysis.predictor import recall_threshold

    run = RunDir(predicted_run)
    obj = json.loads((predicted_run / "predictor" / "predictor.json").read_text())
    data = feature_matrix(run, obj["feature_names"], obj["target"])
    rng = np.random.default_rng([obj["seed"], 1])
    pos, neg = np.flatnonzero(data.y), np.flatnonzero(~data.y)
    rows = np.sort(np.concatenate([pos, rng.choice(neg, size=3 * len(pos), replace=False)]))
    sc = StandardScaler().fit(data.X[rows])
    lr = LogisticRegression(C=1.0, max_iter=1000).fit(sc.transform(data.X[rows]), data.y[rows])
    paper = Predictor.load(predicted_run / "predictor", "paper")
    np.testing.assert_allclose(paper.coefficients, lr.coef_[0], rtol=1e-6)
    assert paper.threshold == 0.5 and obj["models"]["paper"]["n_fit"] == len(rows)
    scores = pq.read_table(predicted_run / "predictor" / "scores.parquet")
    oof = scores.column("score_cv").to_numpy()
    y = scores.column("memorized").to_numpy(zero_copy_only=False)
    natural = Predictor.load(predicted_run / "predictor", "natural")
    target = obj["models"]["natural"]["target_recall"]
    ok = [t for t in np.unique(oof) if (oof[y] >= t).mean() >= target]
    assert natural.threshold == max(ok) == recall_threshold(y, oof, target)
    np.testing.assert_allclose(
        scores.column("score_paper").to_numpy(), paper.predict_proba(data.X), rtol=1e-12
    )
