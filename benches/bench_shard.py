"""Token sharding: `kdmem shard` vs Python `tokenizers` encode_batch vs datatrove.

    .venv/bin/python benches/bench_shard.py [--mb 100] [--threads 1,2] [--family gpt2]
                                            [--work /tmp/kdmem-bench-shard]

Corpus: the running Python's standard-library sources in <= 3,000-character documents, cycled
until --mb megabytes of UTF-8, as one JSONL file (built at run time, cached in --work).
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
from pathlib import Path

IN_FLIGHT_MB = 16.8  # 4 batches x 4 MiB, see kdmem_core::shard::pipeline


def build_corpus(path: Path, mb: float) -> tuple[int, int]:
    """Write a JSONL corpus of about ``mb`` MB of text; returns (documents, text bytes)."""
    from kdmem.stdlib_corpus import stdlib_documents

    meta = path.with_suffix(".meta.json")
    if path.exists() and meta.exists():
        m = json.loads(meta.read_text())
        if m["mb"] == mb:
            return m["docs"], m["bytes"]
    base = list(stdlib_documents(kind="source", chunk_chars=3000))
    target = int(mb * 1e6)
    size = n = 0
    with open(path, "w", encoding="utf-8") as f:
        while size < target:
            t = base[n % len(base)]
            f.write(json.dumps({"text": t}) + "\n")
            size += len(t.encode("utf-8"))
            n += 1
    meta.write_text(json.dumps({"mb": mb, "docs": n, "bytes": size}))
    return n, size


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
    ap.add_argument("--work", type=Path, default=Path("/tmp/kdmem-bench-shard"))
    ap.add_argument(
        "--skip",
        default="",
        help="comma-separated: kdmem, kdmem-hf, tokenizers, datatrove, memory",
    )
    ap.add_argument("--memory-multiple", type=float, default=10.0)
    ap.add_argument("--timeout", type=float, default=1800)
    # child mode
    ap.add_argument("--run", default=None)
    ap.add_argument("--corpus", type=Path)
    ap.add_argument("--tokenizer", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--result", type=Path)
    args = ap.parse_args()
    if args.run:
        child(args.run, args.corpus, args.tokenizer, args.out, int(args.threads), args.result)
        return
    thread_counts = [int(t) for t in str(args.threads).split(",")]

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus.jsonl"
    n_docs, n_bytes = build_corpus(corpus, args.mb)
    name = "tokenizer.json" if args.family == "gpt2" else f"tokenizer-{args.family}.json"
    tok = train_tokenizer(corpus, work / name, args.family)
    print(
        f"corpus: {n_docs:,} documents, {n_bytes / 1e6:.1f} MB of text "
        f"({corpus.stat().st_size / 1e6:.1f} MB JSONL), {args.family}-style BPE vocab 32768, "
        f"threads {args.threads}"
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
        build_corpus(c, mb)
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
