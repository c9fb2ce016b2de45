"""Token sharding: `kdmem shard` vs Python `tokenizers` encode_batch vs datatrove.

    .venv/bin/python benches/bench_shard.py [--mb 100] [--threads 1,2] [--family gpt2]
                                            [--work /tmp/kdmem-bench-shard]

Corpus: real text in <= 3,000-character documents without repeats (the running Python's
standard-library sources, then the installed packages' sources, headers and text files, as
``bench_index.py`` reads them; ``--stdlib-only``: the standard library alone, cycled, which
repeats every 12.6 MB and flatters any tokenizer cache) up to --mb megabytes of UTF-8, as one
JSONL file (built at run time, cached in --work).
Tokenizer: a byte-level BPE with a 32,768-token vocabulary trained locally on the first
20 MB (no downloads), in the style of --family: ``gpt2`` (GPT-2 / GPT-NeoX: the ByteLevel
pre-tokenizer), ``llama3`` (cl100k split regex, as Llama-3 and OLMo-2) or ``qwen3`` (Qwen's
split regex and NFC). Every contender runs in its own subprocess on the same file and
tokenizer, at each thread count of --threads; wall time and peak RSS (``ru_maxrss`` of that
child, from ``os.wait4``) are reported (and CPU seconds, user + sys, which stay meaningful on
a shared machine), with the ratio against Python ``tokenizers`` at the same thread count,
and whether the ids are identical (SHA-256 of the token stream of each output).

- kdmem: ``kdmem.corpus.shard_corpus`` (Rust reader thread + rayon tokenization + writer,
  kdmem's byte-level BPE encoder).
- kdmem-hf: the same with ``encoder="tokenizers"`` (the library inside kdmem's pipeline).
- tokenizers: read lines, ``json.loads``, ``Tokenizer.encode_batch(batch of 1,000,
  add_special_tokens=False)`` with RAYON_NUM_THREADS=threads, EOS appended, written
  incrementally as a uint16 numpy array (plus offsets) - the usual Python recipe.
- datatrove: ``DocumentTokenizer`` (no shuffling) fed the same documents (its JsonlReader
  needs orjson, which is not pinned), if it runs (at the largest thread count only).

Then the bounded-memory check: peak RSS of kdmem on corpora of 1x and >= 10x its in-flight
buffer (4 batches of 4 MiB = 16 MiB of text).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

IN_FLIGHT_MB = 16.8  # 4 batches x 4 MiB, see kdmem_core::shard::pipeline


def real_documents(stdlib_only: bool = False) -> Iterator[str]:
    """Real text in <= 3,000-character documents, in a fixed order and without repeats: the
    standard library's sources (12.6 MB on Python 3.11), then (unless ``stdlib_only``) the
    installed packages' Python sources, stubs, C/C++ headers and sources, and text files (a
    few hundred MB in kdmem's venv), as ``benches/bench_index.py`` reads them."""
    import sysconfig

    from kdmem.stdlib_corpus import stdlib_documents

    yield from stdlib_documents(kind="source", chunk_chars=3000)
    if stdlib_only:
        return
    purelib = Path(sysconfig.get_paths()["purelib"])
    for ext in ("py", "pyi", "h", "hpp", "cuh", "c", "cpp", "txt", "md", "rst", "js"):
        for p in sorted(purelib.rglob(f"*.{ext}")):
            text = p.read_text(encoding="utf-8", errors="replace")
            yield from (text[i : i + 3000] for i in range(0, len(text), 3000))


def build_corpus(path: Path, mb: float, stdlib_only: bool = False) -> tuple[int, int, int]:
    """Write a JSONL corpus of about ``mb`` MB of text (:func:`real_documents`, cycled only
    if they run out); returns (documents, text bytes, bytes before the first repeat)."""
    meta = path.with_suffix(".meta.json")
    if path.exists() and meta.exists():
        m = json.loads(meta.read_text())
        if m["mb"] == mb and m.get("stdlib_only") == stdlib_only and "unique" in m:
            return m["docs"], m["bytes"], m["unique"]
    target = int(mb * 1e6)
    size = n = 0
    unique = None
    with open(path, "w", encoding="utf-8") as f:
        while size < target:
            for t in real_documents(stdlib_only):
                if size >= target:
                    break
                f.write(json.dumps({"text": t}) + "\n")
                size += len(t.encode("utf-8"))
                n += 1
            if unique is None:
                unique = size
    unique = size if unique is None else unique
    meta.write_text(
        json.dumps(
            {"mb": mb, "docs": n, "bytes": size, "unique": unique, "stdlib_only": stdlib_only}
        )
    )
    return n, size, unique


