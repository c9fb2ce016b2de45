"""kdmem report: contents, escaping, missing optional inputs, and a real render in headless
Chromium (Debian package ``chromium``; set KDMEM_REQUIRE_CHROMIUM=1 to fail instead of skip
when it is absent, as CI does)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kdmem.analysis.report import build_report
from kdmem.cli import main
from kdmem.errors import MissingStageInputError, StudySetMismatchError

PLANTED = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.fixture(scope="module")
def report_dir(predicted_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    build_report(predicted_run, out, max_examples=100)
    return out


def test_report_files_and_summary(report_dir: Path, predicted_run: Path) -> None:
    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["format"] == "kdmem-report" and summary["version"] == 1
    # Every section but the cross-family one (one family here) has its inputs.
    assert {k for k, v in summary["sections"].items() if v != "ok"} == {"families"}
    assert summary["n_examples"] == 1500
    assert summary["rates"]["teacher"]["n_memorized"] == 90
    assert summary["predictor"]["target"] == "student_soft_seed0"
    assert [s["temperature"] for s in summary["temperature_sweep"]] == [1.0, 2.0, 4.0]
    assert len(summary["utility"]) == 10
    # Filter section: counts straight from the two measure tables and flagged.json.
    import pyarrow.parquet as pq

    def memorized(role: str) -> set[int]:
        t = pq.read_table(predicted_run / "measure" / f"{role}.parquet").to_pydict()
        return {i for i, m in zip(t["example_id"], t["memorized"], strict=True) if m}

    before, after = memorized("student_soft_seed0"), memorized("student_soft_seed1")
    flagged = set(json.loads((predicted_run / "filter" / "flagged.json").read_text())["flagged"])
    f = summary["filter"]
    assert (f["memorized_before"], f["memorized_after"]) == (len(before), len(after))
    assert f["n_new"] == len(after - before) and f["n_flagged"] == len(flagged) > 0
    assert f["removed_and_memorized"] == len(before & flagged)
    expected = {
        "fig-rates.png",
        "fig-upset.png",
        "fig-zlib-vs-ppl.png",
        "fig-entropy-vs-logprob.png",
        "fig-temperature.png",
        "fig-coefficients.png",
        "fig-roc-pr.png",
        "fig-training.png",
    }
    assert set(summary["figures"]) == expected
    for name in expected:
        assert (report_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (report_dir / "index.html").read_text()
    assert html.count("data:image/png;base64,") == len(expected)  # self-contained
    assert 'src="http' not in html and "<link" not in html


def test_planted_script_is_escaped(report_dir: Path, predicted_run: Path) -> None:
    html = (report_dir / "index.html").read_text()
    assert PLANTED not in html
    assert "<script" not in html.lower()
    assert ESCAPED in html


def test_missing_optional_inputs_become_notes(tmp_path: Path, synthetic_run: Path) -> None:
    run = tmp_path / "bare"
    (run / "measure").mkdir(parents=True)
    for role in ("teacher", "student_soft_seed0"):
        shutil.copy(synthetic_run / "measure" / f"{role}.parquet", run / "measure")
    rep = build_report(run)
    s = rep.summary["sections"]
    assert s["rates"] == "ok" and s["examples"] == "ok"
    for sec in ("sets", "zlib", "mechanism", "temperature", "predictor", "utility", "filter",
                "scan"):  # fmt: skip
        assert s[sec] == "omitted", sec
    notes = rep.summary["notes"]
    assert "kdmem filter" in notes["filter"]
    # A skipped filter stage says why, escaped.
    (run / "filter").mkdir()
    (run / "filter" / "filter.json").write_text(json.dumps({"skipped": f"no predictor: {PLANTED}"}))
    rep = build_report(run)
    assert "skipped" in rep.summary["notes"]["filter"]
    assert ESCAPED in rep.index.read_text() and PLANTED not in rep.index.read_text()
    assert "kdmem measure" in notes["sets"] and "baseline" in notes["sets"]
    assert "kdmem featurize" in notes["zlib"]
    assert "kdmem predict" in notes["predictor"]
    assert "kdmem scan" in notes["scan"] and "[hard]" in notes["scan"]
    html = rep.index.read_text()
    assert "Section omitted" in html and "(text unavailable)" in html


def test_report_errors(tmp_path: Path, run_copy: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingStageInputError, match="kdmem measure"):
        build_report(tmp_path / "empty")
    import pyarrow.parquet as pq

    p = run_copy / "features.parquet"
    pq.write_table(pq.read_table(p).slice(1), p)
    with pytest.raises(StudySetMismatchError):
        build_report(run_copy)
    r = CliRunner().invoke(main, ["report", str(run_copy)])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "different study sets" in r.stderr


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("KDMEM_REQUIRE_CHROMIUM") == "1":
            pytest.fail("chromium not found (Debian: apt-get install chromium)")
        pytest.skip("chromium not installed (Debian: apt-get install chromium)")
    return exe


def _headless(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",  # tests may run as root in containers
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, timeout=90, check=False)


def test_renders_in_headless_chromium(report_dir: Path, tmp_path: Path) -> None:
    exe = _chromium()
    url = (report_dir / "index.html").resolve().as_uri()
    shot = tmp_path / "shot.png"
    r = _headless(exe, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2400", url)
    assert shot.exists(), r.stderr.decode(errors="replace")[-2000:]
    from PIL import Image

    with Image.open(shot) as im:
        px = np.asarray(im.convert("L"), dtype=np.float64)
    assert px.shape == (2400, 1280)
    assert px.std() > 20  # not a blank page: text, tables and figures
    assert (px < 128).mean() > 0.01

    r = _headless(exe, tmp_path / "profile", "--dump-dom", url)
    dom = r.stdout.decode("utf-8")
    assert r.returncode == 0 and "</html>" in dom, r.stderr.decode(errors="replace")[-2000:]
    for cls in (
        "rates",
        "sets",
        "upset",
        "zlib",
        "mechanism",
        "temperature",
        "predictor-paper",
        "predictor-natural",
        "coefficients",
        "calibration",
        "utility",
        "training",
        "spot-checks",
        "directions",
        "examples",
    ):
        assert f'<table class="{cls}">' in dom, cls
    assert "<script" not in dom.lower()
    assert ESCAPED in dom  # the planted markup is text in the DOM, not an element
    assert dom.count("<img ") == 8


def test_teacher_only_run(tmp_path: Path, synthetic_run: Path) -> None:
    run = tmp_path / "teacher-only"
    (run / "measure").mkdir(parents=True)
    shutil.copy(synthetic_run / "measure" / "teacher.parquet", run / "measure")
    shutil.copy(synthetic_run / "features.parquet", run)
    rep = build_report(run, max_examples=0)
    s = rep.summary["sections"]
    assert s["rates"] == "ok"
    assert s["examples"] == "omitted" and s["zlib"] == "omitted" and s["sets"] == "omitted"
    assert "baseline" in rep.summary["notes"]["zlib"]


def test_directions_match_the_sets_analysis(report_dir: Path, predicted_run: Path) -> None:
    from kdmem.analysis import RunDir
    from kdmem.analysis.sets import family_sets

    summary = json.loads((report_dir / "summary.json").read_text())
    fam = family_sets(RunDir(predicted_run))
    assert summary["directions"] == fam["directions"]
    # Recomputed from the measure tables by hand: hard vs soft teacher-specific inheritance.
    import pyarrow.parquet as pq

    def mem(role: str) -> set[int]:
        t = pq.read_table(predicted_run / "measure" / f"{role}.parquet").to_pydict()
        return {i for i, m in zip(t["example_id"], t["memorized"], strict=True) if m}

    t = mem("teacher")
    soft = sum(len((t & mem(f"student_soft_seed{k}")) - mem(f"baseline_seed{k}")) for k in range(3))
    hard = sum(len((t & mem(f"student_hard_seed{k}")) - mem(f"baseline_seed{k}")) for k in range(3))
    inh = summary["directions"]["hard_inherits_more"]
    assert (inh["soft_inherited"], inh["hard_inherited"], inh["holds"]) == (soft, hard, hard > soft)
    html = (report_dir / "index.html").read_text()
    assert 'class="directions"' in html


def test_report_groups_jaccard_steps_and_both_filter_models(
    report_dir: Path, predicted_run: Path
) -> None:
    summary = json.loads((report_dir / "summary.json").read_text())
    groups = summary["sets"]["groups"]
    assert set(groups) == {"planted", "natural"}
    assert groups["planted"]["n"] == 150 and groups["natural"]["n"] == 1350
    import pyarrow.parquet as pq

    t = pq.read_table(predicted_run / "measure" / "teacher.parquet").to_pydict()
    planted_mem = sum(m for i, m in zip(t["example_id"], t["memorized"], strict=True) if i < 150)
    assert groups["planted"]["memorized"]["teacher"] == planted_mem
    assert set(summary["predictor"]["by_group"]) == {"planted", "natural"}
    jac = summary["sets"]["seed_stability"]["jaccard"]
    assert set(jac) == {"baseline", "student_soft", "student_hard"}
    main = [x for x in summary["temperature_sweep"] if x["main"]]
    assert summary["memorization_over_training"]["student_soft_seed0"][-1]["rate"] == 0.04
    assert {m["model"] for m in summary["filter"]["models"]} == {"paper", "natural"}
    assert summary["filter"]["model_used"] == "paper"
    html = (report_dir / "index.html").read_text()
    for cls in ("groups", "jaccard", "predictor-groups", "filter-models", "training"):
        assert f'class="{cls}"' in html, cls
    assert main == []  # the synthetic run has no config.toml: no main temperature to place


def test_spot_checks_are_decoded_and_escaped(report_dir: Path) -> None:
    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["spot_checks"]["n"] == 2 and summary["spot_checks"]["n_agree"] == 1
    html = (report_dir / "index.html").read_text()
    assert "the cat" in html  # decoded with the run's tokenizer (ids 1, 3)
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold</b>" not in html


def test_spot_checks_with_another_tokenizer_show_ids(tmp_path: Path, predicted_run: Path) -> None:
    from tokenizers import Tokenizer, models

    run = tmp_path / "run"
    shutil.copytree(predicted_run, run)
    Tokenizer(models.WordLevel({"[UNK]": 0, "dog": 1}, unk_token="[UNK]")).save(
        str(run / "tokenizer" / "tokenizer.json")
    )
    rep = build_report(run, tmp_path / "out")
    html = rep.index.read_text()
    assert "tokenizer hashes differ" in html and "[1, 3]" in html and "the cat" not in html


def test_cross_family_section(tmp_path: Path, predicted_run: Path) -> None:
    from tests.analysis.conftest import SPEC
    from tests.analysis.synthetic import write_synthetic_run

    other = write_synthetic_run(tmp_path / "olmo2", SPEC, seed=1)
    res = CliRunner().invoke(
        main,
        ["report", str(predicted_run), "--out", str(tmp_path / "r"), "--family", f"olmo2={other}"],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["sections"]["families"] == "ok"
    pair = summary["cross_family"][0]
    assert pair["families"] == ["pythia", "olmo2"] and pair["n_common"] == 1500
    import pyarrow.parquet as pq

    def mem(run: Path) -> set[int]:
        t = pq.read_table(run / "measure" / "teacher.parquet").to_pydict()
        return {i for i, m in zip(t["example_id"], t["memorized"], strict=True) if m}

    assert pair["overlap"]["teacher"]["intersection"] == len(mem(predicted_run) & mem(other))
    bad = CliRunner().invoke(main, ["report", str(predicted_run), "--family", "olmo2"])
    assert bad.exit_code == 2 and "expected NAME=DIR" in bad.output


def test_scan_section_counts_the_continuations_with_a_span(
    report_dir: Path, predicted_run: Path
) -> None:
    """Oracle: the spans table read by hand (a continuation with several spans counts once)."""
    import collections

    import pyarrow.parquet as pq
    from tests.analysis.synthetic import SCAN_MIN_LEN

    spans = pq.read_table(predicted_run / "scan" / "teacher_spans.parquet").to_pydict()
    per_example = collections.Counter(spans["example_id"])
    assert max(per_example.values()) > 1  # the case the share must not double count
    summary = json.loads((report_dir / "summary.json").read_text())["scan"]
    assert summary == {
        "n_continuations": 1500,
        "min_len": SCAN_MIN_LEN,
        "n_with_span": len(per_example),
        "share_with_span": len(per_example) / 1500,
        "n_spans": len(spans["example_id"]),
        "longest": max(spans["length"]),
    }
    html = (report_dir / "index.html").read_text()
    assert 'class="scan"' in html and 'class="scan-longest"' in html
    # The longest span, 22 copies of token 2 (<b>bold</b>), decoded and escaped in one cell.
    assert '<td class="text">' + " ".join(["&lt;b&gt;bold&lt;/b&gt;"] * 22) + "</td>" in html
