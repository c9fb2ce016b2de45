"""The cost of "corruption is caught before it answers" (issue 16) on a ~1 GB index.

    .venv/bin/python benches/bench_verify.py [--tokens 110000000] [--work /tmp/kdmem-bench-verify]

A Zipfian u16 corpus (benches/bench_scale.py's generator) is indexed with `kdmem index`; then:

- open with the verified stamp (the common case: `Index(d)` stats every file and compares
  size, mtime and inode with `.kdmem-verified.json`) vs the bare open without any check
  (`kdmem._core.Index`): the overhead every open pays;
- open after a file changed (the stamp removed): the full verification of every checksum
  (shards, suffix arrays, manifest) that then runs once;
- `count` median latency through the extension object and through `kdmem.Index`: the check
  is at open only, so the queries are the same code (the gap is the Python wrapper).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_scale import write_zipf
from kdmem import _core
from kdmem.corpus.index import Index, build_index
from kdmem.corpus.verified import STAMP


def timed(f, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def count_p50(idx, qs) -> float:
    for q in qs:
        idx.count(q)
    lat = []
    for q in qs:
        t = time.perf_counter_ns()
        idx.count(q)
        lat.append((time.perf_counter_ns() - t) / 1e3)
    return statistics.median(lat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=float, default=110e6)
    ap.add_argument("--work", type=Path, default=Path("/tmp/kdmem-bench-verify"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    d = a.work / "zipf"
    if not list(d.glob("*.kdsa")):
        shutil.rmtree(a.work, ignore_errors=True)
        write_zipf(d, int(a.tokens), shard_tokens=1 << 30)
        build_index(d, threads=a.threads, memory="8GB")
    size = sum(p.stat().st_size for p in d.iterdir() if p.suffix in (".kdt", ".kdsa"))
    print(f"index directory: {size / 1e9:.2f} GB ({int(a.tokens):,} tokens)")
    Index(d)  # writes the stamp if missing
    bare = timed(lambda: _core.Index(d, None))
    stamped = timed(lambda: Index(d))
    full = []
    for _ in range(2):
        (d / STAMP).unlink()
        t = time.perf_counter()
        Index(d)
        full.append(time.perf_counter() - t)
    rng = np.random.default_rng(0)
    qs = [rng.integers(0, 200, size=int(n)).astype(np.uint16) for n in rng.integers(1, 6, 2000)]
    raw = _core.Index(d, None)

    class Raw:
        def count(self, q):
            return raw.count(q, None)

    p50_bare, p50_checked = count_p50(Raw(), qs), count_p50(Index(d), qs)
    print(f"open, bare (no check):          {bare * 1e3:8.2f} ms")
    print(
        f"open, verified stamp (stat):    {stamped * 1e3:8.2f} ms  (+{(stamped - bare) * 1e3:.2f} ms)"
    )
    print(
        f"open after a change (full verify of every checksum): {min(full):.2f} s "
        f"({size / 1e6 / min(full):.0f} MB/s)"
    )
    # The stamp is checked at open only, so queries run the same code with or without it;
    # the two figures differ by the Python wrapper (`Index.count` -> `_core.Index.count`).
    print(
        f"count p50: extension object {p50_bare:.2f} us, kdmem.Index {p50_checked:.2f} us "
        "(the gap is the Python wrapper; no query checks the stamp)"
    )
    if not a.keep:
        shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
