"""Suffix-array index: kdmem vs tokengrams 0.3.3 on the same corpus and queries.

    .venv/bin/python benches/bench_index.py [--tokens 20000000] [--threads 2] [--work /tmp/kdmem-bench-index]

Corpus: the running Python's standard-library sources, then the installed packages' sources,
headers and text files (real text, no download), split into ~3,000-character documents, tokenized with a byte-level BPE (16k vocab) trained on them
(u16 tokens), cut at --tokens. kdmem gets --threads shards; tokengrams one memmap table.
Measured in the same run:

- build: tokens/s and peak RSS of a fresh child process per tool (ru_maxrss, kB);
- count: 10,000 n-grams, n in 5..100, half drawn from the corpus and half random; median
  latency of single calls, batch throughput at 1 and --threads threads. tokengrams is not
  document-aware (its counts may include matches across document boundaries), so the
  agreement rate is printed rather than asserted;
- longest_match: 1,000 sequences of 256 tokens (corpus windows with every 20th token replaced);
- featurize: --featurize-examples study examples (100-token corpus windows, a third with a
  random tail) at 1 and --threads threads, identical output;
- infini-gram 2.6.0 (unless --no-infini-gram): its suffix-array step on the same tokens, count
  latency, creativity() against longest_match, and kdmem.Index opening its files.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import sysconfig
import time
import zlib
from pathlib import Path

import numpy as np

from kdmem.stdlib_corpus import stdlib_documents


def write_kdt(path: Path, tokens: np.ndarray, offsets: np.ndarray, vocab: int) -> None:
    """One u16 shard, format version 1 (docs/formats.md)."""
    tok = tokens.astype("<u2").tobytes()
    off = offsets.astype("<u8").tobytes()
    pad = (-(128 + len(tok))) % 8
    head = struct.pack(
        "<8sIIQQQQIIII32s28s",
        b"KDMEMTOK", 1, 2, len(tokens), len(offsets) - 1, 128, 128 + len(tok) + pad,
        zlib.crc32(tok + off), vocab, 0xFFFFFFFF, 0, bytes(32), bytes(28),
    )  # fmt: skip
    head += struct.pack("<I", zlib.crc32(head))
    path.write_bytes(head + tok + bytes(pad) + off)


def tokenizer_path(work: Path, n_tokens: int) -> Path:
    return work / f"tokenizer-v2-{n_tokens}.json"


def corpus(work: Path, n_tokens: int) -> tuple[np.ndarray, np.ndarray, int]:
    cache = work / f"corpus-v2-{n_tokens}.npz"
    if cache.exists() and tokenizer_path(work, n_tokens).exists():
        z = np.load(cache)
        return z["tokens"], z["offsets"], int(z["vocab"])
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    docs = list(stdlib_documents(kind="source", chunk_chars=3000))
    # More real text than the stdlib alone: the installed packages' Python sources, then
    # their stubs, C/C++/CUDA headers and sources, and text files (~420 MB on this venv).
    purelib = Path(sysconfig.get_paths()["purelib"])
    chars = sum(map(len, docs))
    for ext in ("py", "pyi", "h", "hpp", "cuh", "c", "cpp", "txt", "md", "rst", "js"):
        for p in sorted(purelib.rglob(f"*.{ext}")):
            if chars > n_tokens * 4:
                break
            text = p.read_text(encoding="utf-8", errors="replace")
            docs.extend(text[i : i + 3000] for i in range(0, len(text), 3000))
            chars += len(text)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=16384, show_progress=False)
    tok.train_from_iterator(docs[:20000], trainer)
    parts, lengths, total = [], [], 0
    for i in range(0, len(docs), 2000):
        for enc in tok.encode_batch(docs[i : i + 2000]):
            parts.append(np.asarray(enc.ids, dtype=np.uint16))
            lengths.append(len(enc.ids))
            total += len(enc.ids)
        if total >= n_tokens:
            break
    tokens = np.concatenate(parts)[:n_tokens]
    offsets = np.minimum(np.concatenate([[0], np.cumsum(lengths)]), len(tokens))
    offsets = offsets[: np.searchsorted(offsets, len(tokens)) + 1]
    np.savez(cache, tokens=tokens, offsets=offsets, vocab=tok.get_vocab_size())
    tok.save(str(tokenizer_path(work, n_tokens)))
    return tokens, offsets, tok.get_vocab_size()


def child(code: str, env: dict[str, str] | None = None) -> dict[str, float]:
    """Run `code` (first line: its imports) in a fresh interpreter; it sets RESULT, a dict;
    add the peak RSS of the rest (MB) and the RSS before it."""
    # Peak RSS of the build alone: reset the high-water mark after the imports
    # (/proc/self/clear_refs "5"), then report VmHWM minus the RSS at that moment.
    head = (
        "import re, resource\n"
        "def _kb(f): return int(re.search(f + r':\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "BASE = _kb('VmRSS')\n"
    )
    tail = (
        "\nimport json as _j\n"
        "RESULT['base_mb'] = BASE / 1024\n"
        "RESULT['rss_mb'] = _kb('VmHWM') / 1024\n"
        "_ru, _rc = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "RESULT['cpu_s'] = _ru.ru_utime + _ru.ru_stime + _rc.ru_utime + _rc.ru_stime\n"
        "print(_j.dumps(RESULT))"
    )
    imports, _, body = code.partition("\n")
    wrapped = imports + "\n" + head + body + tail
    out = subprocess.run(
        [sys.executable, "-c", wrapped],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=20_000_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/kdmem-bench-index"))
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--featurize-examples", type=int, default=10_000)
    ap.add_argument("--no-infini-gram", dest="infini_gram", action="store_false")
    args = ap.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    tokens, offsets, vocab = corpus(work, args.tokens)
    n = len(tokens)
    print(f"corpus: {n:,} tokens, {len(offsets) - 1:,} documents, vocab {vocab} (stdlib sources)")

    # kdmem: --threads shards, split at document boundaries.
    kd = work / "kdmem"
    if kd.exists():
        for p in kd.iterdir():
            p.unlink()
    kd.mkdir(exist_ok=True)
    cuts = [
        0,
        *(
            int(offsets[np.searchsorted(offsets, n * k // args.threads)])
            for k in range(1, args.threads)
        ),
        n,
    ]
    for k in range(args.threads):
        a, b = cuts[k], cuts[k + 1]
        o = offsets[(offsets >= a) & (offsets <= b)] - a
        write_kdt(kd / f"shard-{k:05d}.kdt", tokens[a:b], o, vocab)
    r = child(
        "import time; from kdmem.corpus.index import build_index\n"
        f"t=time.perf_counter(); build_index({str(kd)!r}, threads={args.threads})\n"
        "RESULT={'s': time.perf_counter()-t}"
    )
    print(
        f"build   kdmem       {n / r['s'] / 1e6:6.2f} M tokens/s  {r['s']:6.2f} s ({n / r['cpu_s'] / 1e6:.2f} M tokens per CPU-second)  peak RSS {r['rss_mb']:7.0f} MB, {r['rss_mb'] - r['base_mb']:6.0f} MB above the interpreter ({(r['rss_mb'] - r['base_mb']) * 2**20 / n:.1f} B/token)"
    )
    kd_build = r

    tg_text = work / "tokens.u16"
    tokens.astype("<u2").tofile(tg_text)
    tg_table = work / "tokens.table"
    r = child(
        "import time, tokengrams\n"
        f"t=time.perf_counter(); tokengrams.MemmapIndex.build({str(tg_text)!r}, {str(tg_table)!r}, vocab=2**16)\n"
        "RESULT={'s': time.perf_counter()-t}",
        env={"RAYON_NUM_THREADS": str(args.threads)},
    )
    print(
        f"build   tokengrams  {n / r['s'] / 1e6:6.2f} M tokens/s  {r['s']:6.2f} s ({n / r['cpu_s'] / 1e6:.2f} M tokens per CPU-second)  peak RSS {r['rss_mb']:7.0f} MB, {r['rss_mb'] - r['base_mb']:6.0f} MB above the interpreter ({(r['rss_mb'] - r['base_mb']) * 2**20 / n:.1f} B/token)"
    )
    print(
        f"build   ratio       {r['s'] / kd_build['s']:.1f}x faster, {(kd_build['rss_mb'] - kd_build['base_mb']) / (r['rss_mb'] - r['base_mb']):.2f}x the memory (above the interpreter)"
    )

    import tokengrams

    from kdmem.corpus.index import Index

    idx = Index(kd)
    tg = tokengrams.MemmapIndex(str(tg_text), str(tg_table), vocab=2**16)
    rng = np.random.default_rng(0)
    qs: list[np.ndarray] = []
    while len(qs) < args.queries:
        m = int(rng.integers(5, 101))
        if len(qs) % 2 == 0:
            d = int(rng.integers(0, len(offsets) - 1))
            a, b = int(offsets[d]), int(offsets[d + 1])
            if b - a < m:
                continue
            s = int(rng.integers(a, b - m + 1))
            qs.append(tokens[s : s + m].astype(np.int64))
        else:
            qs.append(rng.integers(0, vocab, size=m))
    lists = [q.tolist() for q in qs]
    for f in (lambda q: idx.count(q), lambda q: tg.count(q)):
        for q in lists[:50]:
            f(q)
    lat_k, lat_t, agree = [], [], 0
    for q, ql in zip(qs, lists, strict=True):
        t = time.perf_counter_ns()
        a = idx.count(q)
        lat_k.append(time.perf_counter_ns() - t)
        t = time.perf_counter_ns()
        b = tg.count(ql)
        lat_t.append(time.perf_counter_ns() - t)
        agree += a == b
    mk, mt = np.median(lat_k) / 1e3, np.median(lat_t) / 1e3
    print(
        f"count   median latency kdmem {mk:.1f} us, tokengrams {mt:.1f} us ({mt / mk:.2f}x); same count for {agree / len(qs):.1%} of queries"
    )
    for th in sorted({1, args.threads}):
        t = time.perf_counter()
        idx.count_many(qs, threads=th)
        dt = time.perf_counter() - t
        print(f"count   batch of {len(qs):,}, {th} thread(s): {len(qs) / dt / 1e3:.0f}k queries/s")

    seqs = []
    for _ in range(1000):
        s = int(rng.integers(0, n - 256))
        w = tokens[s : s + 256].astype(np.int64)
        w[::20] = rng.integers(0, vocab, size=len(w[::20]))
        seqs.append(w)
    for th in sorted({1, args.threads}):
        t = time.perf_counter()
        ms = idx.longest_match_many(seqs, threads=th)
        dt = time.perf_counter() - t
        print(
            f"longest_match 1,000 x 256 tokens, {th} thread(s): {dt * 1e3 / len(seqs):.2f} ms per sequence (mean match {np.mean([m.mean() for m in ms]):.1f} tokens)"
        )

    featurize_scaling(args, work, kd, tokens, offsets, rng)
    if args.infini_gram:
        infini_gram(args, work, tokens, offsets, qs, seqs, idx)


def featurize_scaling(args, work, kd, tokens, offsets, rng) -> None:  # type: ignore[no-untyped-def]
    """`featurize` (prefix 50 + suffix 50, 8-gram overlap) of --featurize-examples study
    examples with input_ids and text, at 1 and --threads threads; outputs must be identical."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    from kdmem.corpus.featurize import featurize

    tok = Tokenizer.from_file(str(tokenizer_path(work, args.tokens)))
    # Training examples: 100-token corpus windows; every third gets a fresh 50-token tail.
    vocab = tok.get_vocab_size()
    ex = []
    while len(ex) < args.featurize_examples:
        d = int(rng.integers(0, len(offsets) - 1))
        a, b = int(offsets[d]), int(offsets[d + 1])
        if b - a < 100:
            continue
        s = int(rng.integers(a, b - 99))
        w = tokens[s : s + 100].astype(np.int64)
        if len(ex) % 3 == 2:
            w[50:] = rng.integers(0, vocab, size=50)
        ex.append(w)
    path = work / "featurize-examples.parquet"
    texts = tok.decode_batch([w.tolist() for w in ex], skip_special_tokens=False)
    pq.write_table(
        pa.table(
            {
                "example_id": np.arange(len(ex), dtype=np.int64),
                "input_ids": pa.array([w.tolist() for w in ex], pa.list_(pa.int64())),
                "text": texts,
            }
        ),
        path,
    )
    counts = sorted({1, args.threads})
    secs = {th: float("inf") for th in counts}
    for _ in range(2):  # best of 2, interleaved so cache warmth and load drift hit both
        for th in counts:
            out = work / f"features-{th}.parquet"
            t = time.perf_counter()
            featurize(path, kd, out, prefix=50, suffix=50, ngram=(8,), threads=th)
            secs[th] = min(secs[th], time.perf_counter() - t)
    outs = {th: pq.read_table(work / f"features-{th}.parquet") for th in counts}
    for th in counts:
        print(
            f"featurize {len(ex):,} examples (50+50 tokens), {th} thread(s): {secs[th]:6.2f} s, {len(ex) / secs[th]:,.0f} examples/s"
        )
    same = all(o.equals(outs[1]) for o in outs.values())
    print(
        f"featurize scaling 1 -> {args.threads} threads: {secs[1] / secs[args.threads]:.2f}x; outputs identical: {same}"
    )


