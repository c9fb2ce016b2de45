"""Tiny models of the study's architectures trained to memorize planted sequences, and the
study set built around them (shared by the tests in this directory)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VOCAB = 96
PREFIX = 16
SUFFIX = 16
EOS = 0


@dataclass
class StudySet:
    ids: np.ndarray  # int64 [N]
    tokens: np.ndarray  # int64 [N, PREFIX + SUFFIX]
    planted: np.ndarray  # int64 [n_planted, W] (training data)
    eos_in_suffix: np.ndarray  # bool [N]


def make_study_set(seed: int = 0) -> StudySet:
    rng = np.random.default_rng(seed)
    w = PREFIX + SUFFIX
    planted = rng.integers(1, VOCAB, size=(24, w))
    # Half of the planted suffixes contain the EOS id: the decode oracle must not stop there.
    for i in range(0, 24, 2):
        planted[i, PREFIX + rng.choice(SUFFIX, size=2, replace=False)] = EOS
    variants = planted[:12].copy()
    for i in range(12):
        j = PREFIX + (i * 5) % SUFFIX
        variants[i, j] = (variants[i, j] + 1 + rng.integers(0, VOCAB - 2)) % VOCAB
    fresh = rng.integers(0, VOCAB, size=(12, w))
    tokens = np.concatenate([planted, variants, fresh]).astype(np.int64)
    ids = np.arange(100, 100 + 3 * len(tokens), 3, dtype=np.int64)  # non-contiguous ids
    eos = (tokens[:, PREFIX:] == EOS).any(1)
    return StudySet(ids, tokens, planted.astype(np.int64), eos)


def train_memorizer(arch: str, planted: np.ndarray, steps: int = 300, seed: int = 0):
    import torch

    from kdmem.models.tiny import build_model, tiny_config

    torch.manual_seed(seed)
    model = build_model(tiny_config(arch, VOCAB, hidden_size=64, num_layers=2), seed=seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    x = torch.as_tensor(planted)
    for _ in range(steps):
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model, float(loss.detach())
