"""Property tests of kdmem.train.losses against direct formulas and torch's kl_div."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from kdmem.errors import InvalidArgumentError  # noqa: E402
from kdmem.train import losses  # noqa: E402

F = torch.nn.functional

shapes = st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(2, 9))
temps = st.sampled_from([0.5, 1.0, 2.0, 4.0])
kinds = st.sampled_from(losses.DIVERGENCES)


def _logits(seed: int, shape: tuple[int, ...], scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


@settings(max_examples=40, deadline=None)
@given(shapes, st.integers(0, 10_000), temps, kinds)
def test_divergence_is_nonnegative_and_zero_iff_equal(shape, seed, t, kind) -> None:
    s, te = _logits(seed, shape), _logits(seed + 1, shape)
    d = losses.divergence(s, te, kind, t)
    assert (d >= -1e-12).all()
    # equal distributions (logits equal up to a per-position shift) score 0
    same = losses.divergence(te + 5.0, te, kind, t)
    assert same.abs().max() < 1e-9
    # distinct distributions score > 0
    assert (d > 0).all() or torch.allclose(F.softmax(s / t, -1), F.softmax(te / t, -1))


@settings(max_examples=40, deadline=None)
@given(shapes, st.integers(0, 10_000), temps)
def test_forward_and_reverse_kl_equal_torch_kl_div(shape, seed, t) -> None:
    s, te = _logits(seed, shape), _logits(seed + 1, shape)
    ls, lt = F.log_softmax(s / t, -1), F.log_softmax(te / t, -1)
    fkl = F.kl_div(ls, lt, reduction="none", log_target=True).sum(-1)  # KL(teacher || student)
    rkl = F.kl_div(lt, ls, reduction="none", log_target=True).sum(-1)
    torch.testing.assert_close(losses.divergence(s, te, "fkl", t), fkl)
    torch.testing.assert_close(losses.divergence(s, te, "rkl", t), rkl)


def test_jsd_matches_its_definition_and_is_bounded() -> None:
    s, te = _logits(0, (2, 4, 7)), _logits(1, (2, 4, 7))
    p, q = F.softmax(te, -1), F.softmax(s, -1)
    for beta in (0.1, 0.5, 0.9):
        m = beta * p + (1 - beta) * q
        want = beta * (p * (p / m).log()).sum(-1) + (1 - beta) * (q * (q / m).log()).sum(-1)
        torch.testing.assert_close(losses.divergence(s, te, "jsd", beta=beta), want)
    half = losses.divergence(s, te, "jsd", beta=0.5)
    torch.testing.assert_close(half, losses.divergence(te, s, "jsd", beta=0.5))  # symmetric
    assert (half <= math.log(2) + 1e-12).all()
    with pytest.raises(InvalidArgumentError, match="beta"):
        losses.divergence(s, te, "jsd", beta=0.0)


@settings(max_examples=25, deadline=None)
@given(shapes, st.integers(0, 10_000), temps)
def test_t_squared_scaling_and_gradient(shape, seed, t) -> None:
    s = _logits(seed, shape).requires_grad_(True)
    te = _logits(seed + 1, shape)
    terms = losses.kd_terms(s, te, kind="fkl", temperature=t)
    torch.testing.assert_close(terms.loss, t**2 * losses.divergence(s, te, "fkl", t).sum())
    (g,) = torch.autograd.grad(terms.loss, s)
    # d/dz_s [T^2 KL(p_T || q_T)] = T (q_T - p_T): magnitudes comparable across T (Hinton)
    want = t * (F.softmax(s.detach() / t, -1) - F.softmax(te / t, -1))
    torch.testing.assert_close(g, want)


def _heads(seed: int, b: int, s: int, h: int, v: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    hs = torch.randn(b, s, h, generator=g, dtype=torch.float64)
    ws = torch.randn(v, h, generator=g, dtype=torch.float64)
    ht = torch.randn(b, s, h + 1, generator=g, dtype=torch.float64)
    wt = torch.randn(v, h + 1, generator=g, dtype=torch.float64)
    return hs, ws, ht, wt


@settings(max_examples=30, deadline=None)
@given(
    st.integers(0, 10_000),
    kinds,
    temps,
    st.sampled_from([0.0, 0.4]),
    st.integers(1, 7),
    st.booleans(),
)
def test_chunked_kd_loss_equals_full_logits(seed, kind, t, alpha, chunk, masked) -> None:
    hs, ws, ht, wt = _heads(seed, 2, 6, 4, 9)
    hs.requires_grad_(True)
    ws.requires_grad_(True)
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(2, 6, generator=g) > 0.3 if masked else None
    targets = torch.randint(0, 9, (2, 6), generator=g)
    kw = dict(kind=kind, temperature=t, alpha=alpha)
    full = losses.kd_terms(hs @ ws.T, ht @ wt.T, mask, targets, **kw)
    chunked = losses.chunked_kd_loss(hs, ws, ht, wt, mask, targets, chunk_size=chunk, **kw)
    torch.testing.assert_close(chunked.loss, full.loss)
    torch.testing.assert_close(chunked.kl, full.kl)
    torch.testing.assert_close(chunked.ce, full.ce)
    g_full = torch.autograd.grad(full.loss, (hs, ws))
    g_chunk = torch.autograd.grad(chunked.loss, (hs, ws))
    for a, b in zip(g_full, g_chunk, strict=True):
        torch.testing.assert_close(a, b)


def test_chunked_ce_equals_cross_entropy() -> None:
    hs, ws, _, _ = _heads(3, 2, 5, 4, 11)
    targets = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(0))
    ce = losses.chunked_ce_loss(hs, ws, targets, chunk_size=2)
    want = F.cross_entropy((hs @ ws.T).flatten(0, 1), targets.flatten(), reduction="sum")
    torch.testing.assert_close(ce.loss, want)
    assert float(ce.tokens) == 10


@pytest.mark.parametrize("kind", losses.DIVERGENCES)
def test_gradcheck_through_the_chunked_head(kind) -> None:
    hs, ws, ht, wt = _heads(5, 2, 3, 3, 5)
    mask = torch.tensor([[1, 0, 1], [1, 1, 1]], dtype=torch.bool)
    bias = torch.randn(5, dtype=torch.float64)

    def f(h, w, b):
        return losses.chunked_kd_loss(
            h, w, ht, wt, mask, kind=kind, temperature=2.0, chunk_size=2, student_bias=b
        ).loss

    assert torch.autograd.gradcheck(
        f, (hs.requires_grad_(), ws.requires_grad_(), bias.requires_grad_())
    )


def test_masked_positions_contribute_nothing() -> None:
    hs, ws, ht, wt = _heads(7, 2, 6, 4, 8)
    hs.requires_grad_(True)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[0, 4:] = False
    mask[1, 0] = False
    a = losses.chunked_kd_loss(hs, ws, ht, wt, mask, chunk_size=4)
    # changing the hidden states / teacher at padded positions changes nothing
    hs2 = hs.detach().clone()
    hs2[~mask] = 1e3
    ht2 = ht.clone()
    ht2[~mask] = -1e3
    b = losses.chunked_kd_loss(hs2, ws, ht2, wt, mask, chunk_size=4)
    torch.testing.assert_close(a.loss, b.loss)
    assert float(a.tokens) == int(mask.sum())
    (g,) = torch.autograd.grad(a.loss, hs)
    assert (g[~mask] == 0).all() and (g[mask] != 0).any()


def test_no_grad_evaluation_builds_no_graph() -> None:
    hs, ws, ht, wt = _heads(9, 1, 4, 3, 5)
    ws.requires_grad_(True)
    with torch.no_grad():
        out = losses.chunked_kd_loss(hs, ws, ht, wt, chunk_size=2)
    assert not out.loss.requires_grad
