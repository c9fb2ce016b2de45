"""The multi-process paths of ``kdmem run`` proved on CPU (slow; 2 gloo processes):

* the whole tiny study with ``launch.nproc_per_node = 2`` against one process with doubled
  ``grad_accum`` (the same global batch): every stage completes, every model's memorization
  labels are identical, so are the teacher's generations for hard KD, weights agree to 1e-5;
* one rank killed with SIGKILL mid-training: ``kdmem run`` ends with one line naming the
  stage, the rank and its log, and rerunning it finishes with the weights of an
  uninterrupted run; a rank killed mid-measurement leaves its finished chunks, which the
  rerun keeps (it computes only the others);
* the Slurm jobs of ``--emit-slurm``, run by a fake ``sbatch`` / ``srun`` in dependency
  order on this machine, produce the run directory of ``kdmem run``: the corpus sharded by
  an array over its 3 files into the same documents and ids, the same labels, features,
  scan of the teacher's continuations (two arrays) and report tables.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import tomli_w

from test_study import TINY

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch")
psutil = pytest.importorskip("psutil")

ACCUM2 = [f"{s}.grad_accum=2" for s in ("teacher", "baseline", "soft", "hard")]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


def _kdmem(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kdmem", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=1800)  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study's inputs (corpus, tokenizer, base models: the demo's first stages) and
    its experiment config ``tiny.toml``, the fine-tuning corpus cut into 3 files of 20%, 20%
    and 60% of its documents (the same documents in the same order: a Slurm shard array
    splits the files over its tasks), and the teacher's continuations scanned for spans of
    3 tokens or more (hundreds, many in every shard)."""
    from kdmem.demo import demo_config, demo_stages
    from kdmem.pipeline import Pipeline

    root = tmp_path_factory.mktemp("scale")
    Pipeline(root / "inputs", demo_stages(TINY), log=lambda _m: None).run()
    cfg = demo_config(root / "inputs", TINY)
    cfg["run"]["dir"] = ""
    (src,) = cfg["data"]["corpus"]
    lines = Path(src).read_text().splitlines(keepends=True)
    cuts = [0, len(lines) // 5, 2 * len(lines) // 5, len(lines)]
    cfg["scan"] = {"min_len": 3}  # the tiny teacher's continuations hold few longer spans
    cfg["data"]["corpus"] = []
    for k in range(3):
        (root / f"corpus-{k}.jsonl").write_text("".join(lines[cuts[k] : cuts[k + 1]]))
        cfg["data"]["corpus"].append(str(root / f"corpus-{k}.jsonl"))
    (root / "tiny.toml").write_text(tomli_w.dumps(cfg))
    return root


@pytest.fixture(scope="module")
def one_process(tiny: Path) -> Path:
    """``kdmem run`` in one process with every grad_accum doubled."""
    r = _kdmem("run", "tiny.toml", "--run-dir", "one", *ACCUM2, cwd=tiny)
    assert r.returncode == 0, r.stderr[-3000:]
    return tiny / "one"


def _statuses(rd: Path) -> dict[str, str]:
    m = json.loads((rd / "manifest.json").read_text())
    return {k: v["status"] for k, v in m["stages"].items()}


def _max_weight_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    sa, sb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert sa.keys() == sb.keys()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa)


def _same_labels(a: Path, b: Path) -> list[str]:
    roles = sorted(p.name for p in (a / "measure").glob("*.parquet"))
    assert roles == sorted(p.name for p in (b / "measure").glob("*.parquet")) and roles
    for name in roles:
        ta, tb = pq.read_table(a / "measure" / name), pq.read_table(b / "measure" / name)
        assert ta.column("example_id").equals(tb.column("example_id")), name
        for col in ("memorized", "first_mismatch"):
            assert ta.column(col).equals(tb.column(col)), f"{name}: {col} differs"
    return roles


def test_two_gloo_processes_match_one_with_doubled_accumulation(
    tiny: Path, one_process: Path
) -> None:
    r = _kdmem("run", "tiny.toml", "--run-dir", "two", "launch.nproc_per_node=2", cwd=tiny)
    assert r.returncode == 0, r.stderr[-3000:]
    two = tiny / "two"
    assert "torchrun (local): 2 process(es)" in r.stderr
    st = _statuses(two)
    assert st == _statuses(one_process)
    assert set(st.values()) <= {"done", "skipped"}
    for role in ("teacher", "baseline_seed0", "student_soft_seed0", "student_hard_seed0"):
        info = json.loads((two / "models" / role / "kdmem.json").read_text())
        assert info["world_size"] == 2
        assert (two / "logs" / role / "rank1.log").exists()
        diff = _max_weight_diff(one_process / "models" / role, two / "models" / role)
        print(f"{role}: max |w(1 process) - w(2 processes)| = {diff:.3g}")  # -rP shows it
        assert diff < 1e-5, (role, diff)
    roles = _same_labels(one_process, two)
    assert "teacher.parquet" in roles and "baseline_seed0.parquet" in roles
    # the teacher's generations for hard KD (split over the 2 ranks): the same tokens (the
    # directory is named after the teacher's hash, which the last float bits change)
    gens = [sorted((rd / "generations").glob("*/generations.parquet")) for rd in (one_process, two)]
    assert [len(g) for g in gens] == [1, 1]
    ga, gb = (pq.read_table(g[0]).replace_schema_metadata(None) for g in gens)
    assert ga.num_rows == TINY.n_examples and ga.equals(gb)


