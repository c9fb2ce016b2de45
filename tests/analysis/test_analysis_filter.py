"""Pre-filtering: flags match the saved predictor, the filtered study set drops exactly the
flagged ids, and the before/after comparison matches plain set arithmetic."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kdmem.analysis import RunDir
from kdmem.analysis.filter import compare_filtered, flag_examples, write_filtered
from kdmem.analysis.predictor import Predictor
from kdmem.corpus.examples import Examples, load_examples, write_examples
from kdmem.errors import InvalidArgumentError


def test_flags_equal_the_predictor_threshold(predicted_run: Path) -> None:
    run = RunDir(predicted_run)
    for name, own in (("paper", 0.5), ("natural", None)):
        model = Predictor.load(predicted_run / "predictor" / "predictor.json", name)
        if own is not None:
            assert model.threshold == own  # the paper flags at 0.5
        ids, X = model.features_of(run)
        for thr in (0.3, None):
            flags = flag_examples(run, threshold=thr, model=name)
            want = model.predict_proba(X) >= (model.threshold if thr is None else thr)
            assert np.array_equal(flags["example_id"], ids)
            assert np.array_equal(flags["flagged"], want)
            assert 0 < flags["flagged"].sum() < len(ids)
    # the default is the paper's: the 1:3 model at 0.5
    default = flag_examples(run)
    assert default["model"] == "paper" and default["threshold"] == 0.5
    with pytest.raises(InvalidArgumentError, match="threshold"):
        flag_examples(run, threshold=1.5)


def test_filtered_study_set_drops_exactly_the_flagged(predicted_run: Path, tmp_path: Path) -> None:
    run = RunDir(predicted_run)
    ids = run.primary("teacher").example_id
    study = Examples(ids, np.arange(len(ids) * 4, dtype=np.int64).reshape(-1, 4), "ab" * 32)
    write_examples(study, tmp_path / "study.parquet")
    flags = flag_examples(run, threshold=0.3)
    kept = write_filtered(
        tmp_path / "study.parquet", flags, tmp_path / "kept.parquet", tmp_path / "flagged.json"
    )
    flagged = set(flags["example_id"][flags["flagged"]].tolist())
    assert set(kept.example_ids.tolist()) == set(ids.tolist()) - flagged
    again = load_examples(tmp_path / "kept.parquet")
    assert np.array_equal(again.tokens, kept.tokens) and again.tokenizer_hash == "ab" * 32
    report = json.loads((tmp_path / "flagged.json").read_text())
    assert report["flagged"] == sorted(flagged) and report["n_kept"] == len(kept)


def test_compare_matches_set_arithmetic(predicted_run: Path, tmp_path: Path) -> None:
    dst = tmp_path / "run"
    shutil.copytree(predicted_run, dst)
    before = pq.read_table(dst / "measure" / "student_soft_seed0.parquet")
    mem = before.column("memorized").to_numpy(zero_copy_only=False)
    rng = np.random.default_rng(0)
    after_mem = mem & (rng.random(len(mem)) < 0.2)
    after_mem[np.flatnonzero(~mem)[:3]] = True  # three new ones
    after = before.set_column(
        before.column_names.index("memorized"), "memorized", pa.array(after_mem)
    )
    pq.write_table(after, dst / "measure" / "student_soft_filtered_seed0.parquet")
    ids = before.column("example_id").to_numpy()
    flagged = ids[mem][:5].tolist()
    out = compare_filtered(
        RunDir(dst), "student_soft_seed0", "student_soft_filtered_seed0", flagged
    )
    b, a = set(ids[mem].tolist()), set(ids[after_mem].tolist())
    assert out["memorized_before"] == len(b) and out["memorized_after"] == len(a)
    assert out["new"] == sorted(a - b) and out["n_new"] == 3
    assert out["removed_and_memorized"] == 5
    assert out["reduction"] == pytest.approx(1 - len(a) / len(b))


def test_filter_cli(predicted_run: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from kdmem.cli import main

    dst = tmp_path / "run"
    shutil.copytree(predicted_run, dst)
    ids = RunDir(dst).primary("teacher").example_id
    write_examples(Examples(ids, np.zeros((len(ids), 4), np.int64)), dst / "data" / "study.parquet")
    r = CliRunner().invoke(main, ["filter", str(dst), "--threshold", "0.3"])
    assert r.exit_code == 0, r.output
    kept = load_examples(dst / "data" / "filtered.parquet")
    flagged = json.loads((dst / "filter" / "flagged.json").read_text())["flagged"]
    assert len(kept) + len(flagged) == len(ids) and f"kept {len(kept)}" in r.output
    r = CliRunner().invoke(main, ["filter", str(dst), "--threshold", "1.5"])
    assert r.exit_code == 2 and "threshold" in r.output


def test_flagged_json_summarises_both_models(predicted_run: Path, tmp_path: Path) -> None:
    """filter/flagged.json: the flagging used and, per saved model, its share of D and of the
    predicted student's memorized set (oracle: set arithmetic on the measure table)."""
    from kdmem.analysis.filter import run_filter_flag

    dst = tmp_path / "run"
    shutil.copytree(predicted_run, dst)
    ids = RunDir(dst).primary("teacher").example_id
    study = Examples(ids, np.zeros((len(ids), 4), dtype=np.int64), "ab" * 32)
    write_examples(study, dst / "data" / "study.parquet")
    res = run_filter_flag(dst, model="natural")
    report = json.loads((dst / "filter" / "flagged.json").read_text())
    assert report["model"] == "natural" and res["n_flagged"] == report["n_flagged"]
    target = report["target"]
    mem = set(RunDir(dst).measure(target).memorized_ids())
    for m in report["models"]:
        flags = flag_examples(RunDir(dst), model=m["model"])
        flagged = set(flags["example_id"][flags["flagged"]].tolist())
        assert m["n_flagged"] == len(flagged)
        assert m["flagged_share"] == len(flagged) / len(ids)
        assert m["target_memorized_flagged"] == len(mem & flagged)
        assert m["recall_of_target"] == len(mem & flagged) / len(mem)
    assert [m["model"] for m in report["models"]] == ["paper", "natural"]
