"""zlib entropy: kdmem.zlib_bytes (Rust, static classic zlib, N threads) vs a CPython loop.

    .venv/bin/python benches/bench_zlib.py [--mb 120] [--threads 2]

Corpus: the running Python's standard-library sources in ~1-4 KB documents (like the study's
256-token examples), cycled until --mb megabytes of UTF-8. Both sides see the same texts; the
values must be identical. Prints throughput and the ratio.
"""

from __future__ import annotations

import argparse
import time
import zlib

import numpy as np

import kdmem
from kdmem.stdlib_corpus import stdlib_documents


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=120.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    base = list(stdlib_documents(kind="source", chunk_chars=3000))
    target = int(args.mb * 1e6)
    texts: list[str] = []
    size = 0
    i = 0
    while size < target:
        t = base[i % len(base)]
        texts.append(t)
        size += len(t.encode("utf-8"))
        i += 1
    print(f"corpus: {len(texts):,} documents, {size / 1e6:.1f} MB (stdlib sources, cycled)")

    t0 = time.perf_counter()
    ref = np.fromiter(
        (len(zlib.compress(t.encode("utf-8"))) for t in texts), dtype=np.int64, count=len(texts)
    )
    t_py = time.perf_counter() - t0

    kdmem.zlib_bytes(texts[:1000], threads=args.threads)  # warm the thread pool
    t0 = time.perf_counter()
    got = kdmem.zlib_bytes(texts, threads=args.threads)
    t_kd = time.perf_counter() - t0

    assert np.array_equal(ref, got), "values differ from CPython zlib.compress"
    print(f"CPython zlib.compress loop : {t_py:7.2f} s  {size / 1e6 / t_py:7.1f} MB/s")
    print(f"kdmem.zlib_bytes threads={args.threads}: {t_kd:7.2f} s  {size / 1e6 / t_kd:7.1f} MB/s")
    print(f"ratio (kdmem / CPython throughput): {t_py / t_kd:.2f}x, values identical: True")


if __name__ == "__main__":
    main()