CL100K = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN = CL100K.replace(r"\p{N}{1,3}", r"\p{N}")


def train_tokenizer(corpus: Path, out: Path, family: str = "gpt2") -> Path:
    if out.exists():
        return out
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    def texts():
        size = 0
        with open(corpus, encoding="utf-8") as f:
            for line in f:
                t = json.loads(line)["text"]
                size += len(t)
                yield t
                if size > 20_000_000:
                    return

    tok = Tokenizer(models.BPE())
    if family == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        split = pre_tokenizers.Split(Regex(QWEN if family == "qwen3" else CL100K), "isolated")
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
    if family == "qwen3":
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=32768,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts(), trainer=trainer)
    tok.save(str(out))
    return out


# ---- contenders (each runs in a child process: `bench_shard.py --run NAME ...`) ----------


def run_kdmem(corpus: Path, tok: Path, out: Path, threads: int, encoder: str = "auto") -> int:
    from kdmem.corpus import shard_corpus

    memory = os.environ.get("BENCH_MEMORY") or None
    res = shard_corpus(
        [corpus], tok, out, threads=threads, overwrite=True, encoder=encoder, memory=memory
    )
    return res.n_tokens


def run_kdmem_hf(corpus: Path, tok: Path, out: Path, threads: int) -> int:
    return run_kdmem(corpus, tok, out, threads, encoder="tokenizers")


def run_tokenizers(corpus: Path, tok: Path, out: Path, threads: int) -> int:
    import numpy as np
    from tokenizers import Tokenizer

    t = Tokenizer.from_file(str(tok))
    eos = t.token_to_id("<|endoftext|>")
    out.mkdir(parents=True, exist_ok=True)
    n_tokens = 0
    ends: list[int] = []
    with open(corpus, encoding="utf-8") as f, open(out / "tokens.u16", "wb") as w:
        batch: list[str] = []

        def flush() -> None:
            nonlocal n_tokens
            for enc in t.encode_batch(batch, add_special_tokens=False):
                ids = np.asarray([*enc.ids, eos], dtype=np.uint16)
                ids.tofile(w)
                n_tokens += len(ids)
                ends.append(n_tokens)
            batch.clear()

        for line in f:
            batch.append(json.loads(line)["text"])
            if len(batch) == 1000:
                flush()
        if batch:
            flush()
    np.save(out / "ends.npy", np.asarray(ends, dtype=np.uint64))
    return n_tokens


def run_datatrove(corpus: Path, tok: Path, out: Path, threads: int) -> int:
    import numpy as np
    from datatrove.data import Document
    from datatrove.pipeline.tokens import DocumentTokenizer

    # JsonlReader needs orjson (not in the lock file), so documents are fed directly.
    def docs():
        with open(corpus, encoding="utf-8") as f:
            for i, line in enumerate(f):
                yield Document(text=json.loads(line)["text"], id=str(i))

    step = DocumentTokenizer(
        str(out / "ds"),
        tokenizer_name_or_path=str(tok),
        eos_token="<|endoftext|>",
        shuffle_documents=False,
        save_final_metadata=False,
    )
    out_iter = step.run(docs(), rank=0, world_size=1)
    for _ in out_iter or ():
        pass
    total = 0
    for idx in (out / "ds").rglob("*.ds.index"):
        e = np.fromfile(idx, dtype="<u8")
        total += int(e[-1]) if len(e) else 0
    return total


RUNNERS = {
    "kdmem": run_kdmem,
    "kdmem-hf": run_kdmem_hf,
    "tokenizers": run_tokenizers,
    "datatrove": run_datatrove,
}


