"""Scale-out: per-shard and per-group tasks (Ray, or plain CLI calls as a Slurm array runs
them) merge into exactly the local path's output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from shard_helpers import word_corpus

from kdmem.cli import run
from kdmem.corpus import open_shards
from kdmem.corpus.featurize import featurize
from kdmem.corpus.index import Index, build_index
from kdmem.corpus.scan import scan
from kdmem.errors import InvalidArgumentError

WORDS = [f"w{i}" for i in range(10)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards (not indexed) of a corpus with planted repeats in every shard, examples and
    generations that hit several shards."""
    d = tmp_path_factory.mktemp("dist")
    rng = word_corpus(
        d, n_docs=80, planted_len=15, planted_every=5, vocab_cycle=7, max_words=40, shard_tokens=400
    )
    ss = open_shards(d / "shards")
    assert len(ss.shards) >= 3
    docs = [ss[i].astype(np.int64).tolist() for i in range(len(ss))]
    planted_ids = docs[0][-15:]
    examples = [docs[i][:12] for i in range(0, len(docs), 3) if len(docs[i]) >= 12]
    examples += [rng.integers(1, 11, 12).tolist(), [1, 2, 3]]
    (d / "ex.jsonl").write_text(
        "".join(
            json.dumps({"example_id": 100 - i, "input_ids": r}) + "\n"
            for i, r in enumerate(examples)
        )
    )
    gens = [
        planted_ids + rng.integers(1, 11, 6).tolist() + docs[9][:9],
        rng.integers(1, 11, 30).tolist(),
        docs[len(docs) - 1][:20],
    ]
    (d / "gens.jsonl").write_text("".join(json.dumps({"input_ids": r}) + "\n" for r in gens))
    return d


@pytest.fixture(scope="module")
def local(corpus: Path) -> tuple[Path, Path, Path]:
    """The local path: one build, one featurize, one scan over every shard."""
    idx = corpus / "idx_local"
    shutil.copytree(corpus / "shards", idx)
    build_index(idx, threads=2)
    f = featurize(
        corpus / "ex.jsonl",
        idx,
        corpus / "f_local.parquet",
        prefix=4,
        suffix=8,
        ngram=(2, 5),
        tokenizer=str(corpus / "tokenizer.json"),
        threads=2,
    )
    s = scan(corpus / "gens.jsonl", idx, corpus / "s_local.parquet", min_len=3, max_locations=4)
    return idx, f, s


def same_table(a: Path, b: Path) -> None:
    ta, tb = pq.read_table(a), pq.read_table(b)
    assert ta.schema.equals(tb.schema)
    assert ta.equals(tb)
    assert ta.num_rows > 0


def same_index(a: Path, b: Path) -> None:
    """The same answers (per-shard builds make one unit per shard, a local build groups
    small shards, so the files may differ): counts of every n-gram of every document,
    n = 1..6, locations of some, matching statistics of every document reversed (partial
    matches of many lengths)."""
    ia, ib = Index(a), Index(b)
    assert (ia.n_shards, ia.n_tokens, ia.n_docs) == (ib.n_shards, ib.n_tokens, ib.n_docs)
    ss = open_shards(a)
    qs = [ss[i][j : j + n] for i in range(len(ss)) for j in range(0, len(ss[i]), 5)
          for n in (1, 3, 6)]  # fmt: skip
    assert len(qs) > 100
    assert ia.count_many(qs).tolist() == ib.count_many(qs).tolist()
    for x, y in zip(ia.locate_many(qs[:50]), ib.locate_many(qs[:50]), strict=True):
        assert all(np.array_equal(u, v) for u, v in zip(x, y, strict=True))
    rev = [np.asarray(ss[i][::-1], np.int64) for i in range(len(ss))]
    lm_a, lm_b = ia.longest_match_many(rev), ib.longest_match_many(rev)
    assert all(np.array_equal(x, y) for x, y in zip(lm_a, lm_b, strict=True))
    assert max(int(x.max(initial=0)) for x in lm_a) > 1


def test_subset_index_answers_for_its_shards(local: tuple[Path, Path, Path]) -> None:
    idx, _, _ = local
    full = Index(idx)
    parts = [Index(idx, shards=[k]) for k in range(full.n_shards)]
    assert [p.shard_ids for p in parts] == [[k] for k in range(full.n_shards)]
    assert sum(p.n_docs for p in parts) == full.n_docs
    q = np.asarray(open_shards(idx)[0][-15:], np.int64)  # the planted span, in every shard
    assert sum(p.count(q) for p in parts) == full.count(q) >= full.n_shards
    locs = [p.locate(q) for p in parts]
    want = full.locate(q)
    np.testing.assert_array_equal(np.concatenate([loc.shard for loc in locs]), want.shard)
    np.testing.assert_array_equal(np.concatenate([loc.document for loc in locs]), want.document)
    lm = np.max([p.longest_match(q[::-1].copy()) for p in parts], axis=0)
    np.testing.assert_array_equal(lm, full.longest_match(q[::-1].copy()))
    with pytest.raises(InvalidArgumentError, match="shard"):
        Index(idx, shards=[full.n_shards])


