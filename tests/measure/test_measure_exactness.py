"""Teacher-forced labels vs real greedy decoding (the oracle), on tiny trained models of
the three study architectures, in fp32; and the generate() pitfalls around EOS."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_memorizers import EOS, PREFIX, SUFFIX

from kdmem.measure import forward_scores, greedy_continuations, measure_tokens

ARCHS = ("gpt_neox", "olmo2", "qwen3")


def _labels_from_decode(decoded: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    same = decoded == tokens[:, PREFIX:]
    mem = same.all(1)
    return mem, np.where(mem, SUFFIX, (~same).argmax(1))


def _manual_greedy(model, prefixes: np.ndarray, n: int) -> np.ndarray:
    """Obviously-correct greedy decode: full forward each step, argmax, no cache, no EOS logic."""
    x = torch.as_tensor(prefixes)
    with torch.inference_mode():
        for _ in range(n):
            nxt = model(input_ids=x).logits[:, -1].argmax(-1, keepdim=True)
            x = torch.cat([x, nxt], 1)
    return x[:, prefixes.shape[1] :].numpy()


@pytest.mark.parametrize("arch", ARCHS)
def test_labels_equal_greedy_decode(arch, trained, study_set) -> None:
    model, _, loss = trained[arch]
    assert loss < 0.1, f"{arch} did not memorize the planted sequences (loss {loss})"
    cols, _ = measure_tokens(model, study_set.tokens, PREFIX, batch_size=16)
    for decoded in (
        greedy_continuations(model, study_set.tokens[:, :PREFIX], SUFFIX, batch_size=16),
        _manual_greedy(model, study_set.tokens[:, :PREFIX], SUFFIX),
    ):
        mem, fm = _labels_from_decode(decoded, study_set.tokens)
        np.testing.assert_array_equal(cols["memorized"], mem)
        np.testing.assert_array_equal(cols["first_mismatch"], fm)
    # The planted sequences are memorized (EOS inside the suffix included); each variant
    # fails exactly at its changed token.
    assert cols["memorized"][:24].all()
    assert cols["memorized"][study_set.eos_in_suffix].any()
    expected = np.array([(i * 5) % SUFFIX for i in range(12)])
    np.testing.assert_array_equal(cols["first_mismatch"][24:36], expected)


def test_generate_eos_pitfalls(trained, study_set) -> None:
    """min_new_tokens suppresses EOS (labels flip); a GenerationConfig(eos_token_id=None) is
    silently refilled from the model's generation_config (decoding stops at EOS). Only the
    keyword eos_token_id=None (what greedy_continuations passes) decodes plainly."""
    from transformers import GenerationConfig

    model, _, _ = trained["gpt_neox"]
    assert model.generation_config.eos_token_id == EOS
    tokens = study_set.tokens[:24]  # planted, all memorized
    x = torch.as_tensor(tokens[:, :PREFIX])
    am = torch.ones_like(x)
    with torch.inference_mode():
        suppressed = model.generate(
            input_ids=x,
            attention_mask=am,
            do_sample=False,
            max_new_tokens=SUFFIX,
            min_new_tokens=SUFFIX,
        )[:, PREFIX:].numpy()
        stopped = model.generate(
            input_ids=x,
            attention_mask=am,
            generation_config=GenerationConfig(
                do_sample=False, max_new_tokens=SUFFIX, eos_token_id=None
            ),
        )[:, PREFIX:].numpy()
        plain = model.generate(
            input_ids=x,
            attention_mask=am,
            do_sample=False,
            max_new_tokens=SUFFIX,
            eos_token_id=None,
        )[:, PREFIX:].numpy()
    cols, _ = measure_tokens(model, tokens, PREFIX)
    mem_suppressed, _ = _labels_from_decode(suppressed, tokens)
    has_eos = study_set.eos_in_suffix[:24]
    # Every planted suffix with an EOS flips to "not memorized"; the others do not.
    np.testing.assert_array_equal(mem_suppressed, ~has_eos)
    # Decoding stopped at the first EOS: all sequences stopped (then padded) or truncated.
    assert stopped.shape[1] < SUFFIX or not (stopped == tokens[:, PREFIX:]).all()
    mem_plain, _ = _labels_from_decode(plain, tokens)
    np.testing.assert_array_equal(mem_plain, cols["memorized"])


def test_scores_match_direct_formulas(trained, study_set) -> None:
    model, _, _ = trained["olmo2"]
    x = torch.as_tensor(study_set.tokens)
    out = forward_scores(model, x, PREFIX, seq_chunk=5)
    with torch.inference_mode():
        logp = model(input_ids=x).logits[:, :-1].double().log_softmax(-1)
    tok = logp.gather(-1, x[:, 1:, None]).squeeze(-1).numpy()
    n = x.shape[1] - 1
    np.testing.assert_allclose(out["seq_logprob"], tok.sum(1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        out["suffix_logprob"], tok[:, PREFIX - 1 :].sum(1), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(out["ppl_window"], np.exp(-tok.sum(1) / n), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        out["ppl_suffix"], np.exp(-tok[:, PREFIX - 1 :].sum(1) / SUFFIX), rtol=1e-5
    )
    k = max(1, int(0.2 * n))
    np.testing.assert_allclose(
        out["mink_logprob"], np.sort(tok, 1)[:, :k].mean(1), rtol=1e-5, atol=1e-5
    )
    ent = -(logp.exp() * logp).sum(-1).numpy()
    kk = min(50, n)
    np.testing.assert_allclose(
        out["entropy_last_k"], ent[:, n - kk :].mean(1), rtol=1e-4, atol=1e-6
    )
    assert (out["tie_gap"] >= 0).all()
    hits = logp[:, PREFIX - 1 :].argmax(-1).numpy() == study_set.tokens[:, PREFIX:]
    np.testing.assert_array_equal(out["tf_match_frac"], hits.mean(1))
    assert (out["tf_match_frac"][out["memorized"]] == 1.0).all()
    # A Workspace reused across batches of different sizes and chunkings changes nothing.
    from kdmem.measure.scores import Workspace

    ws = Workspace()
    for rows, chunk, ref, rev in (
        (x, 5, None, False),
        (x[:3], 7, model, False),
        (x, 4, model, True),
    ):
        plain = forward_scores(model, rows, PREFIX, seq_chunk=chunk, reference=ref, reverse_kl=rev)
        reused = forward_scores(
            model, rows, PREFIX, seq_chunk=chunk, reference=ref, reverse_kl=rev, workspace=ws
        )
        assert plain.keys() == reused.keys()
        for k in plain:
            np.testing.assert_array_equal(plain[k], reused[k], err_msg=k)
    # Entropy is only computed where entropy_last_k reads it: a K that starts inside a
    # sequence chunk, with and without a reference model (which needs p everywhere).
    for ref in (None, model):
        part = forward_scores(model, x, PREFIX, seq_chunk=5, entropy_k=7, reference=ref)
        np.testing.assert_allclose(
            part["entropy_last_k"], ent[:, n - 7 :].mean(1), rtol=1e-4, atol=1e-6
        )


def test_independent_of_batch_size_and_seq_chunk(trained, study_set) -> None:
    model, _, _ = trained["qwen3"]
    ref, _, _ = trained["gpt_neox"]
    a, _ = measure_tokens(model, study_set.tokens, PREFIX, batch_size=48, reference=ref)
    b, used = measure_tokens(
        model, study_set.tokens, PREFIX, batch_size=7, seq_chunk=3, reference=ref
    )
    assert used == [7]
    for key in a:
        if key in ("memorized", "first_mismatch"):
            np.testing.assert_array_equal(a[key], b[key])
        else:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_labels_only_path_equals_full_pass(arch, trained, study_set) -> None:
    from kdmem.measure import teacher_forced_labels

    model, _, _ = trained[arch]
    cols, _ = measure_tokens(model, study_set.tokens, PREFIX)
    mem, fm = teacher_forced_labels(model, torch.as_tensor(study_set.tokens), PREFIX, seq_chunk=3)
    np.testing.assert_array_equal(mem, cols["memorized"])
    np.testing.assert_array_equal(fm, cols["first_mismatch"])


def test_out_of_memory_halves_the_batch_and_keeps_results(trained, study_set, monkeypatch) -> None:
    import kdmem.measure.extract as ex

    model, _, _ = trained["gpt_neox"]
    want, _ = measure_tokens(model, study_set.tokens, PREFIX, batch_size=48)
    real = ex.forward_scores

    def small_device(m, x, *a, **k):
        if x.shape[0] > 10:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(m, x, *a, **k)

    monkeypatch.setattr(ex, "forward_scores", small_device)
    got, used = measure_tokens(model, study_set.tokens, PREFIX, batch_size=48)
    assert used == [6]  # 48 -> 24 -> 12 -> 6
    np.testing.assert_array_equal(got["first_mismatch"], want["first_mismatch"])
    np.testing.assert_allclose(got["seq_logprob"], want["seq_logprob"], rtol=1e-5)


def test_static_and_dynamic_kv_cache_decode_alike(trained, study_set) -> None:
    model, _, _ = trained["qwen3"]
    prefixes = study_set.tokens[:20, :PREFIX]
    a = greedy_continuations(model, prefixes, SUFFIX + 4, cache="static", batch_size=8)
    b = greedy_continuations(model, prefixes, SUFFIX + 4, cache="dynamic", batch_size=20)
    np.testing.assert_array_equal(a, b)


def test_verify_labels_counts_flips_and_rechecks_every_near_tie(trained, study_set) -> None:
    from kdmem.measure import verify_labels

    model, _, _ = trained["olmo2"]
    cols, _ = measure_tokens(model, study_set.tokens, PREFIX)
    mem = cols["memorized"].copy()
    gap = np.full(len(mem), 10.0)
    gap[[3, 30]] = 0.0  # two "near-ties", one of them with a wrong label
    mem[3] = ~mem[3]
    info = verify_labels(
        model,
        study_set.tokens,
        study_set.ids,
        PREFIX,
        mem,
        cols["first_mismatch"],
        gap,
        k=0,
        tie_threshold=0.01,
    )
    assert (info["n_random"], info["n_near_tie"], info["n_checked"]) == (0, 2, 2)
    assert info["n_flips"] == 1 and info["flip_rate"] == 0.5
    assert info["flipped_ids"] == [int(study_set.ids[3])]


def test_decoded_match_frac_equals_a_position_by_position_greedy_oracle(trained, study_set) -> None:
    """The partial score of Biderman et al. 2023: the decode of every example (memorized
    ones included, which the implementation does not decode) compared position by position."""
    from kdmem.measure.generate import decoded_match_frac

    model, _, _ = trained["qwen3"]
    cols, _ = measure_tokens(model, study_set.tokens, PREFIX, batch_size=16)
    got = decoded_match_frac(model, study_set.tokens, PREFIX, cols["memorized"], batch_size=7)
    want = (
        _manual_greedy(model, study_set.tokens[:, :PREFIX], SUFFIX) == study_set.tokens[:, PREFIX:]
    ).mean(1)
    np.testing.assert_array_equal(got, want)
    assert (got[cols["memorized"]] == 1.0).all() and (got[~cols["memorized"]] < 1.0).all()
    # the changed-token variants keep the tokens before their change at least
    fm = cols["first_mismatch"][24:36]
    assert (got[24:36] >= fm / SUFFIX).all()
