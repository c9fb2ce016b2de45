"""How the index scales: build, memory, disk and queries from 10M to 2B tokens, 1 to 64 shards,
warm and cold (issue 14).

    .venv/bin/python benches/bench_scale.py [--max-tokens 2000000000] [--sizes 1e8,2e9] [--threads 2]
        [--memory 8GB] [--work /tmp/kdmem-bench-scale] [--queries 2000] [--keep]
        [--only real --goal1-corpus zipf --real-shards 1,64]

Corpora (both u16):

- ``real``: benches/bench_index.py's corpus (the Python standard library, then the installed
  packages' sources, headers and text, tokenized with a 16k byte-level BPE trained on them);
  capped at --real-tokens (default 100M: about all the text a virtual environment holds).
- ``zipf``: a synthetic token stream: ids drawn i.i.d. from a Zipf law (exponent 1.1) over a
  32,000-token vocabulary, documents of log-normal length (median 600 tokens), 3% of the
  documents starting with a copy of an earlier one (long exact repeats), seeded. Sizes 10M,
  100M, 1B, 2B tokens (up to --max-tokens), in shards of --shard-tokens (default 2^30, what
  ``kdmem shard`` writes).

Printed per configuration: build tokens/s (wall and per CPU-second) and peak RSS of the build
(a fresh child process, against --memory), bytes per token on disk (index files; index plus
shards) and in RAM (and its share of the index), ``count`` and ``longest_match`` p50/p99 warm
(after a warm-up pass) and cold (every file evicted from the page cache with
``posix_fadvise(DONTNEED)``, a fresh process, major page faults per query from
``getrusage``), ``count_many`` throughput at --threads, and ``featurize`` tokens/s at 1 and 2
threads. Then the goals of issue 14, each with its ratio:

1. 64 shards vs 1 shard of the same 100M real tokens (``--goal1-corpus zipf``: Zipfian
   tokens), built by one local ``kdmem index``, by a Slurm array's tasks one planned group
   each (``--group K``) and one shard each (``--shard K``): count median <= 3x, count_many
   >= 0.5x, longest match <= 3x (identical answers are checked on every query);
2. cold: <= 2 major faults per shard per count, in-RAM part <= 2% of the index;
3. build throughput at the largest size >= 0.7x the 100M-token throughput (same run, same
   budget), peak RSS within --memory.

Large temporaries are deleted after each size unless --keep. Timings on a shared machine are
noisy: compare the ratios, which come from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_index import child, corpus

M = 1_000_000


# ---- shard files ------------------------------------------------------------------------------


def write_shard_stream(
    path: Path, chunks: Iterator[np.ndarray], offsets: np.ndarray, vocab: int
) -> None:
    """One u16 shard (docs/formats.md, format version 1), streamed: the token chunks are
    written as they come and the CRC-32 is updated on the way, so memory stays one chunk."""
    n = int(offsets[-1])
    tmp = path.with_name(path.name + ".tmp")
    crc = 0
    with open(tmp, "wb") as f:
        f.write(bytes(128))
        written = 0
        for c in chunks:
            b = np.ascontiguousarray(c, dtype="<u2").tobytes()
            crc = zlib.crc32(b, crc)
            f.write(b)
            written += len(c)
        assert written == n, (written, n)
        pad = (-(128 + 2 * n)) % 8
        f.write(bytes(pad))
        off = offsets.astype("<u8").tobytes()
        crc = zlib.crc32(off, crc)
        f.write(off)
        head = struct.pack(
            "<8sIIQQQQIIII32s28s",
            b"KDMEMTOK", 1, 2, n, len(offsets) - 1, 128, 128 + 2 * n + pad,
            crc, vocab, 0xFFFFFFFF, 0, bytes(32), bytes(28),
        )  # fmt: skip
        head += struct.pack("<I", zlib.crc32(head))
        f.seek(0)
        f.write(head)
    tmp.rename(path)


def cut_points(offsets: np.ndarray, n_shards: int) -> list[int]:
    """Document indices where shards start: about equal tokens per shard."""
    n = int(offsets[-1])
    cuts = [0]
    for k in range(1, n_shards):
        cuts.append(int(np.searchsorted(offsets, n * k // n_shards)))
    cuts.append(len(offsets) - 1)
    return cuts


def write_real(d: Path, tokens: np.ndarray, offsets: np.ndarray, vocab: int, n_shards: int) -> None:
    d.mkdir(parents=True, exist_ok=True)
    cuts = cut_points(offsets, n_shards)
    for k in range(n_shards):
        a, b = int(offsets[cuts[k]]), int(offsets[cuts[k + 1]])
        o = offsets[cuts[k] : cuts[k + 1] + 1] - a
        write_shard_stream(d / f"shard-{k:05d}.kdt", iter([tokens[a:b]]), o, vocab)


ZIPF_VOCAB = 32_000


def zipf_docs(n_tokens: int, seed: int) -> tuple[np.ndarray, np.random.Generator]:
    """Document lengths (log-normal, median 600, 1..20,000 tokens) summing to n_tokens."""
    rng = np.random.default_rng(seed)
    lens: list[np.ndarray] = []
    total = 0
    while total < n_tokens:
        x = np.clip(rng.lognormal(np.log(600), 1.0, size=1 << 16), 1, 20_000).astype(np.int64)
        lens.append(x)
        total += int(x.sum())
    lengths = np.concatenate(lens)
    c = np.cumsum(lengths)
    k = int(np.searchsorted(c, n_tokens))
    lengths = lengths[: k + 1]
    lengths[-1] -= int(c[k]) - n_tokens
    return lengths[lengths > 0], rng


def write_zipf(d: Path, n_tokens: int, shard_tokens: int, seed: int = 0) -> None:
    """The Zipfian corpus in shards of about ``shard_tokens`` (whole documents)."""
    d.mkdir(parents=True, exist_ok=True)
    lengths, rng = zipf_docs(n_tokens, seed)
    ranks = np.arange(1, ZIPF_VOCAB + 1, dtype=np.float64)
    p = ranks**-1.1
    p /= p.sum()
    ids = rng.permutation(ZIPF_VOCAB).astype(np.uint16)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    shard_starts = [0]
    for i in range(1, len(offsets)):
        if offsets[i] - offsets[shard_starts[-1]] >= shard_tokens and i < len(offsets) - 1:
            shard_starts.append(i)
    shard_starts.append(len(offsets) - 1)

    for k in range(len(shard_starts) - 1):
        d0, d1 = shard_starts[k], shard_starts[k + 1]
        o = offsets[d0 : d1 + 1] - offsets[d0]

        def chunks(d0: int = d0, d1: int = d1) -> Iterator[np.ndarray]:
            step = 20_000
            for a in range(d0, d1, step):
                b = min(a + step, d1)
                lo, hi = int(offsets[a]), int(offsets[b])
                t = ids[rng.choice(ZIPF_VOCAB, size=hi - lo, p=p)]
                # 3% of the documents start with a copy of an earlier one of this chunk.
                for j in np.nonzero(rng.random(b - a) < 0.03)[0]:
                    if j == 0:
                        continue
                    src = int(rng.integers(0, j))
                    s0, s1 = int(offsets[a + src]) - lo, int(offsets[a + src + 1]) - lo
                    t0, t1 = int(offsets[a + j]) - lo, int(offsets[a + j + 1]) - lo
                    n = min(s1 - s0, t1 - t0)
                    t[t0 : t0 + n] = t[s0 : s0 + n]
                yield t

        write_shard_stream(d / f"shard-{k:05d}.kdt", chunks(), o, ZIPF_VOCAB)


def zipf_stream(work: Path, n_tokens: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The Zipfian corpus of ``n_tokens`` as one token array and its document offsets
    (written once as one shard in ``work``, then memory-mapped)."""
    d = work / f"zipf-stream-{n_tokens}"
    if not (d / "done").exists():
        shutil.rmtree(d, ignore_errors=True)
        write_zipf(d, n_tokens, n_tokens + 1)
        (d / "done").write_text("")
    toks, offs = doc_sampler(d)
    assert len(toks) == 1, len(toks)
    return toks[0], np.asarray(offs[0]), ZIPF_VOCAB