def test_per_shard_cli_calls_match_local(corpus: Path, local: tuple[Path, Path, Path]) -> None:
    """What a Slurm array runs: one plain CLI call per shard per step, then a merge."""
    idx_local, f_local, s_local = local
    d = corpus
    idx = d / "idx_cli"
    shutil.copytree(d / "shards", idx)
    n = len(list(idx.glob("*.kdt")))
    for k in reversed(range(n)):  # any order, any machine
        assert run(["index", str(idx), "--shard", str(k), "--threads", "1"]) == 0
    same_index(idx, idx_local)

    ex, tok = str(d / "ex.jsonl"), str(d / "tokenizer.json")
    opts = ["--prefix", "4", "--suffix", "8", "--ngram", "2", "--ngram", "5"]
    for k in range(n):
        args = ["featurize", ex, "--index", str(idx), "--shard", str(k)]
        assert run([*args, "--partial-out", str(d / "fparts"), *opts, "--tokenizer", tok]) == 0
    merge = ["featurize", ex, "--index", str(idx_local), "--merge", str(d / "fparts")]
    assert run([*merge, "--out", str(d / "f_cli.parquet"), *opts, "--tokenizer", tok]) == 0
    same_table(d / "f_cli.parquet", f_local)

    g = str(d / "gens.jsonl")
    sopts = ["--min-len", "3", "--max-locations", "4"]
    for k in range(n):
        args = ["scan", g, "--index", str(idx), "--shard", str(k), *sopts]
        assert run([*args, "--partial-out", str(d / "lm")]) == 0
    for k in range(n):
        args = ["scan", g, "--index", str(idx), "--shard", str(k), *sopts]
        assert run([*args, "--lm", str(d / "lm"), "--partial-out", str(d / "hits")]) == 0
    merge = ["scan", g, "--index", str(idx_local), "--merge", str(d / "hits")]
    assert run([*merge, "--out", str(d / "s_cli.parquet")]) == 0
    same_table(d / "s_cli.parquet", s_local)
    assert pq.read_table(s_local).column("count").to_numpy().max() > 4  # truncation exercised

    # A missing shard is an error that names it, not a silently smaller count.
    (d / "fparts" / "shard-00001.parquet").unlink()
    assert run([*["featurize", ex, "--index", str(idx)], "--merge", str(d / "fparts"),
                "--out", str(d / "x.parquet"), *opts, "--tokenizer", tok]) == 2  # fmt: skip


def test_ray_matches_local(corpus: Path, local: tuple[Path, Path, Path]) -> None:
    """--ray on a local two-worker cluster writes the same index files and tables."""
    ray = pytest.importorskip("ray")
    idx_local, f_local, s_local = local
    d = corpus
    idx = d / "idx_ray"
    shutil.copytree(d / "shards", idx)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        report = build_index(idx, threads=1, ray=True)
        assert report["built"] == report["shards"] == len(list(idx.glob("*.kdt")))
        same_index(idx, idx_local)
        # Planned in the driver as a local build plans: the small shards share one unit, so
        # a query costs one lookup, not one per shard.
        assert Index(idx).units == [list(range(report["shards"]))]
        f = featurize(
            d / "ex.jsonl",
            idx,
            d / "f_ray.parquet",
            prefix=4,
            suffix=8,
            ngram=(2, 5),
            tokenizer=str(d / "tokenizer.json"),
            threads=1,
            ray=True,
        )
        s = scan(d / "gens.jsonl", idx, d / "s_ray.parquet", min_len=3, max_locations=4, ray=True)
    finally:
        ray.shutdown()
    # Tables name the index directory in their metadata; compare the data and the schema.
    for a, b in ((f, f_local), (s, s_local)):
        ta, tb = pq.read_table(a), pq.read_table(b)
        assert ta.replace_schema_metadata(None).equals(tb.replace_schema_metadata(None))
        ma = json.loads(ta.schema.metadata[b"kdmem"])
        mb = json.loads(tb.schema.metadata[b"kdmem"])
        assert {**ma, "index": ""} == {**mb, "index": ""}


