"""zlib_bytes against the oracle: CPython's own zlib.compress at the default level."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kdmem


def oracle(texts: list[str]) -> list[int]:
    return [len(zlib.compress(t.encode("utf-8"))) for t in texts]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=2000), max_size=40))
def test_matches_cpython_on_unicode(texts: list[str]) -> None:
    got = kdmem.zlib_bytes(texts, threads=2)
    assert got.dtype == np.int64 and got.shape == (len(texts),)
    assert got.tolist() == oracle(texts)


def test_empty_long_and_repetitive_texts() -> None:
    rng = np.random.default_rng(0)
    random_text = "".join(map(chr, rng.integers(0x20, 0x2FFF, size=300_000)))
    texts = ["", "a", "ab" * 1_000_000, random_text, "\x00" * 10, "😀" * 5000]
    assert kdmem.zlib_bytes(texts).tolist() == oracle(texts)


def test_bytes_items_and_any_iterable() -> None:
    assert kdmem.zlib_bytes([b"abc", "abc"]).tolist() == [len(zlib.compress(b"abc"))] * 2
    assert kdmem.zlib_bytes(t for t in ["x", "yy"]).tolist() == oracle(["x", "yy"])


def test_identical_for_any_thread_count() -> None:
    texts = [f"line {i} " * (i % 50) for i in range(20_000)]
    one = kdmem.zlib_bytes(texts, threads=1)
    assert np.array_equal(one, kdmem.zlib_bytes(texts, threads=2))
    assert np.array_equal(one, kdmem.zlib_bytes(texts, threads=7))


def test_bad_items_and_thread_counts_are_clear_errors() -> None:
    with pytest.raises(TypeError, match="str or bytes"):
        kdmem.zlib_bytes([1, 2])  # type: ignore[list-item]
    with pytest.raises(kdmem.InvalidArgumentError, match="threads"):
        kdmem.zlib_bytes(["x"], threads=0)


def test_env_thread_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KDMEM_NUM_THREADS", "3")
    assert kdmem._core.resolve_threads(None) == 3
    monkeypatch.setenv("KDMEM_NUM_THREADS", "many")
    with pytest.raises(kdmem.InvalidArgumentError, match="KDMEM_NUM_THREADS"):
        kdmem._core.resolve_threads(None)


def test_zlib_ratio() -> None:
    r = kdmem.zlib_ratio(["", "abc" * 100])
    assert r[0] == 0.0
    assert r[1] == pytest.approx(len(zlib.compress(b"abc" * 100)) / 300)