def _rank1_of(proc: subprocess.Popen[str]) -> psutil.Process | None:
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == "1" and "kdmem" in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    return None


def test_a_rank_killed_mid_training_resumes_to_the_same_weights(tiny: Path) -> None:
    args = ["run", "tiny.toml", "launch.nproc_per_node=2", "teacher.epochs=24",
            "teacher.checkpoint_every=3", "--until", "teacher"]  # fmt: skip
    ref = _kdmem(*args, "--run-dir", "uninterrupted", cwd=tiny)
    assert ref.returncode == 0, ref.stderr[-3000:]

    rd = tiny / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "kdmem", *args, "--run-dir", "killed"],
                            cwd=tiny, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    state = rd / "models" / "teacher" / "checkpoint" / "state.json"
    deadline = time.monotonic() + 600
    victim = None
    while time.monotonic() < deadline and proc.poll() is None:
        if state.exists() and (victim := _rank1_of(proc)) is not None:
            break
        time.sleep(0.02)
    assert victim is not None, "training ended before a checkpoint appeared"
    step = json.loads(state.read_text())["step"]
    os.kill(victim.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 2
    line = [ln for ln in err.splitlines() if ln.startswith("kdmem: error:")]
    log = Path("killed") / "logs" / "teacher" / "rank1.log"  # as the run directory was given
    assert line == [
        f"kdmem: error: stage teacher: rank 1 of 2 failed (killed by SIGKILL); its log: "
        f"{log}; rerun kdmem run to resume the stage"
    ]
    assert (tiny / log).read_text().startswith("== ")
    assert not (rd / "models" / "teacher" / "kdmem.json").exists()

    again = _kdmem(*args, "--run-dir", "killed", cwd=tiny)
    assert again.returncode == 0, again.stderr[-3000:]
    rank0 = (rd / "logs" / "teacher" / "rank0.log").read_text()
    assert "resuming from" in rank0 and step < 72
    diff = _max_weight_diff(
        tiny / "uninterrupted" / "models" / "teacher", rd / "models" / "teacher"
    )
    assert diff == 0.0, diff


CHUNK_HOOK = """
import os
if os.environ.get("KDMEM_TEST_CHUNKS"):  # loaded by every process of the launch (sitecustomize)
    import signal
    from kdmem.measure.chunks import ChunkedRun
    _write = ChunkedRun.write_chunk
    def write_chunk(self, k, table, meta):
        _write(self, k, table, meta)
        with open(os.environ["KDMEM_TEST_CHUNKS"], "a") as f:
            f.write(f"{k}\\n")
        if os.environ.get("RANK") == os.environ.get("KDMEM_TEST_KILL_RANK"):
            os.kill(os.getpid(), signal.SIGKILL)  # after its first chunk
    ChunkedRun.write_chunk = write_chunk
"""


def test_a_rank_killed_mid_measurement_leaves_chunks_the_rerun_reuses(
    tiny: Path, one_process: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``kdmem measure`` on 2 ranks as ``kdmem run`` launches it; rank 1 is SIGKILLed after
    its first chunk. The rerun computes only the chunks that were not written, and the table
    equals the study's own (one process) measurement of the same model."""
    import tomllib

    from kdmem.errors import LaunchFailedError
    from kdmem.launch.torchrun import PassLauncher

    data = tomllib.loads((tiny / "tiny.toml").read_text())["data"]
    hook, rd = tiny / "chunk_hook", tiny / "measure_killed"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(CHUNK_HOOK)
    written = tiny / "chunks.txt"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("KDMEM_TEST_CHUNKS", str(written))
    monkeypatch.setenv("KDMEM_TEST_KILL_RANK", "1")
    out = rd / "teacher.parquet"
    argv = ["measure", "--model", str(one_process / "models" / "teacher"),
            "--data", str(one_process / "data" / "study.parquet"), "--out", str(out),
            "--prefix", str(data["prefix"]), "--suffix", str(data["suffix"]),
            "--chunk-size", "8", "--device", "cpu", "--role", "teacher"]  # fmt: skip
    launcher = PassLauncher(nproc_per_node=2)
    with pytest.raises(LaunchFailedError, match=r"rank 1 of 2 failed \(killed by SIGKILL\)"):
        launcher.run(rd, "measure_teacher", argv, log=lambda _m: None)
    left = {
        int(p.stem.removeprefix("chunk-"))
        for p in (rd / ".teacher.parquet.parts").glob("chunk-*.parquet")
    }
    assert 1 in left and not out.exists()  # rank 1's first chunk is kept
    assert {int(k) for k in written.read_text().split()} <= left  # (rank 0 may be stopped between)
    written.unlink()
    monkeypatch.setenv("KDMEM_TEST_KILL_RANK", "none")
    launcher.run(rd, "measure_teacher", argv, log=lambda _m: None)
    again = {int(k) for k in written.read_text().split()}
    print(f"chunks kept after the kill: {sorted(left)}; recomputed: {sorted(again)}")
    assert again.isdisjoint(left) and again | left == set(range(-(-TINY.n_examples // 8)))
    a, b = pq.read_table(one_process / "measure" / "teacher.parquet"), pq.read_table(out)
    for col in ("example_id", "memorized", "first_mismatch"):
        assert a.column(col).equals(b.column(col)), col


FAKE_SBATCH = r'''#!PYTHON
"""Fake sbatch: runs the job now (its dependencies must have succeeded), prints its id."""
import os, re, subprocess, sys
from pathlib import Path
state = Path(os.environ["FAKE_SLURM"])
args = sys.argv[1:]
deps = [a.split("=", 1)[1] for a in args if a.startswith("--dependency=")]
script = Path([a for a in args if not a.startswith("-")][-1])
for d in deps:
    kind, *ids = d.split(":")
    assert kind == "afterok", d
    for i in ids:
        if not (state / f"ok-{i}").exists():
            sys.exit(f"sbatch: job {i} did not succeed: dependency afterok:{i} never satisfied")
n = len(list(state.glob("job-*"))) + 1
(state / f"job-{n}").write_text(str(script))
directives = re.findall(r"^#SBATCH (.*)$", script.read_text(), re.M)
array = [0]
for line in directives:
    for opt in line.split():
        if opt.startswith("--array="):
            lo, hi = opt.split("=")[1].split("-")
            array = list(range(int(lo), int(hi) + 1))
ok = True
for task in array:
    env = dict(os.environ, SLURM_JOB_ID=str(n), SLURM_NNODES="1", SLURM_JOB_NODELIST="localhost")
    if len(array) > 1 or any(o.startswith("--array") for o in " ".join(directives).split()):
        env["SLURM_ARRAY_TASK_ID"] = str(task)
    with open(state / f"out-{n}-{task}.log", "w") as out:
        r = subprocess.run(["bash", str(script)], env=env, stdout=out, stderr=subprocess.STDOUT)
    ok = ok and r.returncode == 0
if ok:
    (state / f"ok-{n}").write_text("")
print(f"{n};fakecluster")
'''

FAKE_SRUN = r'''#!PYTHON
"""Fake srun: one task on this one node (the command after srun's own options)."""
import os, sys
args = sys.argv[1:]
while args and args[0].startswith("-"):
    args.pop(0)
os.environ.update(SLURM_NODEID="0", SLURM_PROCID="0", SLURM_LOCALID="0")
os.execvp(args[0], args)
'''


def test_emitted_slurm_jobs_reproduce_the_run_directory(tiny: Path, one_process: Path) -> None:
    bin_dir, state = tiny / "fakebin", tiny / "fakeslurm"
    bin_dir.mkdir()
    state.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("srun", FAKE_SRUN)):
        (bin_dir / name).write_text(text.replace("#!PYTHON", f"#!{sys.executable}"))
        (bin_dir / name).chmod(0o755)
    with socket.socket() as sock:  # a free rendezvous port (other runs share this machine)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    r = _kdmem("run", "tiny.toml", *ACCUM2, f"slurm.rdzv_port={port}", "slurm.array_tasks=4",
               "--run-dir", "slurm_rd", "--emit-slurm", "jobs", cwd=tiny)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    env = dict(ENV, PATH=f"{bin_dir}:{ENV['PATH']}", FAKE_SLURM=str(state))
    sub = subprocess.run(["bash", str(tiny / "jobs" / "submit.sh")], env=env, capture_output=True,
                         text=True, timeout=3600)  # fmt: skip
    logs = "\n".join(p.read_text()[-1500:] for p in sorted(state.glob("out-*.log"))[-3:])
    assert sub.returncode == 0, sub.stdout + sub.stderr + logs
    n_jobs = len(list(state.glob("job-*")))
    assert n_jobs == len(list((tiny / "jobs" / "jobs").glob("*.sbatch")))
    assert len(list(state.glob("ok-*"))) == n_jobs
    rd = tiny / "slurm_rd"
    assert _statuses(rd) == _statuses(one_process)
    # the model passes ran through srun + torchrun; the corpus stages as arrays over the
    # planned groups of shards (task t of T: groups t, t + T, ...), one unit per group
    for stage in ("teacher", "student_hard_seed0", "measure_teacher"):
        cmd = (rd / "logs" / stage / "launcher.log").read_text().splitlines()[0]
        assert " srun --nodes=1 " in f" {cmd.split(' ', 2)[2]} " and "torch.distributed.run" in cmd
    from kdmem.corpus.index import Index, unit_groups
    from kdmem.rundir import Layout, table_meta

    shards = Layout(rd).shards
    plan, tasks = unit_groups(shards), 4  # slurm.array_tasks above
    assert Index(shards).units == plan
    parts = sorted((rd / "parts" / "featurize").glob("shard-*.parquet"))
    got = sorted(table_meta(pq.read_schema(p))["shards"] for p in parts)
    assert got == sorted(
        [k for g in plan[t::tasks] for k in g] for t in range(min(tasks, len(plan)))
    )
    # the corpus: 3 files over 4 tasks (about 20/20/60% of the bytes, middle bytes at 10%,
    # 30% and 70%: tasks 0, 1 and 2; task 3 has none), merged into the documents of one
    # shard run with the same ids
    assert sorted(p.name for p in (rd / "parts" / "shard").iterdir()) == [
        "task-00000", "task-00001", "task-00002"]  # fmt: skip
    assert any("task 3 of 4 has no input" in p.read_text() for p in state.glob("out-*.log"))
    from kdmem.corpus import open_shards

    merged, one = open_shards(rd / "shards"), open_shards(one_process / "shards")
    assert len(merged.manifest["merged_from"]) == 3 and len(merged.shards) >= 3
    assert [d.tolist() for d in merged] == [d.tolist() for d in one]
    # the scan: two arrays (round 1, round 2) over the same groups, merged by the stage
    assert list((rd / "parts" / "scan-lm").glob("shard-*.parquet"))
    assert list((rd / "parts" / "scan-hits").glob("shard-*.parquet"))
    rel = "scan/teacher_continuations.parquet"
    assert pq.read_table(rd / rel).equals(pq.read_table(one_process / rel))
    # The spans: the same rows, counts and locations (global document ids, offsets); only
    # the shard numbers of the locations differ, as the two sets cut shards differently.
    rel = "scan/teacher_spans.parquet"
    a, b = pq.read_table(rd / rel), pq.read_table(one_process / rel)
    assert a.drop_columns(["shard"]).equals(b.drop_columns(["shard"]))
    for run_dir, t in ((rd, a), (one_process, b)):
        first = [s.first_doc for s in open_shards(run_dir / "shards").shards] + [10**12]
        locs = zip(t.column("shard").to_pylist(), t.column("document").to_pylist(), strict=True)
        for sh, docs in locs:
            assert all(first[k] <= d < first[k + 1] for k, d in zip(sh, docs, strict=True))
    spans = a.to_pydict()
    assert len(spans["count"]) > 100  # counts added and locations joined over the shards:
    assert any(len(set(sh)) > 1 for sh in spans["shard"])  # some span is in several shards
    _same_labels(one_process, rd)
    for role in ("teacher", "baseline_seed0", "student_soft_seed0", "student_hard_seed0"):
        diff = _max_weight_diff(one_process / "models" / role, rd / "models" / role)
        print(f"{role}: max |w(kdmem run) - w(Slurm jobs)| = {diff:.3g}")  # -rP shows it
        assert diff < 1e-5, (role, diff)
    assert pq.read_table(rd / "features.parquet").equals(
        pq.read_table(one_process / "features.parquet")
    )
    assert _report_tables(rd) == _report_tables(one_process)


def _report_tables(rd: Path) -> dict[str, Any]:
    """The report's summary and the analyses' JSON, without paths and wall times."""

    def clean(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()
                    if not any(s in k for s in ("wall", "time", "per_s", "created"))}  # fmt: skip
        if isinstance(x, list):
            return [clean(v) for v in x]
        if isinstance(x, str):  # the run directory, however it was named
            x = x.replace(str(rd.resolve()), "RUN")
            return (
                "RUN" if x == rd.name else re.sub(rf"(?<![\w./-]){re.escape(rd.name)}/", "RUN/", x)
            )
        return x

    out = {}
    for rel in ("report/summary.json", "sets/sets.json", "filter/filter.json"):
        p = rd / rel
        if p.exists():
            out[rel] = clean(json.loads(p.read_text()))
    return out
