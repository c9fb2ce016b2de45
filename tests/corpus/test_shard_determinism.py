"""Byte-identical output for any thread count and across reruns; kill -9 and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from shard_helpers import CORPUS, bpe_tokenizer, tree, write_jsonl

from kdmem.corpus import open_shards, shard_corpus
from kdmem.progress import Tick


def test_threads_and_reruns_give_identical_bytes(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "c.jsonl", CORPUS * 20)
    outs = []
    for threads in (1, 2, 1):
        out = tmp_path / f"o{len(outs)}"
        shard_corpus([src], bpe_tokenizer(), out, threads=threads, shard_tokens=500)
        outs.append(tree(out))
    assert outs[0] == outs[1] == outs[2]
    assert len([k for k in outs[0] if k.endswith(".kdt")]) > 3
    # Rerunning into a finished directory keeps every file untouched.
    st = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "o0").iterdir()}
    res = shard_corpus([src], bpe_tokenizer(), tmp_path / "o0", threads=2, shard_tokens=500)
    assert res.resumed_shards == len(res.manifest["shards"])
    assert st == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "o0").iterdir()}


def _big_corpus(path: Path, n: int) -> Path:
    line = "Knowledge distillation transfers memorized sequences from teacher to student. " * 4
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"text": f"{i} {line}"}) + "\n")
    return path


def test_kill_9_then_rerun_resumes_to_identical_bytes(tmp_path: Path) -> None:
    src = _big_corpus(tmp_path / "big.jsonl", 60_000)
    tok = bpe_tokenizer()
    args = [
        "shard",
        str(src),
        "--tokenizer",
        str(tok),
        "--shard-tokens",
        "100000",
        "--threads",
        "2",
    ]
    ref = tmp_path / "ref"
    shard_corpus([src], tok, ref, shard_tokens=100_000, threads=2)
    want = tree(ref)
    assert len(want) > 5

    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "from kdmem.cli import main; main()", *args, "--out", str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    manifest = out / "shards.json"
    killed_mid_run = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.exists():
            try:
                m = json.loads(manifest.read_text())
            except json.JSONDecodeError:  # pragma: no cover - rename is atomic
                m = {}
            if m.get("shards") and not m.get("complete"):
                os.kill(proc.pid, signal.SIGKILL)
                killed_mid_run = True
                break
        time.sleep(0.002)
    proc.wait()
    if not killed_mid_run:
        pytest.skip("the run finished before the first shard could be observed")
    m = json.loads(manifest.read_text())
    done = {s["name"] for s in m["shards"]}
    before = {n: (out / n).stat() for n in done}
    # Nothing partial under a final name: every visible shard verifies.
    for p in out.glob("shard-*.kdt"):
        open_shards(p, verify=True)
    res = shard_corpus([src], tok, out, shard_tokens=100_000, threads=1)
    assert res.resumed_shards == len(done) > 0
    assert tree(out) == want
    for n, st in before.items():
        now = (out / n).stat()
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), n


def test_progress_counters_end_at_the_totals(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "c.jsonl", CORPUS * 5)
    calls: list[Tick] = []
    res = shard_corpus([src], bpe_tokenizer(), tmp_path / "o", progress=calls.append)
    size = src.stat().st_size
    assert calls[-1] == Tick("shard", size, size, "B", {"docs": res.n_docs, "tokens": res.n_tokens})


def test_cli_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    import fcntl
    import pty
    import struct
    import termios

    src = write_jsonl(tmp_path / "c.jsonl", CORPUS * 5)
    cmd = [sys.executable, "-c", "from kdmem.cli import main; main()", "shard", str(src)]
    cmd += ["--tokenizer", str(bpe_tokenizer())]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path / "a")], stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait() == 0
    text = out.decode(errors="replace")
    assert "B/s" in text and "docs" in text and "tokens" in text  # rate unit: kB/s or MB/s
    quiet = subprocess.run([*cmd, "--out", str(tmp_path / "b")], capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == ""
