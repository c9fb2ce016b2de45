"""Session fixtures: tiny GPT-NeoX, OLMo-2 and Qwen-3 models trained (plain CE, fixed seeds)
to memorize planted sequences, and a study set built around them: the planted sequences
(memorized), copies with one suffix token changed (first mismatch known), and fresh random
sequences (tiny_memorizers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_memorizers import StudySet, make_study_set, train_memorizer


@pytest.fixture(scope="session")
def study_set() -> StudySet:
    return make_study_set()


@pytest.fixture(scope="session")
def trained(study_set: StudySet, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """arch -> (model, saved directory, final loss)."""
    import torch

    from kdmem.models.load import save_model

    root = tmp_path_factory.mktemp("models")
    out = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: one thread is faster and kinder to a shared box
    try:
        for arch in ("gpt_neox", "olmo2", "qwen3"):
            model, loss = train_memorizer(arch, study_set.planted, steps=150)
            d = save_model(model, root / arch)
            out[arch] = (model, Path(d), loss)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="session")
def data_npy(study_set: StudySet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The study set as Parquet (example ids kept)."""
    from kdmem.corpus.examples import Examples, write_examples

    p = tmp_path_factory.mktemp("data") / "study.parquet"
    write_examples(Examples(study_set.ids, study_set.tokens), p)
    return p
