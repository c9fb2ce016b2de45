"""Smoke test of an installed kdmem wheel, run from a fresh environment by `./dev.sh test` and
on every native runner of the release workflow.

    python tests/smoke_wheel.py [--kdmem EXE] [--cargo-toml PATH] WORKDIR

Checks, each against an independent oracle:

1. kdmem is imported from the installed wheel, not from a source tree.
2. One version: Cargo.toml's workspace version == wheel metadata == ``kdmem.__version__`` ==
   ``kdmem --version``.
3. zlib: ``kdmem.zlib_bytes`` equals the sizes classic zlib 1.x gives at level 6 (constants
   below) and ``len(zlib.compress(text, 6))`` of this Python, on probes that expose another
   deflate implementation (zlib-ng, ...).
4. ``kdmem shard`` on a small JSONL corpus gives the ids of the Python tokenizers library;
   ``kdmem index`` then counts n-grams like a brute-force scan of those documents.

Not collected by pytest (no test_ prefix). Works on Linux, macOS and Windows.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tomllib
import zlib
from importlib.metadata import version as dist_version
from pathlib import Path

from packaging.version import Version
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

SOURCE_ROOT = Path(__file__).resolve().parents[1]


def zlib_probes() -> list[bytes]:
    """Texts whose deflate sizes differ between implementations (fixed, no randomness)."""
    lcg, noise = 12345, bytearray()
    for _ in range(20_000):
        lcg = (lcg * 1103515245 + 12345) % 2**31
        noise.append(0x20 + (lcg >> 16) % 95)
    return [
        b"",
        b"a",
        b"The quick brown fox jumps over the lazy dog. " * 40,
        "".join(chr(0x41 + (i * 7919) % 5000) for i in range(5000)).encode("utf-8"),
        b"def f(x):\n    return x + 1\n" * 200,
        bytes(noise),
        bytes(range(256)) * 64,
        ("na\u00efve caf\u00e9 \u65e5\u672c\u8a9e \U0001f600 " * 300).encode("utf-8"),
        b"ab" * 100_000,
    ]


# len(zlib.compress(probe, 6)) with classic zlib (CPython 3.11 on zlib 1.2.13; kdmem's static
# zlib 1.3.1 gives the same). zlib-ng gives other sizes for 6 of the 9 probes
# ([8, 9, 73, 9855, 89, 16633, 469, 118, 898] with the `zlib-ng` package 1.1.0).
CLASSIC_ZLIB_SIZES = [8, 9, 68, 9855, 65, 16654, 408, 83, 219]


def check_version(exe: str, cargo_toml: Path) -> str:
    import kdmem

    cargo = Version(
        tomllib.loads(cargo_toml.read_text(encoding="utf-8"))["workspace"]["package"]["version"]
    )
    installed = Version(dist_version("kdmem"))
    cli = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    assert installed == cargo, f"wheel metadata says {installed}, Cargo.toml says {cargo}"
    assert kdmem.__version__ == str(cargo), (
        f"kdmem.__version__ = {kdmem.__version__}, Cargo {cargo}"
    )
    assert cli.strip() == f"kdmem, version {cargo}", f"`kdmem --version` printed {cli!r}"
    return str(cargo)


def check_zlib() -> None:
    import kdmem

    probes = zlib_probes()
    ours = kdmem.zlib_bytes(probes).tolist()
    host = [len(zlib.compress(p, 6)) for p in probes]
    assert ours == CLASSIC_ZLIB_SIZES, (
        f"kdmem's zlib ({kdmem._core.zlib_version()}) is not classic zlib: {ours} != "
        f"{CLASSIC_ZLIB_SIZES}"
    )
    assert ours == host, (
        f"this Python's zlib.compress (zlib {zlib.ZLIB_RUNTIME_VERSION}) gives {host}, kdmem "
        f"gives the classic-zlib sizes {ours}: the host zlib is another deflate implementation"
    )
    print(
        f"zlib: kdmem ({kdmem._core.zlib_version()}) == classic sizes == this Python's "
        f"zlib.compress level 6 (zlib {zlib.ZLIB_RUNTIME_VERSION}) on {len(probes)} probes"
    )


def train_tokenizer(texts: list[str], path: Path) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(
        texts,
        trainer=trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tok.save(str(path))
    return tok


def brute_count(docs: list[list[int]], q: list[int]) -> int:
    n = len(q)
    return sum(1 for d in docs for i in range(len(d) - n + 1) if d[i : i + n] == q)


def check_shard_and_index(exe: str, work: Path) -> None:
    import kdmem
    from kdmem.corpus import open_shards

    texts = [f"document {i}: the quick brown fox jumps over {i % 7} lazy dogs" for i in range(500)]
    tok = train_tokenizer(texts, work / "tokenizer.json")
    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    out = work / "shards"
    subprocess.run(
        [exe, "shard", str(corpus), "--tokenizer", str(work / "tokenizer.json"), "--out", str(out)],
        check=True,
    )
    ss = open_shards(out)
    eos = tok.token_to_id("<|endoftext|>")
    assert len(ss) == len(texts), (len(ss), len(texts))
    docs = [[*tok.encode(t, add_special_tokens=False).ids, eos] for t in texts]
    for i in (0, 1, 250, 499):
        assert ss[i].tolist() == docs[i], (i, ss[i].tolist(), docs[i])

    subprocess.run([exe, "index", str(out)], check=True)
    idx = kdmem.Index(out)
    queries = [docs[3][:4], docs[77][2:9], docs[499][-3:], [docs[5][0]], [eos, docs[0][0]]]
    got = [idx.count(q) for q in queries]
    want = [brute_count(docs, q) for q in queries]
    assert got == want, (got, want)
    print(
        f"shard + index: {len(ss)} documents, {ss.n_tokens} tokens, ids match tokenizers; "
        f"counts {got} match a brute-force scan"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description="Smoke test of an installed kdmem wheel.")
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--kdmem", default=None, help="the installed `kdmem` command (default: PATH)")
    ap.add_argument("--cargo-toml", type=Path, default=SOURCE_ROOT / "Cargo.toml")
    args = ap.parse_args()
    # shutil.which also finds `kdmem.exe` on Windows when given `.../Scripts/kdmem`.
    exe = shutil.which(args.kdmem or "kdmem")
    assert exe, f"no `kdmem` command at {args.kdmem or 'PATH'}"
    args.workdir.mkdir(parents=True, exist_ok=True)

    import kdmem

    here = Path(kdmem.__file__).resolve()
    assert not here.is_relative_to(SOURCE_ROOT / "python"), f"kdmem imported from {here}"
    ver = check_version(exe, args.cargo_toml)
    print(f"kdmem {ver} from {here.parent} (Python {sys.version.split()[0]}); versions agree")
    check_zlib()
    check_shard_and_index(exe, args.workdir)
    print("wheel smoke test passed")


if __name__ == "__main__":
    main()