# ---- queries ----------------------------------------------------------------------------------


def doc_sampler(d: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Token and offset memmaps of every u16 shard file of ``d`` (header of docs/formats.md)."""
    toks, offs = [], []
    for p in sorted(d.glob("*.kdt")):
        with open(p, "rb") as f:
            head = f.read(128)
        n, n_docs, _, offsets_at = struct.unpack_from("<QQQQ", head, 16)
        toks.append(np.memmap(p, dtype="<u2", mode="r", offset=128, shape=(n,)))
        offs.append(np.memmap(p, dtype="<u8", mode="r", offset=offsets_at, shape=(n_docs + 1,)))
    return toks, offs


def make_queries(
    d: Path, n: int, vocab: int, seed: int = 0, lo: int = 5, hi: int = 61
) -> list[np.ndarray]:
    """Half windows of 5-60 tokens from random documents, half random ids (the issue's mix)."""
    toks, offs = doc_sampler(d)
    rng = np.random.default_rng(seed)
    qs: list[np.ndarray] = []
    while len(qs) < n:
        m = int(rng.integers(lo, hi))
        if len(qs) % 2 == 0:
            k = int(rng.integers(0, len(toks)))
            i = int(rng.integers(0, len(offs[k]) - 1))
            a, b = int(offs[k][i]), int(offs[k][i + 1])
            if b - a < m:
                continue
            s = int(rng.integers(a, b - m + 1))
            qs.append(np.asarray(toks[k][s : s + m], dtype=np.uint32))
        else:
            qs.append(rng.integers(0, vocab, size=m).astype(np.uint32))
    return qs


def make_windows(d: Path, n: int, vocab: int, seed: int = 1) -> list[np.ndarray]:
    """256-token corpus windows with every 20th token replaced (longest_match's workload)."""
    toks, _ = doc_sampler(d)
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    while len(out) < n:
        k = int(rng.integers(0, len(toks)))
        if len(toks[k]) < 300:
            continue
        s = int(rng.integers(0, len(toks[k]) - 256))
        w = np.asarray(toks[k][s : s + 256], dtype=np.int64)
        w[::20] = rng.integers(0, vocab, size=len(w[::20]))
        out.append(w)
    return out


def pct(x: list[float] | np.ndarray, q: float) -> float:
    return float(np.percentile(np.asarray(x), q))


def warm_queries(
    d: Path, qs: list[np.ndarray], wins: list[np.ndarray], threads: int
) -> dict[str, float]:
    """count and longest_match latencies (default threads, as a user calls them) and
    count_many throughput, after a warm-up pass over the same queries."""
    from kdmem.corpus.index import Index

    idx = Index(d)
    for q in qs:
        idx.count(q)
    idx.longest_match_many(wins[:20])
    lat = []
    for q in qs:
        t = time.perf_counter_ns()
        idx.count(q)
        lat.append((time.perf_counter_ns() - t) / 1e3)
    best, t_end = 0.0, time.perf_counter() + 1.0
    while time.perf_counter() < t_end:  # best of the batches of one second
        t = time.perf_counter()
        idx.count_many(qs, threads=threads)
        best = max(best, len(qs) / (time.perf_counter() - t))
    lm = []
    for w in wins:
        t = time.perf_counter_ns()
        idx.longest_match(w)
        lm.append((time.perf_counter_ns() - t) / 1e6)
    return {
        "count_p50_us": pct(lat, 50),
        "count_p99_us": pct(lat, 99),
        "count_many_qps": best,
        "lm_p50_ms": pct(lm, 50),
        "lm_p99_ms": pct(lm, 99),
        "units": len(idx.units),
        "shards": idx.n_shards,
        "ram_bytes": idx.ram_bytes,
        "disk_bytes": idx.disk_bytes,
        "index_bytes": sum(p.stat().st_size for p in d.glob("*.kdsa")),
        "tokens": idx.n_tokens,
    }


COLD_CHILD = r"""
import os, sys, time, resource, json
import numpy as np
from kdmem.corpus.index import Index

def evict(paths):
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)

d, qfile, wfile = sys.argv[1], sys.argv[2], sys.argv[3]
qs = [np.asarray(x, np.uint32) for x in json.load(open(qfile))]
wins = [np.asarray(x, np.int64) for x in json.load(open(wfile))]
idx = Index(d)
files = [str(p) for p in idx.files]
try:
    evict(files)
except (OSError, AttributeError) as e:
    print(json.dumps({"skipped": f"cannot evict the page cache: {e}"}))
    sys.exit(0)
maj = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_majflt
faults, lat, found = [], [], []
for q in qs:
    f0 = maj()
    t = time.perf_counter_ns()
    c = idx.count(q, threads=1)
    lat.append((time.perf_counter_ns() - t) / 1e3)
    faults.append(maj() - f0)
    found.append(c > 0)
evict(files)
lmf, lml = [], []
for w in wins:
    f0 = maj()
    t = time.perf_counter_ns()
    idx.longest_match(w, threads=1)
    lml.append((time.perf_counter_ns() - t) / 1e6)
    lmf.append(maj() - f0)
print(json.dumps({"faults": faults, "lat": lat, "found": found, "lm_faults": lmf, "lm_ms": lml,
                  "units": len(idx.units), "shards": idx.n_shards}))
"""


def cold_queries(
    d: Path, qs: list[np.ndarray], wins: list[np.ndarray], work: Path
) -> dict[str, float | str]:
    """The cold figures, from a fresh process whose index files were evicted first."""
    qf, wf = work / "cold-queries.json", work / "cold-windows.json"
    qf.write_text(json.dumps([q.tolist() for q in qs]))
    wf.write_text(json.dumps([w.tolist() for w in wins]))
    os.sync()
    out = subprocess.run(
        [sys.executable, "-c", COLD_CHILD, str(d), str(qf), str(wf)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if "skipped" in r:
        return {"skipped": r["skipped"]}
    f = np.asarray(r["faults"], dtype=np.float64)
    if f.sum() == 0:
        return {
            "skipped": "no major page faults after posix_fadvise(DONTNEED): eviction had no effect here"
        }
    found = np.asarray(r["found"])
    return {
        "cold_count_p50_us": pct(r["lat"], 50),
        "cold_count_p99_us": pct(r["lat"], 99),
        "faults_per_count": float(f.mean()),
        "faults_per_count_found": float(f[found].mean()) if found.any() else float("nan"),
        "faults_per_count_absent": float(f[~found].mean()) if (~found).any() else float("nan"),
        "faults_per_count_p99": pct(f, 99),
        "faults_per_unit_count": float(f.mean()) / r["units"],
        "faults_per_shard_count": float(f.mean()) / r["shards"],
        "cold_lm_p50_ms": pct(r["lm_ms"], 50),
        "cold_lm_p99_ms": pct(r["lm_ms"], 99),
        "faults_per_lm": float(np.mean(r["lm_faults"])),
    }


def build(d: Path, threads: int, memory: str, per_task: str = "") -> dict[str, float]:
    """Build in a fresh child process (peak RSS of the build alone). ``per_task``: one call
    per array task, in turn, as a Slurm array runs them: ``"shard"`` (``kdmem index DIR
    --shard K``: a unit per shard) or ``"group"`` (``kdmem index DIR --group K``: a unit per
    planned group)."""
    for p in d.glob("*.kdsa"):
        p.unlink()
    n = len(list(d.glob("*.kdt")))
    if per_task == "group":
        from kdmem.corpus.index import unit_groups

        n_groups = len(unit_groups(d))
        calls = [
            f"build_index({str(d)!r}, threads={threads}, memory={memory!r}, groups=[{g}])"
            for g in range(n_groups)
        ]
    elif per_task == "shard":
        calls = [
            f"build_index({str(d)!r}, threads={threads}, memory={memory!r}, shards=[{k}])"
            for k in range(n)
        ]
    else:
        calls = [f"build_index({str(d)!r}, threads={threads}, memory={memory!r})"]
    r = child(
        "import time; from kdmem.corpus.index import build_index\n"
        f"t=time.perf_counter(); reps = [{', '.join(calls)}]; rep = reps[-1]\n"
        "RESULT={'s': time.perf_counter()-t, 'units': sum(r['units'] for r in reps), "
        "'memory': rep['memory'], 'concurrency': rep['concurrency']}"
    )
    return r


def featurize_rate(d: Path, vocab: int, work: Path, n: int) -> dict[str, float]:
    """featurize (50 + 50 tokens, 8-gram overlap) of n corpus windows, a third with a random
    tail, at 1 and 2 threads: window tokens per second; the outputs must be identical. (The
    examples' text, for the zlib features, is their ids spelled out.)"""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kdmem.corpus.featurize import featurize

    toks, _ = doc_sampler(d)
    rng = np.random.default_rng(2)
    ex = []
    while len(ex) < n:
        k = int(rng.integers(0, len(toks)))
        if len(toks[k]) < 200:
            continue
        s = int(rng.integers(0, len(toks[k]) - 100))
        w = np.asarray(toks[k][s : s + 100], dtype=np.int64)
        if len(ex) % 3 == 2:
            w[50:] = rng.integers(0, vocab, size=50)
        ex.append(w)
    path = work / "scale-examples.parquet"
    pq.write_table(
        pa.table({"example_id": np.arange(len(ex), dtype=np.int64),
                  "input_ids": pa.array([w.tolist() for w in ex], pa.list_(pa.int64())),
                  # zlib features need text; the ids spelled out do (not the point here).
                  "text": [" ".join(map(str, w.tolist())) for w in ex]}),
        path,
    )  # fmt: skip
    out: dict[str, float] = {}
    tables = {}
    for _ in range(2):  # best of 2, interleaved so cache warmth and load drift hit both
        for th in (1, 2):
            f = work / f"scale-features-{th}.parquet"
            t = time.perf_counter()
            featurize(path, d, f, prefix=50, suffix=50, ngram=(8,), threads=th)
            tps = len(ex) * 100 / (time.perf_counter() - t)
            out[f"featurize_tps_{th}"] = max(out.get(f"featurize_tps_{th}", 0.0), tps)
            tables[th] = pq.read_table(f)
    assert tables[1].equals(tables[2]), "featurize output differs between 1 and 2 threads"
    return out


def same_answers(a: Path, b: Path, qs: list[np.ndarray], wins: list[np.ndarray]) -> bool:
    from kdmem.corpus.index import Index

    ia, ib = Index(a), Index(b)
    if ia.count_many(qs).tolist() != ib.count_many(qs).tolist():
        return False
    for x, y in zip(
        ia.longest_match_many(wins[:50]), ib.longest_match_many(wins[:50]), strict=True
    ):
        if not np.array_equal(x, y):
            return False
    for x, y in zip(
        ia.locate_many(qs[:200], limit=5), ib.locate_many(qs[:200], limit=5), strict=True
    ):
        if not all(np.array_equal(u, v) for u, v in zip(x[1:], y[1:], strict=True)):
            return False
    return True


def row(name: str, r: dict) -> str:
    def g(k: str, fmt: str = "{:.1f}") -> str:
        v = r.get(k)
        return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else fmt.format(v)

    return (
        f"| {name} | {r['tokens'] / M:,.0f}M | {r['shards']} / {r['units']} | "
        f"{r['build_tps'] / M:.2f}M ({r['build_tps_cpu'] / M:.2f}M/CPU-s) | "
        f"{r['build_rss_mb']:,.0f} MB | {r['index_bytes'] / r['tokens']:.2f} / "
        f"{r['disk_bytes'] / r['tokens']:.2f} | {r['ram_bytes'] / r['tokens']:.3f} "
        f"({100 * r['ram_bytes'] / r['disk_bytes']:.2f}%) | "
        f"{g('count_p50_us')} / {g('count_p99_us')} us | {g('cold_count_p50_us')} / {g('cold_count_p99_us')} us | "
        f"{g('faults_per_count', '{:.2f}')} ({g('faults_per_shard_count', '{:.3f}')}/shard) | "
        f"{g('lm_p50_ms', '{:.2f}')} / {g('lm_p99_ms', '{:.2f}')} ms | {g('cold_lm_p50_ms', '{:.1f}')} ms | "
        f"{r['count_many_qps'] / 1e3:.0f}k | "
        f"{g('featurize_tps_1', '{:,.0f}')} / {g('featurize_tps_2', '{:,.0f}')} |"
    )


HEADER = (
    "| corpus | tokens | shards / units | build tok/s | build peak RSS | B/token index / +shards | "
    "RAM B/token (of disk) | count p50/p99 warm | count p50/p99 cold | major faults per count | "
    "longest match p50/p99 warm | longest match p50 cold | count_many | featurize tok/s 1 / 2 threads |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def measure(name: str, d: Path, args: argparse.Namespace, vocab: int, per_task: str = "") -> dict:
    b = build(d, args.threads, args.memory, per_task)
    qs = make_queries(d, args.queries, vocab)
    wins = make_windows(d, args.windows, vocab)
    r = {"name": name, **warm_queries(d, qs, wins, args.threads)}
    r["build_s"] = b["s"]
    r["build_tps"] = r["tokens"] / b["s"]
    r["build_tps_cpu"] = r["tokens"] / b["cpu_s"]
    r["build_rss_mb"] = b["rss_mb"]
    r["build_rss_above_base_mb"] = b["rss_mb"] - b["base_mb"]
    r["budget_mb"] = b["memory"] / 2**20
    r["concurrency"] = b["concurrency"]
    if args.cold:
        r.update(cold_queries(d, qs[: args.cold_queries], wins[: args.cold_windows], args.work))
    if args.featurize:
        r.update(featurize_rate(d, vocab, args.work, args.featurize))
    print(row(name, r), flush=True)
    with open(args.work / "results.jsonl", "a") as f:
        f.write(json.dumps(r) + "\n")
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-tokens", type=float, default=2e9, help="largest Zipfian corpus")
    ap.add_argument(
        "--sizes",
        default="1e7,1e8,1e9,2e9",
        help="Zipfian sizes in tokens, comma-separated (those up to --max-tokens run)",
    )
    ap.add_argument("--real-tokens", type=float, default=1e8)
    ap.add_argument(
        "--goal1-corpus",
        choices=["real", "zipf"],
        default="real",
        help="tokens of the 1 / 8 / 64-shard comparison: bench_index.py's real corpus "
        "(cached in --work; slow to build the first time) or the Zipfian stream",
    )
    ap.add_argument(
        "--real-shards", default="1,8,64", help="shard counts of that comparison (1, 64 always)"
    )
    ap.add_argument("--shard-tokens", type=int, default=1 << 30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory", default="8GB")
    ap.add_argument("--work", type=Path, default=Path("/tmp/kdmem-bench-scale"))
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--windows", type=int, default=200)
    ap.add_argument("--cold-queries", type=int, default=1000)
    ap.add_argument("--cold-windows", type=int, default=20)
    ap.add_argument("--featurize", type=int, default=2000, help="examples (0: skip)")
    ap.add_argument("--no-cold", dest="cold", action="store_false")
    ap.add_argument("--only", choices=["real", "zipf"], default=None)
    ap.add_argument("--keep", action="store_true", help="keep the shards and indexes")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(
        f"bench_scale: threads {args.threads}, memory budget {args.memory}, work {args.work} "
        f"(results also in {args.work / 'results.jsonl'})\n\n{HEADER}",
        flush=True,
    )
    results: dict[str, dict] = {}

    # 1. Real text (or, with --goal1-corpus zipf, 100M Zipfian tokens): 1, 8 and 64 shards
    # of the same tokens.
    if args.only in (None, "real"):
        n_real = int(args.real_tokens)
        if args.goal1_corpus == "zipf":
            tokens, offsets, vocab = zipf_stream(args.work, n_real)
        else:
            tokens, offsets, vocab = corpus(args.work, n_real)
        kind = args.goal1_corpus
        n_real = len(tokens)
        dirs = {}
        shard_counts = sorted({1, 64, *(int(x) for x in args.real_shards.split(","))})
        for s in shard_counts:
            d = args.work / f"{kind}-{n_real}-{s}"
            if not d.exists():
                write_real(d, tokens, offsets, vocab, s)
            dirs[s] = d
            results[f"real-{s}"] = measure(f"{kind}, {s} shard(s)", d, args, vocab)
        del tokens, offsets
        qs = make_queries(dirs[1], args.queries, vocab)
        wins = make_windows(dirs[1], args.windows, vocab)
        same = [same_answers(dirs[1], dirs[s], qs, wins) for s in shard_counts[1:]]
        # The same 64 shards built by a Slurm array: one task per planned group (`kdmem
        # index DIR --group K`, what --emit-slurm runs), and one task per shard (`--shard K`:
        # 64 units, each searched by every query).
        results["real-64g"] = measure(
            f"{kind}, 64 shards built group by group", dirs[64], args, vocab, per_task="group"
        )
        same.append(same_answers(dirs[1], dirs[64], qs, wins))
        results["real-64u"] = measure(
            f"{kind}, 64 shards built one by one", dirs[64], args, vocab, per_task="shard"
        )
        same.append(same_answers(dirs[1], dirs[64], qs, wins))
        r64g, r64u = results["real-64g"], results["real-64u"]
        r1, r64 = results["real-1"], results["real-64"]

        def ratios(r: dict) -> str:
            return (
                f"count median {r['count_p50_us'] / r1['count_p50_us']:.2f}x (goal <= 3x), "
                f"count_many {r['count_many_qps'] / r1['count_many_qps']:.2f}x (goal >= 0.5x), "
                f"longest match {r['lm_p50_ms'] / r1['lm_p50_ms']:.2f}x (goal <= 3x)"
            )

        print(
            f"\ngoal 1 (64 vs 1 shard, same {n_real / M:.0f}M {kind} tokens), load average "
            f"{os.getloadavg()[0]:.2f}:\n"
            f"  one local build ({r64['units']} units): {ratios(r64)}\n"
            f"  built group by group, --group K ({r64g['units']} units): {ratios(r64g)}\n"
            f"  built shard by shard, --shard K ({r64u['units']} units): {ratios(r64u)}\n"
            f"  identical answers to 1 shard (count, locate, longest match; every build): "
            f"{all(same)}",
            flush=True,
        )
        if not args.keep:
            for d in dirs.values():
                shutil.rmtree(d)

    # 2. Zipfian stream: 10M .. max tokens.
    if args.only in (None, "zipf"):
        sizes = [int(float(x)) for x in args.sizes.split(",")]
        sizes = sorted(s for s in sizes if s <= args.max_tokens)
        for n in sizes:
            d = args.work / f"zipf-{n}"
            need = n * 9.2 + (1 << 30)  # shards 2 B/token, index 7.14 B/token, slack
            free = shutil.disk_usage(args.work).free + sum(
                p.stat().st_size for p in d.glob("*") if p.is_file()
            )
            if free < need:
                print(
                    f"(skipped {n / M:,.0f}M Zipfian tokens: {need / 2**30:.0f} GiB of disk "
                    f"needed, {free / 2**30:.0f} GiB free on {args.work})",
                    flush=True,
                )
                continue
            if not (d / "done").exists():
                shutil.rmtree(d, ignore_errors=True)
                t = time.perf_counter()
                write_zipf(d, n, args.shard_tokens)
                (d / "done").write_text("")
                print(
                    f"(wrote {n / M:,.0f}M Zipfian tokens in {time.perf_counter() - t:.0f} s)",
                    flush=True,
                )
            results[f"zipf-{n}"] = measure("zipf", d, args, ZIPF_VOCAB)
            if not args.keep:
                shutil.rmtree(d)
        done = [n for n in sizes if f"zipf-{n}" in results]
        if 100 * M in done and done[-1] > 100 * M:
            big, ref = results[f"zipf-{done[-1]}"], results[f"zipf-{100 * M}"]
            print(
                f"\ngoal 3 (build, {done[-1] / M:,.0f}M vs 100M Zipfian tokens, budget {args.memory}): "
                f"throughput {big['build_tps'] / ref['build_tps']:.2f}x wall, "
                f"{big['build_tps_cpu'] / ref['build_tps_cpu']:.2f}x per CPU-second (goal >= 0.7x); "
                f"peak RSS {big['build_rss_mb']:,.0f} MB of a {big['budget_mb']:,.0f} MB budget "
                f"({big['concurrency']} units sorted at once)",
                flush=True,
            )
    cold = [r for r in results.values() if "faults_per_count" in r]
    if cold:
        worst = max(r["faults_per_unit_count"] for r in cold)
        ram = max(r["ram_bytes"] / r["disk_bytes"] for r in results.values())
        print(
            f"goal 2 (cold): major faults per count per unit at most {worst:.2f}, per shard at most "
            f"{max(r['faults_per_shard_count'] for r in cold):.3f} (goal <= 2); in-RAM part at "
            f"most {100 * ram:.2f}% of the index (goal <= 2%)"
        )
    skipped = {r.get("skipped") for r in results.values() if "skipped" in r}
    for s in skipped:
        print(f"cold figures skipped: {s}")


if __name__ == "__main__":
    main()
