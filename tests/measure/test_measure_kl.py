"""Chunked exact KL vs the direct full-logit formula; vocab alignment; peak memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdmem.errors import InvalidArgumentError, TokenizerMismatchError
from kdmem.measure import forward_scores, kl_per_token, naive_kl
from kdmem.measure.memory import TensorMeter
from kdmem.measure.scores import REFERENCE_PREFIX, Workspace
from kdmem.models.tiny import build_model, tiny_config
from kdmem.models.vocab import aligned_vocab


def test_kl_per_token_matches_formula() -> None:
    g = torch.Generator().manual_seed(0)
    p, q = torch.randn(3, 5, 40, generator=g), torch.randn(3, 5, 44, generator=g)
    fwd, rev = kl_per_token(p, q, 40, reverse=True)
    pp, qq = p.double().softmax(-1), q[..., :40].double().softmax(-1)
    np.testing.assert_allclose(fwd, (pp * (pp / qq).log()).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(rev, (qq * (qq / pp).log()).sum(-1), rtol=1e-5)
    assert (fwd >= -1e-6).all()
    assert torch.allclose(kl_per_token(p, p, 40)[0], torch.zeros(3, 5), atol=1e-5)


def test_forward_scores_kl_equals_naive(trained, study_set) -> None:
    a, _, _ = trained["gpt_neox"]
    b, _, _ = trained["qwen3"]
    x = torch.as_tensor(study_set.tokens)
    out = forward_scores(a, x, 16, reference=b, reverse_kl=True, seq_chunk=4)
    with torch.inference_mode():
        la, lb = a(input_ids=x).logits[:, :-1], b(input_ids=x).logits[:, :-1]
    np.testing.assert_allclose(out["kl_to_reference"], naive_kl(la, lb, 96), rtol=1e-4)
    np.testing.assert_allclose(out["kl_reference_to_model"], naive_kl(lb, la, 96), rtol=1e-4)


@pytest.mark.parametrize("chunk", [4, 7, 40])
def test_pair_mode_reference_scores_equal_its_own_pass(trained, study_set, chunk) -> None:
    a, _, _ = trained["olmo2"]
    b, _, _ = trained["gpt_neox"]
    x = torch.as_tensor(study_set.tokens)
    ws = Workspace()
    for rev in (False, True):
        pair = forward_scores(
            a,
            x,
            16,
            reference=b,
            reverse_kl=rev,
            reference_scores=True,
            seq_chunk=chunk,
            workspace=ws,
        )
        single = forward_scores(a, x, 16, reference=b, reverse_kl=rev, seq_chunk=chunk)
        alone = forward_scores(b, x, 16, seq_chunk=chunk)
        assert set(pair) == set(single) | {REFERENCE_PREFIX + k for k in alone}
        for k in single:  # the model's columns and the KL do not change
            np.testing.assert_array_equal(pair[k], single[k], err_msg=k)
        for k in alone:  # the reference's columns are those of its own pass
            np.testing.assert_array_equal(pair[REFERENCE_PREFIX + k], alone[k], err_msg=k)
    assert 0 < pair[REFERENCE_PREFIX + "memorized"].sum() < len(x)
    with pytest.raises(InvalidArgumentError, match="need a reference"):
        forward_scores(a, x, 16, reference_scores=True)


def _tiny_big_vocab(rows: int, seed: int):
    return build_model(
        tiny_config("qwen3", rows, hidden_size=16, num_heads=2, num_layers=1), seed=seed
    )


def test_vocab_alignment_ignores_padded_rows() -> None:
    tok_size = 151_936
    a, b = _tiny_big_vocab(151_936, 0), _tiny_big_vocab(152_064, 1)
    # The padded rows of b get a huge logit: had they entered the softmax, the KL would explode.
    with torch.no_grad():
        b.get_output_embeddings().weight[tok_size:] = 5.0
    vocab = aligned_vocab(tok_size, 151_936, 152_064)
    assert vocab == tok_size
    x = torch.randint(0, tok_size, (2, 12), generator=torch.Generator().manual_seed(0))
    out = forward_scores(a, x, 6, reference=b, vocab=vocab, seq_chunk=4)
    with torch.inference_mode():
        la, lb = a(input_ids=x).logits[:, :-1], b(input_ids=x).logits[:, :-1]
    np.testing.assert_allclose(out["kl_to_reference"], naive_kl(la, lb, tok_size), rtol=1e-4)
    assert out["kl_to_reference"].max() < 1.0
    with pytest.raises(TokenizerMismatchError):
        aligned_vocab(152_064, 151_936)
    # Pair mode: b's own scores use all of its rows (the padding included), as its own pass
    # does, while the KL stays on the shared vocabulary.
    pair = forward_scores(a, x, 6, reference=b, vocab=vocab, seq_chunk=4, reference_scores=True)
    alone = forward_scores(b, x, 6, seq_chunk=4)
    np.testing.assert_array_equal(pair["kl_to_reference"], out["kl_to_reference"])
    for k in alone:
        np.testing.assert_array_equal(pair[REFERENCE_PREFIX + k], alone[k], err_msg=k)
    assert alone["seq_logprob"].max() < -100  # the padded rows took the probability mass


def test_chunked_kl_peak_memory_at_qwen_vocab() -> None:
    v = 151_936
    a, b = _tiny_big_vocab(v, 0), _tiny_big_vocab(v, 1)
    x = torch.randint(0, v, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), TensorMeter() as naive:
        ref = naive_kl(a(input_ids=x).logits[:, :-1], b(input_ids=x).logits[:, :-1], v)
    with TensorMeter() as chunked:
        out = forward_scores(a, x, 32, reference=b, seq_chunk=8)
    np.testing.assert_allclose(out["kl_to_reference"], ref, rtol=1e-4)
    full_logits = 2 * 64 * v * 4
    assert naive.largest_bytes >= full_logits
    assert chunked.largest_bytes < full_logits / 4
    assert chunked.peak_bytes <= 0.5 * naive.peak_bytes, (chunked.peak_bytes, naive.peak_bytes)