@pytest.mark.slow
def test_two_ray_nodes_match_local_and_retry_a_killed_task(
    corpus: Path, local: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two Ray nodes on this machine (ray.cluster_utils.Cluster, 1 CPU each): index, featurize
    and scan equal the local path; a task whose worker is killed (SIGKILL) is retried, the
    other shards' parts are computed once, and a rerun recomputes nothing."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from kdmem.corpus.partcache import ENV_TEST_LOG

    idx_local, f_local, s_local = local
    d = corpus
    idx = tmp_path / "idx"
    shutil.copytree(d / "shards", idx)
    n = len(list(idx.glob("*.kdt")))
    log = tmp_path / "log"
    log.mkdir()
    monkeypatch.setenv(ENV_TEST_LOG, str(log))  # before the nodes start: workers inherit it
    (log / "kill-featurize-1").touch()
    (log / "kill-scan-lm-2").touch()
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    f, s = tmp_path / "f.parquet", tmp_path / "s.parquet"
    fopts = dict(prefix=4, suffix=8, ngram=(2, 5), tokenizer=str(d / "tokenizer.json"), threads=1)
    try:
        assert len(ray.nodes()) == 2
        # Every shard its own unit (no grouping: shards of >= 1 token count as large), so that
        # featurize and scan below run one task per shard, spread over both nodes.
        import kdmem.corpus.index as index_mod

        monkeypatch.setattr(index_mod, "SMALL_SHARD", 1)
        report = build_index(idx, threads=1, ray=True)
        assert report["built"] == n
        assert build_index(idx, threads=1, ray=True)["built"] == 0  # finished shards are kept
        featurize(d / "ex.jsonl", idx, f, ray=True, **fopts)
        scan(d / "gens.jsonl", idx, s, min_len=3, max_locations=4, ray=True)
        attempts = sorted(p.name.rsplit("-", 1)[0] for p in log.glob("attempt-*"))
        nodes = {p.read_text() for p in log.glob("attempt-*")}
        # A rerun finds every part stored: no task runs at all.
        featurize(d / "ex.jsonl", idx, f, ray=True, **fopts)
        scan(d / "gens.jsonl", idx, s, min_len=3, max_locations=4, ray=True)
        assert len(list(log.glob("attempt-*"))) == len(attempts)
    finally:
        ray.shutdown()
        cluster.shutdown()
    same_index(idx, idx_local)
    want = sorted(
        [f"attempt-featurize-{k}" for k in range(n)]
        + [f"attempt-scan-lm-{k}" for k in range(n)]
        + [f"attempt-scan-hits-{k}" for k in range(n)]
        + ["attempt-featurize-1", "attempt-scan-lm-2"]  # killed once, retried once
    )
    assert attempts == want
    assert not list(log.glob("kill-*"))
    assert len(nodes) == 2, nodes  # both nodes ran tasks
    for a, b in ((f, f_local), (s, s_local)):
        ta, tb = pq.read_table(a), pq.read_table(b)
        assert ta.replace_schema_metadata(None).equals(tb.replace_schema_metadata(None))
        ma = json.loads(ta.schema.metadata[b"kdmem"])
        mb = json.loads(tb.schema.metadata[b"kdmem"])
        assert {**ma, "index": ""} == {**mb, "index": ""}


def test_unit_groups_follow_the_local_plan(tmp_path: Path, corpus: Path) -> None:
    """Hand-made sizes: consecutive small shards (< 2^24 tokens) grouped up to 2^27 tokens,
    a large shard alone, a gap in the selection starts a new group; bare shard files (no
    shards.json) are planned from their headers, to the same groups."""
    from kdmem.corpus.index import MIN_GROUP, SMALL_SHARD, unit_groups

    small, big = SMALL_SHARD // 2, SMALL_SHARD
    sizes = [small] * 20 + [big] + [small] * 3
    names = [f"shard-{k:05d}.kdt" for k in range(len(sizes))]
    entries = [{"name": m, "n_tokens": n} for m, n in zip(names, sizes, strict=True)]
    (tmp_path / "shards.json").write_text(json.dumps({"complete": True, "shards": entries}))
    for m in names:
        (tmp_path / m).write_bytes(b"")
    per_group = MIN_GROUP // small  # 16 small shards reach 2^27 tokens, a 17th would pass it
    assert unit_groups(tmp_path) == [
        list(range(per_group)),
        list(range(per_group, 20)),
        [20],
        [21, 22, 23],
    ]
    assert unit_groups(tmp_path, [0, 1, 5, 6, 20]) == [[0, 1], [5, 6], [20]]
    # An odd size: a group closes before it would pass 2^27 tokens (so that its build, with
    # any thread count, makes it one unit).
    entries[1]["n_tokens"] = small + 1
    (tmp_path / "shards.json").write_text(json.dumps({"complete": True, "shards": entries}))
    assert unit_groups(tmp_path)[0] == list(range(per_group - 1))

    bare = tmp_path / "bare"
    shutil.copytree(corpus / "shards", bare)
    with_manifest = unit_groups(bare)
    (bare / "shards.json").unlink()
    assert unit_groups(bare) == with_manifest


def _task_groups(n_groups: int, task: int, tasks: int) -> list[str]:
    """The --group options of array task ``task`` of ``tasks`` (as study/slurm.py emits)."""
    return [a for g in range(task, n_groups, tasks) for a in ("--group", str(g))]


def test_group_build_writes_the_local_build_files(
    corpus: Path, local: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """One small-shard run is one planned group: `--group 0` writes byte for byte the unit
    file a local build writes, and a local build then has nothing to build."""
    idx_local = local[0]
    idx = corpus / "idx_group0"
    shutil.copytree(corpus / "shards", idx)
    n = len(list(idx.glob("*.kdt")))
    assert run(["index", str(idx), "--groups"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"0\tshards 0-{n - 1}\t{Index(idx_local).n_tokens} tokens"]
    assert run(["index", str(idx), "--group", "0", "--threads", "2"]) == 0
    want = {p.name: p.read_bytes() for p in idx_local.glob("*.kdsa")}
    assert {p.name: p.read_bytes() for p in idx.glob("*.kdsa")} == want
    assert build_index(idx, threads=2)["built"] == 0


@pytest.fixture
def small_groups(monkeypatch: pytest.MonkeyPatch, corpus: Path) -> list[list[int]]:
    """Groups of at most two shards (MIN_GROUP = twice the largest shard), so that the
    test corpus plans several groups; the plan of ``corpus / "shards"``."""
    import kdmem.corpus.index as index_mod

    sizes = index_mod.shard_sizes(corpus / "shards")
    monkeypatch.setattr(index_mod, "MIN_GROUP", 2 * max(sizes))
    plan = index_mod.unit_groups(corpus / "shards")
    assert len(plan) >= 3 and all(1 <= len(g) <= 2 for g in plan), plan
    assert [k for g in plan for k in g] == list(range(len(sizes)))
    return plan


def test_group_array_matches_local(
    corpus: Path, local: tuple[Path, Path, Path], small_groups: list[list[int]]
) -> None:
    """What the emitted Slurm arrays run: task t of 2 takes the planned groups t, t + 2, ...
    (`--group`) for index, featurize and both scan rounds; each group becomes one unit, a
    later local build builds nothing, and the merges equal the local outputs."""
    idx_local, f_local, s_local = local
    d, plan = corpus, small_groups
    idx = d / "idx_groups"
    shutil.copytree(d / "shards", idx)
    tasks = 2
    for t in reversed(range(tasks)):  # any order, any machine
        assert run(["index", str(idx), *_task_groups(len(plan), t, tasks), "--threads", "2"]) == 0
    assert Index(idx).units == plan  # one unit per planned group, whatever the thread count
    files = sorted(p.name for p in idx.glob("*.kdsa"))
    rep = build_index(idx, threads=2)
    assert (rep["built"], rep["units"]) == (0, 0)
    assert sorted(p.name for p in idx.glob("*.kdsa")) == files
    same_index(idx, idx_local)

    ex, tok = str(d / "ex.jsonl"), str(d / "tokenizer.json")
    opts = ["--prefix", "4", "--suffix", "8", "--ngram", "2", "--ngram", "5"]
    for t in range(tasks):
        args = ["featurize", ex, "--index", str(idx), *_task_groups(len(plan), t, tasks)]
        assert run([*args, "--partial-out", str(d / "gfparts"), *opts, "--tokenizer", tok]) == 0
    parts = sorted((d / "gfparts").glob("*.parquet"))
    assert len(parts) == tasks
    merge = ["featurize", ex, "--index", str(idx_local), "--merge", str(d / "gfparts")]
    assert run([*merge, "--out", str(d / "gf.parquet"), *opts, "--tokenizer", tok]) == 0
    same_table(d / "gf.parquet", f_local)

    g = str(d / "gens.jsonl")
    sopts = ["--min-len", "3", "--max-locations", "4"]
    for t in range(tasks):
        args = ["scan", g, "--index", str(idx), *_task_groups(len(plan), t, tasks), *sopts]
        assert run([*args, "--partial-out", str(d / "glm")]) == 0
    for t in range(tasks):
        args = ["scan", g, "--index", str(idx), *_task_groups(len(plan), t, tasks), *sopts]
        assert run([*args, "--lm", str(d / "glm"), "--partial-out", str(d / "ghits")]) == 0
    merge = ["scan", g, "--index", str(idx_local), "--merge", str(d / "ghits")]
    assert run([*merge, "--out", str(d / "gs.parquet")]) == 0
    same_table(d / "gs.parquet", s_local)


def test_group_mismatches_are_one_line(
    corpus: Path,
    local: tuple[Path, Path, Path],
    small_groups: list[list[int]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A group number the plan lacks, a shard set changed since `kdmem shard` wrote its
    manifest (tasks could plan different groups), and parts of two different plans merged:
    each one line naming the problem and the fix, exit status 2."""
    import click

    import kdmem.corpus.index as index_mod

    idx_local = local[0]
    n_groups = len(small_groups)

    def one_line(argv: list[str], *want: str) -> None:
        capsys.readouterr()
        assert run(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("kdmem: error: "), err
        assert all(w in err for w in want), err

    idx = tmp_path / "idx"
    shutil.copytree(corpus / "shards", idx)
    one_line(
        ["index", str(idx), "--group", str(n_groups)],
        f"invalid group = {n_groups}",
        f"plans {n_groups} group(s)",
        "--groups",
    )
    ex, tok = str(corpus / "ex.jsonl"), str(corpus / "tokenizer.json")
    feat = ["featurize", ex, "--index", str(idx_local), "--tokenizer", tok]
    one_line([*feat, "--group", "99", "--partial-out", str(tmp_path / "p")], "invalid group = 99")
    with pytest.raises(click.UsageError, match="--shard or --group"):
        run(["index", str(idx), "--shard", "0", "--group", "0"])

    # A shard file added by hand after `kdmem shard`: no task plans from it.
    shutil.copy(idx / "shard-00000.kdt", idx / "shard-99999.kdt")
    for argv in (["index", str(idx), "--groups"], ["index", str(idx), "--group", "0"]):
        one_line(argv, "shard set changed", "shard-99999.kdt", "rerun `kdmem shard`")
    assert not list(idx.glob("*.kdsa"))

    # Parts of two plans (the groups changed between tasks): the merge names the overlap.
    parts = tmp_path / "parts"
    part = [*feat, "--prefix", "4", "--suffix", "8", "--partial-out", str(parts)]
    assert run([*part, "--group", "0"]) == 0  # small groups: shards 0, 1
    monkeypatch.setattr(index_mod, "MIN_GROUP", 1)  # every shard its own group
    for g in range(1, len(index_mod.shard_sizes(idx_local))):
        assert run([*part, "--group", str(g)]) == 0  # shard 1 again, then the others
    one_line(
        [*feat, "--merge", str(parts), "--out", str(tmp_path / "f.parquet")],
        "duplicated [1]",
        "remove the duplicates",
    )


def test_emitted_index_array_builds_one_group_per_task(
    corpus: Path, local: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """The index array of `kdmem run --emit-slurm`, run by bash as Slurm would (one process
    per task, SLURM_ARRAY_TASK_ID set): the task of the one planned group builds it, the
    others find no group and exit 0 with a note; the result is the local build's files."""
    import os
    import subprocess
    import sys

    from kdmem.rundir import Layout

    conf = tmp_path / "e.toml"
    conf.write_text(
        '[run]\nname = "t"\ndevice = "cpu"\n[data]\ncorpus = ["c.jsonl"]\ntokenizer = "tok"\n'
        '[models]\nteacher = "T"\nstudent = "S"\n[slurm]\narray_tasks = 2\ncpus_per_task = 1\n'
    )
    rd, out = tmp_path / "rd", tmp_path / "slurm"
    assert run(["run", str(conf), "--run-dir", str(rd), "--emit-slurm", str(out)]) == 0
    shutil.copytree(corpus / "shards", Layout(rd).shards)
    script = next((out / "jobs").glob("*-index-parts.sbatch"))
    assert "--group" in script.read_text() and "--shard" not in script.read_text()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    logs = []
    for task in range(2):
        r = subprocess.run(
            ["bash", str(script)],
            env={**env, "SLURM_ARRAY_TASK_ID": str(task)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        logs.append(r.stdout)
    assert logs[0].startswith("kdmem index: ") and "1 units written" in logs[0]
    assert logs[1].strip() == "no group for this task (1 planned)"
    want = {p.name: p.read_bytes() for p in local[0].glob("*.kdsa")}
    assert {p.name: p.read_bytes() for p in Layout(rd).shards.glob("*.kdsa")} == want