def infini_gram(args, work, tokens, offsets, qs, seqs, idx) -> None:  # type: ignore[no-untyped-def]
    """infini-gram 2.6.0 on the same tokens: its suffix-array step (tokenization excluded, which
    flatters it), count latency, creativity() vs longest_match, and kdmem opening its files."""
    ig = work / "infini-gram"
    if ig.exists():
        for p in ig.iterdir():
            if p.is_file():
                p.unlink()
    ig.mkdir(exist_ok=True)
    # One document per kdmem document: separator \xff\xff then the u16 tokens.
    starts = offsets[:-1]
    sep_before = np.arange(len(starts), dtype=np.int64)
    out = np.full(len(tokens) + len(starts), 0xFFFF, dtype="<u2")
    mask = np.ones(len(out), dtype=bool)
    mask[starts + sep_before] = False
    out[mask] = tokens
    out.tofile(ig / "tokenized.0")
    (2 * (starts + sep_before)).astype("<u8").tofile(ig / "offset.0")
    n = len(tokens)
    r = child(
        "import argparse, time, resource, infini_gram.indexing as ix\n"
        "t=time.perf_counter()\n"
        f"ix.build_sa(argparse.Namespace(save_dir={str(ig)!r}, shards=1, workers=1, worker_id=0, "
        f"temp_dir={str(ig / 'tmp')!r}, mem=16, cpus={args.threads}, token_width=2))\n"
        "RESULT={'s': time.perf_counter()-t, 'child_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}"
    )
    print(
        f"build   infini-gram {n / r['s'] / 1e6:6.2f} M tokens/s  {r['s']:6.2f} s ({n / r['cpu_s'] / 1e6:.2f} M tokens per CPU-second)  peak RSS of its largest indexer process {r['child_mb']:7.0f} MB (suffix-array step only)"
    )
    from infini_gram.engine import InfiniGramEngine

    eng = InfiniGramEngine(index_dir=str(ig), eos_token_id=0)
    lists = [q.tolist() for q in qs]
    lat_k, lat_i, agree = [], [], 0
    for q, ql in zip(qs, lists, strict=True):
        t = time.perf_counter_ns()
        a = idx.count(q)
        lat_k.append(time.perf_counter_ns() - t)
        t = time.perf_counter_ns()
        b = eng.count(input_ids=ql)["count"]
        lat_i.append(time.perf_counter_ns() - t)
        agree += a == b
    mk, mi = np.median(lat_k) / 1e3, np.median(lat_i) / 1e3
    print(
        f"count   median latency kdmem {mk:.1f} us, infini-gram {mi:.1f} us ({mi / mk:.1f}x); same count for {agree / len(qs):.1%} of queries"
    )
    k = min(len(seqs), 200)
    t = time.perf_counter()
    rs = [eng.creativity(input_ids=s.tolist())["rs"] for s in seqs[:k]]
    dt_i = (time.perf_counter() - t) / k
    t = time.perf_counter()
    ms = idx.longest_match_many(seqs[:k], threads=1)
    dt_k = (time.perf_counter() - t) / k
    # creativity's rs[i] is the end (exclusive) of the longest match starting at i: i + ms[i].
    same = sum((m + np.arange(len(m))).tolist() == list(x) for m, x in zip(ms, rs, strict=True))
    print(
        f"longest_match vs creativity ({k} x 256 tokens, 1 thread): kdmem {dt_k * 1e3:.2f} ms, infini-gram {dt_i * 1e3:.2f} ms per sequence ({dt_i / dt_k:.1f}x); identical for {same}/{k}"
    )
    from kdmem.corpus.index import Index

    ig_idx = Index(ig)
    same = sum(ig_idx.count(q) == idx.count(q) for q in qs[:1000])
    print(
        f"kdmem.Index on the infini-gram files: same count as kdmem's own index for {same}/1000 queries"
    )


if __name__ == "__main__":
    main()
