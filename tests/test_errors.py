"""Every core error variant crosses the boundary as its own kdmem.errors class."""

from __future__ import annotations

import inspect

import pytest

import kdmem
from kdmem import _core, errors


def test_every_variant_maps_to_its_own_class_with_a_one_line_message() -> None:
    kinds = _core._error_kinds()
    assert len(kinds) == len(set(kinds)), "two variants share a class"
    for i, kind in enumerate(kinds):
        with pytest.raises(BaseException) as info:
            _core._raise_error_sample(i)
        exc = info.value
        assert type(exc).__name__ == kind
        msg = str(exc)
        assert msg and "\n" not in msg
        if kind == "KeyboardInterrupt":
            assert isinstance(exc, KeyboardInterrupt)
            assert "rerun" in msg
            continue
        assert isinstance(exc, kdmem.KdmemError)
        assert type(exc) is getattr(errors, kind)
        # Every sample names a value the user can act on (a path, token, field or argument).
        assert any(v in msg for v in ("part-0.jsonl", "70000", "threads", "ba9876543210"))


def test_every_python_class_is_reachable_from_kdmem_and_documented() -> None:
    classes = [
        c
        for _, c in inspect.getmembers(errors, inspect.isclass)
        if issubclass(c, errors.KdmemError)
    ]
    for c in classes:
        assert c.__doc__, c
        assert getattr(kdmem, c.__name__, c) is c


def test_out_of_range_sample_index_is_an_index_error() -> None:
    with pytest.raises(IndexError):
        _core._raise_error_sample(10_000)


def test_errors_keep_builtin_bases() -> None:
    assert issubclass(errors.MalformedRecordError, ValueError)
    assert issubclass(errors.KdmemIOError, OSError)
    assert issubclass(errors.DiskFullError, errors.KdmemIOError)
    assert str(errors.MissingFieldError("no field 'text'")) == "no field 'text'"
