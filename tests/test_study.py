"""End to end: the demo's stage graph at toy size runs every stage, a rerun skips them all,
and changing one config key re-runs exactly the stages downstream of it."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from kdmem.config import load_config
from kdmem.demo import DemoSize, demo_stages, format_headline, run_demo
from kdmem.models.load import model_hash
from kdmem.pipeline import Pipeline
from kdmem.study import build_stages, run_experiment

TINY = DemoSize(
    n_examples=120,
    planted_per_count=1,
    vocab_size=512,
    pretrain_docs=200,
    student_width=32,
    teacher_width=48,
    teacher_layers=2,
    teacher_epochs=2,
    student_epochs=2,
    batch_size=16,
    seeds=(0,),
    temperatures=(),
    every_steps=8,  # 2 snapshots per model (2 epochs of 8 steps), memorization over training
    steps_subset=40,
)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    rd = tmp_path_factory.mktemp("study") / "demo"
    summary = run_demo(rd, TINY, log=lambda _m: None)
    return rd, summary


def test_every_stage_runs_and_writes_its_outputs(demo_run: tuple[Path, dict]) -> None:
    rd, summary = demo_run
    manifest = json.loads((rd / "manifest.json").read_text())
    assert manifest["format"] == "kdmem-run"
    status = {name: s["status"] for name, s in manifest["stages"].items()}
    # A stage whose input does not exist (no memorized example to learn a predictor from)
    # is recorded as skipped, with its reason, and so is everything that needs it.
    assert set(status.values()) <= {"done", "skipped"}
    skipped = {n for n, st in status.items() if st == "skipped"}
    assert skipped <= {"predict", "filter_flag", "student_soft_filtered_seed0",
                       "measure_student_soft_filtered_seed0", "filter"}  # fmt: skip
    if "predict" in skipped:
        assert {"filter_flag", "filter"} <= skipped
        assert "no predictor" in json.loads((rd / "filter" / "filter.json").read_text())["skipped"]
    for role in ("teacher", "baseline_seed0", "student_soft_seed0", "student_hard_seed0"):
        assert (rd / "measure" / f"{role}.parquet").exists()
        assert (rd / "validation" / f"{role}.json").exists()
    # The teacher and the first baseline are measured in one pair-mode stage.
    assert "measure_teacher" in manifest["stages"]
    assert "measure_baseline_seed0" not in manifest["stages"]
    base = json.loads(pq.read_schema(rd / "measure" / "baseline_seed0.parquet").metadata[b"kdmem"])
    assert base["role"] == "baseline_seed0" and base["model_hash"] == model_hash(
        rd / "models" / "baseline_seed0"
    )
    assert Path(base["measured_with"]) == rd / "models" / "teacher"
    metrics = manifest["stages"]["measure_teacher"]["metrics"]
    assert metrics["baseline_seed0"]["memorized"] == base["n_memorized"]
    assert (rd / "features.parquet").exists() and (rd / "sets" / "sets.json").exists()
    assert (rd / "filter" / "filter.json").exists()
    html = (rd / "report" / "index.html").read_text()
    assert "Memorization rates" in html
    # Memorization over training: every trained model measured at each kept snapshot.
    steps = json.loads((rd / "measure" / "steps" / "student_soft_seed0.json").read_text())
    assert [p["step"] for p in steps["steps"]] == [8, 16]
    assert summary["sections"]["training"] == "ok"
    assert set(summary["rates"]) >= {"teacher", "baseline_seed0", "student_soft_seed0"}
    assert "report:" in format_headline(summary, rd)


def _spans_oracle(shards: Path, conts: dict[int, list[int]], min_len: int) -> list[tuple]:
    """Maximal verbatim spans by brute force: tokens as characters, documents joined by a
    separator no token maps to, Python's substring search; counts every (overlapping)
    occurrence."""
    from kdmem.corpus import open_shards

    def chars(ids: list[int]) -> str:
        return "".join(chr(0x100 + int(t)) for t in ids)

    corpus = "\x00".join(chars(d.tolist()) for d in open_shards(shards))
    out = []
    for eid, toks in sorted(conts.items()):
        s = chars(toks)
        lm = []
        for i in range(len(s)):
            n = 0
            while i + n < len(s) and s[i : i + n + 1] in corpus:
                n += 1
            lm.append(n)
        for i, n in enumerate(lm):
            if n >= min_len and not (i > 0 and lm[i - 1] > n):  # not inside the span at i-1
                sub, count, at = s[i : i + n], 0, corpus.find(s[i : i + n])
                while at >= 0:
                    count, at = count + 1, corpus.find(sub, at + 1)
                out.append((eid, i, n, count))
    return out


def test_scan_stage_finds_the_verbatim_spans_of_the_teacher_s_continuations(
    demo_run: tuple[Path, dict],
) -> None:
    rd, summary = demo_run
    (gen,) = (rd / "generations").glob("*/generations.parquet")
    g = pq.read_table(gen).to_pydict()
    c = pq.read_table(rd / "scan" / "teacher_continuations.parquet").to_pydict()
    prefix = TINY.prefix
    assert c["example_id"] == g["example_id"]
    assert c["input_ids"] == [ids[prefix:] for ids in g["input_ids"]]  # the generated tokens
    spans = pq.read_table(rd / "scan" / "teacher_spans.parquet").to_pydict()
    got = list(
        zip(spans["example_id"], spans["start"], spans["length"], spans["count"], strict=True)
    )
    conts = dict(zip(c["example_id"], c["input_ids"], strict=True))
    assert got == _spans_oracle(rd / "shards", conts, TINY.suffix)  # min_len = data.suffix
    s = summary["scan"]
    assert (s["n_continuations"], s["min_len"]) == (len(conts), TINY.suffix)
    assert s["n_with_span"] == len({e for e, *_ in got}) and s["n_spans"] == len(got)
    assert summary["sections"]["scan"] == "ok"
    print(f"scan: {s['n_with_span']} of {len(conts)} continuations with a span >= {TINY.suffix}")


def test_scan_stage_with_short_spans_against_the_oracle(
    demo_run: tuple[Path, dict], tmp_path: Path
) -> None:
    """The stage with scan.min_len = 3 on the demo run's index and continuations, against the
    brute-force oracle. (The tiny teacher's continuations are mostly loops of one token, so
    spans of data.suffix tokens are rare or absent; 3-token spans are plenty.)"""
    from kdmem.pipeline import StageContext
    from kdmem.study.stages import scan_stage

    rd, _ = demo_run
    (tmp_path / "scan").mkdir()
    (tmp_path / "shards").symlink_to(rd / "shards")
    cont = tmp_path / "scan" / "teacher_continuations.parquet"
    cont.symlink_to(rd / "scan" / "teacher_continuations.parquet")
    cfg = load_config(rd / "demo.toml", ["scan.min_len=3", "scan.max_locations=2"])
    metrics = scan_stage(cfg)(StageContext(tmp_path, None, "scan", lambda _m: None))
    spans = pq.read_table(tmp_path / "scan" / "teacher_spans.parquet").to_pydict()
    got = list(
        zip(spans["example_id"], spans["start"], spans["length"], spans["count"], strict=True)
    )
    c = pq.read_table(cont).to_pydict()
    want = _spans_oracle(rd / "shards", dict(zip(c["example_id"], c["input_ids"], strict=True)), 3)
    assert len(want) > 50 and got == want and metrics == {"spans": len(want)}
    assert all(
        len(loc) == min(n, 2) for loc, n in zip(spans["document"], spans["count"], strict=True)
    )


def test_rerun_skips_and_one_key_reruns_only_its_dependents(demo_run: tuple[Path, dict]) -> None:
    rd, _ = demo_run
    cfg = load_config(rd / "demo.toml")
    stages = build_stages(cfg, demo_stages(TINY))
    assert {p.action for p in Pipeline(rd, stages).plan()} == {"skip"}
    changed = load_config(rd / "demo.toml", ["featurize.ngram=[4]"])
    plan = Pipeline(rd, build_stages(changed, demo_stages(TINY))).plan()
    rerun = {p.stage.name for p in plan if p.action != "skip"}
    assert rerun == {
        "featurize",
        "predict",
        "filter_flag",
        "student_soft_filtered_seed0",
        "measure_student_soft_filtered_seed0",
        "filter",
        "report",
    }
    ran: list[str] = []
    run_experiment(changed, rd, before=demo_stages(TINY), log=ran.append)
    assert sorted(m.split("]")[0][1:] for m in ran if "removing its outputs" in m) == sorted(rerun)


def test_a_full_disk_stops_the_study_in_one_line_and_the_rerun_finishes(
    demo_run: tuple[Path, dict], tmp_path: Path
) -> None:
    """`kdmem run` on a disk that fills up part way (a real tmpfs with a third of the run's
    size free, where permitted): one line naming the file, the stages before it kept; after
    space is freed the rerun resumes and every model memorizes what the roomy run's did."""
    from tests.full_disk import full_tmpfs

    from kdmem.errors import DiskFullError

    ref, _ = demo_run
    need = sum(p.stat().st_size for p in ref.rglob("*") if p.is_file())
    with full_tmpfs(tmp_path, size=f"{2 * need // 1024 + 4096}k", give_back=need // 3) as (
        mnt,
        filler,
    ):
        rd = mnt / "demo"
        with pytest.raises(DiskFullError) as e:
            run_demo(rd, TINY, log=lambda _m: None)
        assert "\n" not in str(e.value) and str(mnt) in str(e.value)
        done = [
            n
            for n, s in json.loads((rd / "manifest.json").read_text())["stages"].items()
            if s["status"] == "done"
        ]
        assert done, "the stages before the full disk are kept"
        filler.unlink()
        run_demo(rd, TINY, log=lambda _m: None)
        for t in sorted((ref / "measure").glob("*.parquet")):
            a = pq.read_table(t, columns=["example_id", "memorized"])
            b = pq.read_table(rd / "measure" / t.name, columns=["example_id", "memorized"])
            assert a.equals(b), t.name
