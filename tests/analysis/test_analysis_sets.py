"""kdmem sets: every number checked against plain Python set arithmetic over the raw tables."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from scipy import stats
from tests.analysis.synthetic import SyntheticSpec, write_synthetic_run

from kdmem.analysis import RunDir, parse_role
from kdmem.analysis.sets import MAX_IDS, analyze_sets, family_sets, format_sets
from kdmem.cli import main
from kdmem.errors import (
    FormatVersionError,
    MissingStageInputError,
    StudySetMismatchError,
    TableSchemaError,
)


def raw_set(run: Path, role: str) -> set[int]:
    """The oracle's view: read the Parquet file with pyarrow and build a Python set."""
    t = pq.read_table(run / "measure" / f"{role}.parquet").to_pydict()
    return {i for i, m in zip(t["example_id"], t["memorized"], strict=True) if m}


def ratio(a: int, b: int) -> float | None:
    return None if b == 0 else a / b


def test_parse_role() -> None:
    r = parse_role("student_soft_T4_seed1")
    assert (r.kind, r.temperature, r.seed) == ("student_soft", 4.0, 1)
    r = parse_role("student_soft_T0.5")
    assert (r.kind, r.temperature, r.seed) == ("student_soft", 0.5, None)
    assert parse_role("baseline_seed12").seed == 12
    r = parse_role("student_soft_filtered_seed0")
    assert (r.kind, r.seed) == ("student_soft_filtered", 0)
    assert parse_role("teacher") == parse_role("teacher")
    with pytest.raises(TableSchemaError):
        parse_role("Teacher-1")


def test_family_sets_match_the_oracle(synthetic_run: Path) -> None:
    fam = family_sets(RunDir(synthetic_run))
    run = synthetic_run
    T = raw_set(run, "teacher")
    n = pq.read_metadata(run / "measure" / "teacher.parquet").num_rows
    assert fam["n_examples"] == n
    for r in fam["rates"]:
        s = raw_set(run, r["role"])
        assert r["n_memorized"] == len(s)
        assert r["rate"] == pytest.approx(len(s) / n)
    assert [r["role"] for r in fam["rates"]][:2] == ["teacher", "baseline_seed0"]
    soft_rates = [len(raw_set(run, f"student_soft_seed{k}")) / n for k in range(3)]
    assert fam["rates_by_kind"]["student_soft"]["mean"] == pytest.approx(np.mean(soft_rates))
    assert fam["rates_by_kind"]["student_soft"]["std"] == pytest.approx(np.std(soft_rates, ddof=1))
    assert fam["rates_by_kind"]["teacher"]["std"] is None

    assert [e["seed"] for e in fam["per_seed"]] == [0, 1, 2]
    for e in fam["per_seed"]:
        k = e["seed"]
        B = raw_set(run, f"baseline_seed{k}")
        soft, hard = raw_set(run, f"student_soft_seed{k}"), raw_set(run, f"student_hard_seed{k}")
        assert e["roles"]["baseline"] == f"baseline_seed{k}"
        assert (e["teacher"], e["baseline"]) == (len(T), len(B))
        assert e["easy"] == len(T & B)
        assert e["teacher_specific"] == len(T - B)
        assert e["baseline_specific"] == len(B - T)
        for kind, S in (("soft", soft), ("hard", hard)):
            blk = e[kind]
            assert blk["n_memorized"] == len(S)
            assert blk["in_easy"] == len(S & T & B)
            assert blk["share_in_easy"] == pytest.approx(ratio(len(S & T & B), len(S)))
            assert blk["inherited"] == len((T & S) - B)
            assert blk["inherited_ids"] == sorted((T & S) - B)[:MAX_IDS]
            assert blk["in_teacher"] == len(S & T)
            assert blk["in_baseline"] == len(S & B)
            assert blk["new"] == len(S - T - B)
        inh_s, inh_h = len((T & soft) - B), len((T & hard) - B)
        assert e["inherited_ratio_hard_to_soft"] == ratio(inh_h, inh_s)
        sh = e["soft_hard"]
        assert sh["intersection"] == len(soft & hard)
        assert sh["union"] == len(soft | hard)
        assert sh["jaccard"] == pytest.approx(len(soft & hard) / len(soft | hard))
        assert sh["share_of_soft_in_hard"] == pytest.approx(len(soft & hard) / len(soft))
        assert sh["share_of_hard_in_soft"] == pytest.approx(len(soft & hard) / len(hard))
        assert sh["hard_only"] == len(hard - soft)
        assert sh["hard_only_in_teacher"] == len((hard - soft) & T)
        assert sh["hard_only_ids"] == sorted(hard - soft)
        assert sh["soft_only"] == len(soft - hard)
        assert sh["soft_only_in_teacher"] == len((soft - hard) & T)

    st = fam["seed_stability"]
    b_all = set.intersection(*(raw_set(run, f"baseline_seed{k}") for k in range(3)))
    assert st["n_baseline_seeds"] == 3
    assert st["baseline_all_seeds"] == len(b_all)
    for kind in ("soft", "hard"):
        s_any = set.union(*(raw_set(run, f"student_{kind}_seed{k}") for k in range(3)))
        assert st[kind]["student_any_seed"] == len(s_any)
        assert st[kind]["baseline_all_student_none"] == len(b_all - s_any)
        assert st[kind]["baseline_all_student_none_ids"] == sorted(b_all - s_any)

    sweep = {s["temperature"]: s for s in fam["temperature_sweep"]}
    assert sorted(sweep) == [1.0, 2.0, 4.0]
    for t, s in sweep.items():
        assert s["mean"] == pytest.approx(len(raw_set(run, f"student_soft_T{t:g}_seed0")) / n)
        assert s["n_runs"] == 1 and s["std"] is None
    # the planted relationship: a hotter teacher distribution lowers student memorization
    assert sweep[1.0]["mean"] > sweep[4.0]["mean"]


