"""Synthetic run directories shared by the analysis tests (see kdmem.analysis.synthetic)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tests.analysis.synthetic import SyntheticSpec, write_synthetic_run

SPEC = SyntheticSpec(n=1500, seeds=3, rate_teacher=0.06, rate_baseline=0.04)


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only synthetic run (tests that modify a run copy it with ``run_copy``)."""
    return write_synthetic_run(tmp_path_factory.mktemp("runs") / "pythia", SPEC, seed=0)


@pytest.fixture(scope="session")
def predicted_run(tmp_path_factory: pytest.TempPathFactory, synthetic_run: Path) -> Path:
    """The synthetic run plus ``predictor/`` (20 resamples to stay fast)."""
    from kdmem.analysis import RunDir
    from kdmem.analysis.predictor import run_predict

    dst = tmp_path_factory.mktemp("runs") / "pythia"
    shutil.copytree(synthetic_run, dst)
    run_predict(RunDir(dst), resamples=20, seed=0)
    # The filter experiment as the study writes it; seed 1's soft student stands in for the
    # student re-distilled without the flagged examples.
    from kdmem.analysis.filter import compare_filtered, flag_examples, flag_summary
    from kdmem.atomic import write_json_atomic

    flags = flag_examples(RunDir(dst), threshold=0.5)
    flagged = sorted(int(i) for i in flags["example_id"][flags["flagged"]])
    models = [
        flag_summary(RunDir(dst), flag_examples(RunDir(dst), model=m), "student_soft_seed0")
        for m in ("paper", "natural")
    ]
    write_json_atomic(
        dst / "filter" / "flagged.json",
        {"threshold": 0.5, "model": "paper", "flagged": flagged, "models": models},
    )
    res = compare_filtered(RunDir(dst), "student_soft_seed0", "student_soft_seed1", flagged)
    write_json_atomic(dst / "filter" / "filter.json", res)
    return dst


@pytest.fixture
def run_copy(tmp_path: Path, synthetic_run: Path) -> Path:
    """A private, writable copy of the synthetic run."""
    dst = tmp_path / "run"
    shutil.copytree(synthetic_run, dst)
    return dst
