"""Atomic writes: every file kdmem produces appears complete under its final name or not at all.

Each writer writes a temporary file in the destination directory, fsyncs it and renames it
over the target (``os.replace``, atomic on POSIX). An interrupted write leaves at most a
hidden ``.NAME.*.tmp`` file, never a partial file under ``NAME``. OS errors become
:class:`~kdmem.errors.KdmemIOError` (``DiskFullError`` for ENOSPC) naming the path.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from kdmem.errors import DiskFullError, KdmemIOError

__all__ = [
    "io_error",
    "is_disk_full",
    "write_atomic",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_parquet_atomic",
]


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary path next to ``path``, fsync, then rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise io_error(path, e) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; outputs are meant to be shared
        write(tmp_path)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        raise io_error(path, e) from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def is_disk_full(e: BaseException) -> bool:
    """Whether ``e`` is a full disk: ENOSPC as an OSError, or as the text of a library's own
    error type (safetensors raises ``SafetensorError("... No space left on device ...")``)."""
    if isinstance(e, OSError):
        return e.errno == errno.ENOSPC
    text = str(e)
    return "No space left on device" in text or "os error 28" in text


def io_error(path: Path, e: OSError) -> KdmemIOError:
    """The one-line error for a failed write of ``path``: ``DiskFullError`` on ENOSPC."""
    if e.errno == errno.ENOSPC:
        return DiskFullError(
            f"no space left on the device while writing {path}; free space and rerun: "
            "finished work is kept and resumed"
        )
    return KdmemIOError(f"cannot write {path}: {e.strerror or e}; check the output path")


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""

    def write(p: Path) -> None:
        p.write_bytes(data)

    write_atomic(path, write)


def write_json_atomic(
    path: str | os.PathLike[str], obj: Any, *, sort_keys: bool = False, allow_nan: bool = False
) -> None:
    """Write ``obj`` as indented UTF-8 JSON atomically (NaN is an error unless allowed)."""
    text = json.dumps(obj, indent=2, allow_nan=allow_nan, ensure_ascii=False, sort_keys=sort_keys)
    write_bytes_atomic(path, (text + "\n").encode("utf-8"))


def write_parquet_atomic(path: str | os.PathLike[str], table: pa.Table) -> None:
    """Write a pyarrow table as Parquet atomically."""
    write_atomic(path, lambda p: pq.write_table(table, p))
