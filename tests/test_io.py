"""Atomic writers: complete file or nothing, errors as kdmem classes."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from kdmem.atomic import write_atomic, write_json_atomic
from kdmem.errors import DiskFullError, KdmemIOError


def test_json_round_trip_and_no_temp_left(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "a" / "x.json", {"b": 1, "a": [1, 2]}, sort_keys=True)
    assert json.loads((tmp_path / "a" / "x.json").read_text()) == {"a": [1, 2], "b": 1}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.json"]
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "n.json", {"x": float("nan")})
    assert not (tmp_path / "n.json").exists()


def test_failed_write_keeps_the_old_file_and_maps_enospc(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def full(p: Path) -> None:
        p.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError, match=r"out\.bin"):
        write_atomic(target, full)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]

    def denied(p: Path) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    with pytest.raises(KdmemIOError, match="cannot write"):
        write_atomic(target, denied)
    assert target.read_bytes() == b"old"