def test_cross_family_overlap_and_zlib_correlation(tmp_path: Path, synthetic_run: Path) -> None:
    # Second family: other ids partly overlapping (offset 500), other seed.
    olmo = write_synthetic_run(
        tmp_path / "olmo", SyntheticSpec(n=1500, seeds=1), seed=7, id_offset=500
    )
    res = analyze_sets([RunDir(synthetic_run), RunDir(olmo)])
    assert [f["name"] for f in res["families"]] == ["pythia", "olmo"]
    (pair,) = res["cross_family"]
    common = set(range(500, 1500))
    assert pair["n_common"] == len(common)
    assert pair["n_only_first"] == 500 and pair["n_only_second"] == 500
    for kind, (ra, rb) in {
        "teacher": ("teacher", "teacher"),
        "baseline": ("baseline_seed0", "baseline_seed0"),
        "student_soft": ("student_soft_seed0", "student_soft_seed0"),
        "student_hard": ("student_hard_seed0", "student_hard_seed0"),
    }.items():
        a, b = raw_set(synthetic_run, ra) & common, raw_set(olmo, rb) & common
        o = pair["overlap"][kind]
        assert o["roles"] == [ra, rb]
        assert (o["first"], o["second"], o["intersection"]) == (len(a), len(b), len(a & b))
        assert o["jaccard"] == pytest.approx(len(a & b) / len(a | b))
        assert o["ids"] == sorted(a & b)
    fa = pq.read_table(synthetic_run / "features.parquet").to_pydict()
    fb = pq.read_table(olmo / "features.parquet").to_pydict()
    za = dict(zip(fa["example_id"], fa["zlib_bytes"], strict=True))
    zb = dict(zip(fb["example_id"], fb["zlib_bytes"], strict=True))
    ids = sorted(common)
    x, y = [za[i] for i in ids], [zb[i] for i in ids]
    zc = pair["zlib_correlation"]
    assert zc["pearson"] == pytest.approx(stats.pearsonr(x, y).statistic)
    assert zc["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic)

    text = format_sets(res)
    assert "== pythia vs olmo: 1000 common examples" in text
    assert "zlib_bytes correlation" in text


def test_families_without_common_ids(tmp_path: Path, synthetic_run: Path) -> None:
    other = write_synthetic_run(tmp_path / "other", SyntheticSpec(n=200, seeds=1), id_offset=10**6)
    with pytest.raises(StudySetMismatchError, match="share no example id"):
        analyze_sets([RunDir(synthetic_run), RunDir(other)])


def test_untagged_single_runs(tmp_path: Path, synthetic_run: Path) -> None:
    """A run without seeds: teacher, baseline, student_soft; no hard student."""
    run = tmp_path / "single"
    (run / "measure").mkdir(parents=True)
    for src, dst in (
        ("teacher", "teacher"),
        ("baseline_seed0", "baseline"),
        ("student_soft_seed0", "student_soft"),
    ):
        shutil.copy(
            synthetic_run / "measure" / f"{src}.parquet", run / "measure" / f"{dst}.parquet"
        )
    fam = family_sets(RunDir(run))
    (e,) = fam["per_seed"]
    assert e["seed"] is None and "hard" not in e and "soft_hard" not in e
    T, B, S = raw_set(run, "teacher"), raw_set(run, "baseline"), raw_set(run, "student_soft")
    assert e["soft"]["inherited"] == len((T & S) - B)
    assert fam["seed_stability"]["soft"]["baseline_all_student_none"] == len(B - S)
    assert any("student_hard" in n for n in fam["notes"])
    assert fam["temperature_sweep"] == []


def test_mismatched_study_sets(run_copy: Path) -> None:
    path = run_copy / "measure" / "baseline_seed1.parquet"
    t = pq.read_table(path)
    pq.write_table(t.slice(0, t.num_rows - 3), path)
    with pytest.raises(StudySetMismatchError) as ei:
        family_sets(RunDir(run_copy))
    msg = str(ei.value)
    assert "\n" not in msg and "baseline_seed1.parquet" in msg and "different study sets" in msg


def test_missing_baseline_names_file_and_stage(run_copy: Path) -> None:
    for p in (run_copy / "measure").glob("baseline*.parquet"):
        p.unlink()
    with pytest.raises(MissingStageInputError) as ei:
        family_sets(RunDir(run_copy))
    msg = str(ei.value)
    assert "measure/baseline.parquet" in msg and "kdmem measure" in msg and "\n" not in msg


def test_incompatible_run_directory(run_copy: Path) -> None:
    manifest = json.loads((run_copy / "manifest.json").read_text())
    manifest["version"] = 99
    manifest["kdmem_version"] = "9.0.0"
    (run_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FormatVersionError, match=re.escape("version 99 written by kdmem 9.0.0")):
        RunDir(run_copy)


def test_unsorted_or_badly_typed_table(run_copy: Path) -> None:
    path = run_copy / "measure" / "teacher.parquet"
    t = pq.read_table(path)
    pq.write_table(t.take(pa.array(np.arange(t.num_rows)[::-1])), path)
    with pytest.raises(TableSchemaError, match="not strictly increasing"):
        family_sets(RunDir(run_copy))
    pq.write_table(t.drop_columns(["memorized"]), path)
    with pytest.raises(TableSchemaError, match="no memorized column"):
        family_sets(RunDir(run_copy))


def test_cli_sets(synthetic_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "sets.json"
    r = CliRunner().invoke(main, ["sets", str(synthetic_run), "--out", str(out)])
    assert r.exit_code == 0, r.output
    printed = r.stdout
    assert "|T∩B|" in printed and "seed stability" in printed
    res = json.loads(out.read_text())
    assert res["format"] == "kdmem-sets" and res["version"] == 1
    assert res["families"][0]["per_seed"][0]["easy"] == len(
        raw_set(synthetic_run, "teacher") & raw_set(synthetic_run, "baseline_seed0")
    )


def test_cli_sets_error_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(main, ["sets", str(tmp_path / "empty")])
    assert r.exit_code == 2
    err = r.stderr.strip()
    assert err.startswith("kdmem: error: ") and "\n" not in err and "teacher" in err


def test_features_may_cover_more_examples_than_measure(run_copy: Path) -> None:
    """featurize covers every example; measure may skip short ones: a superset is cut down."""
    p = run_copy / "features.parquet"
    t = pq.read_table(p)
    extra = t.slice(0, 5).set_column(0, "example_id", pa.array(np.arange(10**6, 10**6 + 5)))
    pq.write_table(pa.concat_tables([t, extra]), p)
    run = RunDir(run_copy)
    f = run.features()
    assert f.n == 1500 and f.example_id[-1] == 1499
    np.testing.assert_array_equal(f.column("zlib_bytes"), t.column("zlib_bytes").to_numpy())
    pq.write_table(t.slice(3), p)
    with pytest.raises(StudySetMismatchError, match="lacks 3 of the 1500 example ids"):
        RunDir(run_copy).features()


def test_sweep_places_the_main_students_jaccard_and_groups(run_copy: Path) -> None:
    """With the run's config: the main soft students join the temperature sweep at their
    temperature, with the spread over their seeds; Jaccard of seeds' memorized sets and
    per-group counts match set arithmetic (oracles)."""
    import pyarrow as pa

    (run_copy / "config.toml").write_text("[soft]\ntemperature = 3.0\n")
    ids = RunDir(run_copy).primary("teacher").example_id
    groups = np.where(ids % 5 == 0, "planted", "natural")
    pq.write_table(
        pa.table({"example_id": pa.array(ids, pa.int64()), "group": list(groups)}),
        run_copy / "data" / "groups.parquet",
    )
    fam = family_sets(RunDir(run_copy))
    n = len(ids)
    sweep = {s["temperature"]: s for s in fam["temperature_sweep"]}
    assert sorted(sweep) == [1.0, 2.0, 3.0, 4.0]
    main = sweep[3.0]
    assert main["main"] and main["n_runs"] == 3 and not sweep[1.0]["main"]
    rates = [len(raw_set(run_copy, f"student_soft_seed{k}")) / n for k in range(3)]
    assert main["mean"] == pytest.approx(np.mean(rates))
    assert main["std"] == pytest.approx(np.std(rates, ddof=1))
    jac = fam["seed_stability"]["jaccard"]
    for kind in ("baseline", "student_soft", "student_hard"):
        sets_ = [raw_set(run_copy, f"{kind}_seed{k}") for k in range(3)]
        want = [
            len(a & b) / len(a | b)
            for a, b in ((sets_[0], sets_[1]), (sets_[0], sets_[2]), (sets_[1], sets_[2]))
        ]
        assert [p["jaccard"] for p in jac[kind]["pairs"]] == pytest.approx(want)
        assert jac[kind]["mean"] == pytest.approx(np.mean(want))
    planted = set(ids[groups == "planted"].tolist())
    for g, ids_g in (("planted", planted), ("natural", set(ids.tolist()) - planted)):
        got = fam["groups"][g]
        assert got["n"] == len(ids_g)
        assert got["memorized"]["teacher"] == len(raw_set(run_copy, "teacher") & ids_g)


def test_paper_directions_hand_computed() -> None:
    """Two seeds, hand-made counts: every direction recomputed by hand."""
    from kdmem.analysis.sets import paper_directions

    rates = {
        "baseline": {"mean": 0.10},
        "student_soft": {"mean": 0.05},
        "student_hard": {"mean": 0.12},
    }

    def block(n: int, easy: int, inh: int) -> dict[str, int]:
        return {"n_memorized": n, "in_easy": easy, "inherited": inh}

    per_seed = [
        {"soft": block(10, 10, 0), "hard": block(20, 17, 3)},
        {"soft": block(10, 9, 1), "hard": block(20, 19, 1)},
    ]
    d = paper_directions(rates, per_seed)
    # hard 0.12 > baseline 0.10: the first direction fails on the hard student.
    assert d["students_below_baseline"]["holds"] is False
    # soft 19/20 = 95%, hard 36/40 = 90%: both >= 90%.
    assert d["students_in_easy"]["soft"]["share"] == 0.95
    assert d["students_in_easy"]["hard"]["share"] == 0.9
    assert d["students_in_easy"]["holds"] is True
    # (T ∩ S) \\ B: soft 0 + 1 = 1, hard 3 + 1 = 4.
    inh = d["hard_inherits_more"]
    assert (inh["soft_inherited"], inh["hard_inherited"], inh["holds"]) == (1, 4, True)
    # Without students nothing can be checked: None, not a pass.
    none = paper_directions({"baseline": {"mean": 0.1}}, [{}])
    assert none["students_below_baseline"]["holds"] is None
    assert none["students_in_easy"]["holds"] is None
    assert none["hard_inherits_more"]["holds"] is None
