"""Tiny models, a locally trained tokenizer and token data for the training-recipe tests.

Everything is built offline in a session temp dir: a byte-level BPE tokenizer (~300 ids),
one base model per study architecture (GPT-NeoX, OLMo-2, Qwen-3; hidden 32, 2 layers), and
``.npy`` study sets of random tokens in which one "planted" sequence repeats.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

ARCHS = ("gpt_neox", "olmo2", "qwen3")
SEQ = 24


@dataclass(frozen=True)
class Env:
    root: Path
    tokenizer: Path
    vocab: int
    models: dict[str, Path]
    train: Path  # [32, SEQ] random tokens, rows 0..7 = the planted sequence
    val: Path  # [8, SEQ]
    planted: np.ndarray  # [SEQ]

    def model(self, arch: str) -> Path:
        return self.models[arch]


def _texts(seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "eta",
        "theta",
        "iota",
        "kappa",
        "lambda",
        "mu",
        "nu",
        "xi",
    ]
    return [" ".join(rng.choice(words, 24)) for _ in range(200)]


def make_model(
    root: Path, name: str, arch: str, tokenizer: Path, *, hidden: int = 32, rows: int | None = None
) -> Path:
    """Save a seeded tiny model of ``arch`` with the tokenizer at ``tokenizer``; ``rows``
    lm-head rows (default: the tokenizer size)."""
    from kdmem.models.load import save_model
    from kdmem.models.tiny import build_model, tiny_config
    from kdmem.models.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer)
    cfg = tiny_config(arch, rows or len(tok), hidden_size=hidden, num_layers=2, num_heads=2)
    model = build_model(cfg, seed=zlib.crc32(name.encode()) % 1000)
    return save_model(model, root / name, tok)


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    from transformers.utils import logging as hf_logging

    from kdmem.models.tokenizer import load_tokenizer, train_tokenizer

    hf_logging.disable_progress_bar()
    root = tmp_path_factory.mktemp("train")
    tok_dir = train_tokenizer(_texts(0), 300, root / "tokenizer")
    vocab = len(load_tokenizer(tok_dir))
    models = {arch: make_model(root, f"base-{arch}", arch, tok_dir) for arch in ARCHS}
    rng = np.random.default_rng(0)
    planted = rng.integers(1, vocab, SEQ)
    data = rng.integers(1, vocab, (32, SEQ))
    data[:8] = planted
    np.save(root / "train.npy", data)
    np.save(root / "val.npy", rng.integers(1, vocab, (8, SEQ)))
    return Env(root, tok_dir, vocab, models, root / "train.npy", root / "val.npy", planted)


def safetensors_equal(a: Path, b: Path) -> tuple[bool, float]:
    """(bitwise equal, max abs difference) of two saved models' tensors."""
    from safetensors.torch import load_file

    sa, sb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert sa.keys() == sb.keys()
    same = all(torch.equal(sa[k], sb[k]) for k in sa)
    diff = max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa)
    return same, diff
