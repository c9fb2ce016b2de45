"""zlib entropy of texts: the study's strongest single predictor of memorization.

``zlib_bytes(t) == len(zlib.compress(t.encode("utf-8")))`` at CPython's default level 6,
computed by the statically linked classic zlib in the Rust core on every core (Borkar et
al. 2026, following Carlini et al. 2021). ``kdmem doctor`` checks that the host Python's zlib
agrees.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt


def zlib_bytes(texts: Iterable[str | bytes], threads: int | None = None) -> npt.NDArray[np.int64]:
    """Compressed size in bytes of each text's UTF-8 encoding (zlib, level 6).

    Args:
        texts: strings (encoded as UTF-8) or raw bytes; any iterable.
        threads: worker threads; default ``KDMEM_NUM_THREADS`` or every core. The result
            does not depend on it.

    Returns:
        int64 array of shape ``(len(texts),)``.
    """
    # Imported here so `import kdmem` (and the numpy-only shard reader) works without the
    # extension.
    from kdmem import _core

    items = texts if isinstance(texts, list) else list(texts)
    return _core.zlib_bytes(items, threads)


def zlib_ratio(texts: Iterable[str], threads: int | None = None) -> npt.NDArray[np.float64]:
    """``zlib_bytes / utf8_bytes`` per text (0.0 for empty texts); lower = more repetitive."""
    items = texts if isinstance(texts, list) else list(texts)
    sizes = zlib_bytes(items, threads).astype(np.float64)
    raw = np.fromiter((len(t.encode("utf-8")) for t in items), dtype=np.float64, count=len(items))
    return np.divide(sizes, raw, out=np.zeros_like(sizes), where=raw > 0)
