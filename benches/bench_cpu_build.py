"""Portable wheel vs a CPU-specific build of kdmem, side by side on the same inputs.

    python benches/bench_cpu_build.py --python-a PORTABLE_PY --python-b NATIVE_PY
        [--mb 40] [--repeat 3] [--work /tmp/kdmem-bench-cpu]

PORTABLE_PY and NATIVE_PY are interpreters of two environments that each have a kdmem build
installed, e.g. the manylinux2014 wheel from `./dev.sh wheels` and a wheel built with

    RUSTFLAGS="-C target-cpu=native" CFLAGS="-march=native" maturin build --release -o /tmp/native

(the C libraries, classic zlib and libsais, take CFLAGS; the Rust code takes RUSTFLAGS). Each
round runs both builds once, in alternating order, in fresh child processes, on one thread:

- zlib: ``zlib_bytes`` of --mb MB of standard-library text;
- shard: ``shard_corpus`` of the same text with an 8k byte-level BPE;
- index: ``build_index`` of those shards;
- count: ``count_many`` of 20,000 n-grams (n 5..50, half from the corpus);
- longest_match: ``longest_match_many`` of 300 corpus windows of 256 tokens, every 20th token
  replaced.

Both builds must give identical outputs (digests compared, the portable build being the
oracle). Prints the median seconds per workload and B's speed-up over A; the machine note from
the README applies (shared 2-core VM: run it on a quiet machine for figures to record).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

WORKER = r"""
import hashlib, json, sys, time
from pathlib import Path
import numpy as np
import kdmem
from kdmem import _core
from kdmem.corpus import open_shards, shard_corpus
from kdmem.corpus.index import build_index

work = Path(sys.argv[1]); out = Path(sys.argv[2])
texts = json.loads((work / "texts.json").read_text())
times, digest = {}, {}

t = time.perf_counter(); sizes = kdmem.zlib_bytes(texts, threads=1); times["zlib"] = time.perf_counter() - t
digest["zlib"] = hashlib.sha256(sizes.tobytes()).hexdigest()

shards = out / "shards"
t = time.perf_counter()
shard_corpus([str(work / "corpus.jsonl")], str(work / "tokenizer.json"), str(shards), threads=1)
times["shard"] = time.perf_counter() - t
ss = open_shards(shards)
docs = [np.asarray(ss[i]) for i in range(len(ss))]
digest["shard"] = hashlib.sha256(b"".join(d.astype("<u4").tobytes() for d in docs)).hexdigest()

t = time.perf_counter(); build_index(shards, threads=1); times["index"] = time.perf_counter() - t
digest["index"] = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(shards.glob("*.kdsa")))).hexdigest()

idx = kdmem.Index(shards)
rng = np.random.default_rng(0)
flat = np.concatenate(docs)
queries = []
for i in range(20_000):
    n = int(rng.integers(5, 51))
    if i % 2 == 0:
        s = int(rng.integers(0, len(flat) - n)); queries.append(flat[s:s + n].astype(np.uint32))
    else:
        queries.append(rng.integers(0, 8000, size=n).astype(np.uint32))
t = time.perf_counter(); counts = idx.count_many(queries, threads=1); times["count"] = time.perf_counter() - t
digest["count"] = hashlib.sha256(counts.tobytes()).hexdigest()

seqs = []
for _ in range(300):
    s = int(rng.integers(0, len(flat) - 256)); q = flat[s:s + 256].astype(np.uint32).copy()
    q[::20] = rng.integers(0, 8000, size=len(q[::20])); seqs.append(q)
t = time.perf_counter(); lm = idx.longest_match_many(seqs, threads=1); times["longest_match"] = time.perf_counter() - t
digest["longest_match"] = hashlib.sha256(b"".join(a.tobytes() for a in lm)).hexdigest()

print(json.dumps({"times": times, "digest": digest, "zlib_version": _core.zlib_version(),
                  "n_tokens": int(ss.n_tokens), "kdmem": str(Path(kdmem.__file__).parent),
                  "text_bytes": sum(len(t.encode("utf-8")) for t in texts)}))
"""

WORKLOADS = ["zlib", "shard", "index", "count", "longest_match"]


def prepare(work: Path, mb: float) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from kdmem.stdlib_corpus import stdlib_documents

    work.mkdir(parents=True, exist_ok=True)
    stamp = work / f"prepared-{mb}"
    if stamp.exists():
        return
    texts = list(stdlib_documents("source", chunk_chars=3000, max_bytes=int(mb * 1e6)))
    (work / "texts.json").write_text(json.dumps(texts))
    with (work / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(
        texts[:2000],
        trainer=trainers.BpeTrainer(
            vocab_size=8000,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tok.save(str(work / "tokenizer.json"))
    stamp.write_text("ok")


def run(python: str, work: Path, out: Path) -> dict:
    if out.exists():
        subprocess.run(["rm", "-rf", str(out)], check=True)
    out.mkdir(parents=True)
    res = subprocess.run(
        [python, "-c", WORKER, str(work), str(out)], capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        raise SystemExit(f"{python} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python-a", required=True, help="interpreter with the portable build")
    ap.add_argument("--python-b", required=True, help="interpreter with the CPU-specific build")
    ap.add_argument("--label-a", default="portable (manylinux2014 wheel)")
    ap.add_argument("--label-b", default="target-cpu=native")
    ap.add_argument("--mb", type=float, default=40.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/kdmem-bench-cpu"))
    args = ap.parse_args()
    prepare(args.work, args.mb)
    results: dict[str, list[dict]] = {"a": [], "b": []}
    for r in range(args.repeat):
        order = ["a", "b"] if r % 2 == 0 else ["b", "a"]
        for which in order:
            py = args.python_a if which == "a" else args.python_b
            results[which].append(run(py, args.work, args.work / f"out-{which}"))
    a0, b0 = results["a"][0], results["b"][0]
    for which in ("a", "b"):
        for res in results[which]:
            assert res["digest"] == a0["digest"], (
                f"build {which} gave other outputs: {res['digest']}"
            )
    print(f"A = {args.label_a}: kdmem at {a0['kdmem']}, zlib {a0['zlib_version']}")
    print(f"B = {args.label_b}: kdmem at {b0['kdmem']}, zlib {b0['zlib_version']}")
    print(
        f"{a0['text_bytes'] / 1e6:.1f} MB of text (--mb {args.mb:g}; the standard library's "
        f"sources, one pass), {a0['n_tokens']:,} tokens, 1 thread, {args.repeat} rounds "
        "(alternating order); outputs identical across builds and rounds"
    )
    print(f"{'workload':<15}{'A median s':>12}{'B median s':>12}{'B speed-up':>12}")
    for w in WORKLOADS:
        ta = statistics.median(r["times"][w] for r in results["a"])
        tb = statistics.median(r["times"][w] for r in results["b"])
        print(f"{w:<15}{ta:>12.3f}{tb:>12.3f}{ta / tb:>11.2f}x")
    digest = hashlib.sha256(json.dumps(a0["digest"], sort_keys=True).encode()).hexdigest()[:12]
    print(f"output digest {digest}; started {time.strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
    sys.exit(main())
