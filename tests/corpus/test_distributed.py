"""Scale-out: per-shard tasks (Ray, or plain CLI calls as a Slurm array runs them) merge into
exactly the local path's output."""

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
    small shards, so the files may differ): every n-gram of every document, n = 1..6."""
    ia, ib = Index(a), Index(b)
    assert (ia.n_shards, ia.n_tokens, ia.n_docs) == (ib.n_shards, ib.n_tokens, ib.n_docs)
    ss = open_shards(a)
    qs = [ss[i][j : j + n] for i in range(len(ss)) for j in range(0, len(ss[i]), 5)
          for n in (1, 3, 6)]  # fmt: skip
    assert len(qs) > 100
    assert ia.count_many(qs).tolist() == ib.count_many(qs).tolist()
    for x, y in zip(ia.locate_many(qs[:50]), ib.locate_many(qs[:50]), strict=True):
        assert all(np.array_equal(u, v) for u, v in zip(x, y, strict=True))


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


def test_ray_unit_groups_follow_the_local_plan(tmp_path: Path) -> None:
    """Hand-made sizes: consecutive small shards (< 2^24 tokens) grouped up to 2^27 tokens,
    a large shard alone, a gap in the selection starts a new group."""
    from kdmem.corpus.index import MIN_GROUP, SMALL_SHARD, ray_unit_groups

    small, big = SMALL_SHARD // 2, SMALL_SHARD
    sizes = [small] * 20 + [big] + [small] * 3
    entries = [{"n_tokens": n} for n in sizes]
    (tmp_path / "shards.json").write_text(json.dumps({"shards": entries}))
    for k in range(len(sizes)):
        (tmp_path / f"shard-{k:05d}.kdt").write_bytes(b"")
    per_group = MIN_GROUP // small  # 16 small shards reach 2^27 tokens
    assert ray_unit_groups(tmp_path) == [
        list(range(per_group)),
        list(range(per_group, 20)),
        [20],
        [21, 22, 23],
    ]
    assert ray_unit_groups(tmp_path, [0, 1, 5, 6, 20]) == [[0, 1], [5, 6], [20]]
    (tmp_path / "shards.json").unlink()
    assert ray_unit_groups(tmp_path, [0, 1]) == [[0], [1]]