def ids_digest(name: str, out: Path) -> str:
    """SHA-256 of the output's token stream (little-endian uint16, EOS included), to check
    that contenders produced the same ids. Computed by the parent after the child ends, in
    1 MiB reads (no memory maps: a parent that grew would inflate the next child's peak RSS,
    which counts the pages it shares with the parent until it execs)."""
    import hashlib

    h = hashlib.sha256()

    def feed(path: Path, start: int, length: int) -> None:
        with open(path, "rb") as f:
            f.seek(start)
            while length > 0:
                chunk = f.read(min(length, 1 << 20))
                if not chunk:
                    break
                h.update(chunk)
                length -= len(chunk)

    if name.startswith("kdmem"):
        manifest = json.loads((out / "shards.json").read_text())
        if manifest["dtype"] != "u16":
            return ""
        for entry in manifest["shards"]:
            feed(out / entry["name"], 128, 2 * entry["n_tokens"])  # tokens follow the header
    elif name == "tokenizers":
        path = out / "tokens.u16"
        feed(path, 0, path.stat().st_size)
    else:
        return ""
    return h.hexdigest()


def child(name: str, corpus: Path, tok: Path, out: Path, threads: int, result: Path) -> None:
    t0 = time.perf_counter()
    n = RUNNERS[name](corpus, tok, out, threads)
    result.write_text(json.dumps({"tokens": n, "seconds": time.perf_counter() - t0}))


def measure(
    name: str,
    corpus: Path,
    tok: Path,
    work: Path,
    threads: int,
    timeout: float,
    memory: str = "",
) -> dict | None:
    out = work / f"out-{name}"
    shutil.rmtree(out, ignore_errors=True)
    result = work / f"result-{name}.json"
    result.unlink(missing_ok=True)
    env = dict(os.environ)
    env.update(
        RAYON_NUM_THREADS=str(threads),
        TOKENIZERS_PARALLELISM="true",
        KDMEM_NUM_THREADS=str(threads),
        HF_HUB_OFFLINE="1",
        BENCH_MEMORY=memory,
    )
    cmd = [
        sys.executable,
        __file__,
        "--run",
        name,
        "--corpus",
        str(corpus),
        "--tokenizer",
        str(tok),
    ]
    cmd += ["--out", str(out), "--threads", str(threads), "--result", str(result)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except KeyboardInterrupt:
        proc.kill()
        raise
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not result.exists():
        tail = err.strip().splitlines()[-1:] or ["(no output)"]
        print(f"  {name}: failed (exit {proc.returncode}): {tail[0][:200]}")
        return None
    r = json.loads(result.read_text())
    r["ids"] = ids_digest(name, out)  # here, so reading the output is not in the child's RSS
    r["wall"] = wall
    r["rss_mb"] = usage.ru_maxrss / 1024  # Linux: KiB
    r["cpu"] = usage.ru_utime + usage.ru_stime
    shutil.rmtree(out, ignore_errors=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=100.0)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--family", default="gpt2", choices=["gpt2", "llama3", "qwen3"])
    ap.add_argument(
        "--stdlib-only",
        action="store_true",
        help="the standard library's sources alone, cycled (the corpus of earlier figures)",
    )
    ap.add_argument("--work", type=Path, default=Path("/tmp/kdmem-bench-shard"))
    ap.add_argument(
        "--skip",
        default="",
        help="comma-separated: kdmem, kdmem-hf, tokenizers, datatrove, memory",
    )
    ap.add_argument("--memory-multiple", type=float, default=10.0)
    ap.add_argument("--timeout", type=float, default=1800)
    # child modes
    ap.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--run", default=None)
    ap.add_argument("--corpus", type=Path)
    ap.add_argument("--tokenizer", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--result", type=Path)
    args = ap.parse_args()
    if args.prepare:
        corpus = args.work / ("corpus-stdlib.jsonl" if args.stdlib_only else "corpus-real.jsonl")
        kind = "stdlib" if args.stdlib_only else "real"
        args.work.mkdir(parents=True, exist_ok=True)
        build_corpus(corpus, args.mb, args.stdlib_only)
        train_tokenizer(corpus, args.work / f"tokenizer-{args.family}-{kind}.json", args.family)
        for mult in (1.0, args.memory_multiple):
            build_corpus(args.work / f"mem-{mult:g}x.jsonl", IN_FLIGHT_MB * mult, args.stdlib_only)
        return
    if args.run:
        child(args.run, args.corpus, args.tokenizer, args.out, int(args.threads), args.result)
        return
    thread_counts = [int(t) for t in str(args.threads).split(",")]

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / ("corpus-stdlib.jsonl" if args.stdlib_only else "corpus-real.jsonl")
    kind = "stdlib" if args.stdlib_only else "real"
    tok = work / f"tokenizer-{args.family}-{kind}.json"
    # Built in a child: a parent that grew would inflate every later child's peak RSS
    # (ru_maxrss counts what a child shares with its parent until it execs).
    prep = [sys.executable, __file__, "--prepare", "--mb", str(args.mb), "--work", str(work)]
    prep += ["--family", args.family] + (["--stdlib-only"] if args.stdlib_only else [])
    subprocess.run(prep, check=True)
    m = json.loads(corpus.with_suffix(".meta.json").read_text())
    n_docs, n_bytes, unique = m["docs"], m["bytes"], m["unique"]
    print(
        f"corpus: {n_docs:,} documents, {n_bytes / 1e6:.1f} MB of text "
        f"({corpus.stat().st_size / 1e6:.1f} MB JSONL; "
        + ("no document repeats" if unique >= n_bytes else f"repeats after {unique / 1e6:.1f} MB")
        + f"), {args.family}-style BPE vocab 32768, threads {args.threads}"
    )
    skip = set(filter(None, args.skip.split(",")))
    summary = []
    for threads in thread_counts:
        print(f"threads {threads}:")
        rows = {}
        names = ["kdmem", "kdmem-hf", "tokenizers"]
        if threads == max(thread_counts):
            names.append("datatrove")
        for name in names:
            if name in skip:
                continue
            r = measure(name, corpus, tok, work, threads, args.timeout)
            if r is None:
                continue
            rows[name] = r
            print(
                f"  {name:<11} {r['seconds']:7.2f} s  {n_bytes / 1e6 / r['seconds']:6.1f} MB/s  "
                f"{r['tokens'] / r['seconds'] / 1e6:6.2f} M tokens/s  "
                f"peak RSS {r['rss_mb']:7.1f} MB  CPU {r['cpu']:6.1f} s "
                f"({n_bytes / 1e6 / r['cpu']:5.2f} MB per CPU-s)  ({r['tokens']:,} tokens)"
            )
        ref = rows.get("tokenizers")
        for name in ("kdmem", "kdmem-hf", "datatrove"):
            a = rows.get(name)
            if a is None or ref is None:
                continue
            same = "identical ids" if a["ids"] and a["ids"] == ref["ids"] else "ids NOT compared"
            if a["ids"] and ref["ids"] and a["ids"] != ref["ids"]:
                same = "IDS DIFFER"
            line = (
                f"ratio {name} / tokenizers.encode_batch at {threads} thread(s): "
                f"{ref['seconds'] / a['seconds']:.2f}x wall, {ref['cpu'] / a['cpu']:.2f}x CPU "
                f"({same})"
            )
            print("  " + line)
            if name == "kdmem":
                summary.append(line)
    if summary:
        print("summary:")
        for line in summary:
            print("  " + line)

    if "memory" in skip:
        return
    # Bounded memory: 1x and Nx the in-flight buffer.
    print(f"bounded memory (in-flight buffer ~{IN_FLIGHT_MB:.0f} MB of text):")
    for mult in (1.0, args.memory_multiple):
        mb = IN_FLIGHT_MB * mult
        c = work / f"mem-{mult:g}x.jsonl"
        r = measure("kdmem", c, tok, work, max(thread_counts), args.timeout)
        if r:
            print(
                f"  kdmem on {mb:6.1f} MB ({mult:g}x): peak RSS {r['rss_mb']:6.1f} MB, "
                f"{r['seconds']:.2f} s"
            )
    # A small --memory: shards sized for it, and the writer within it.
    r = measure("kdmem", c, tok, work, max(thread_counts), args.timeout, memory="256MB")
    if r:
        print(
            f"  kdmem --memory 256MB on {mb:6.1f} MB: peak RSS {r['rss_mb']:6.1f} MB "
            f"(budget 256 MB), {r['seconds']:.2f} s"
        )


if __name__ == "__main__":
    main()
