"""Stage graph: skip, resume after a kill, rerun only what a config change touches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kdmem.errors import FormatVersionError, InvalidArgumentError
from kdmem.pipeline import Pipeline, Stage, StageContext


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail_in: str | None = None

    def stage(self, name: str, out: str) -> Any:
        def run(ctx: StageContext) -> dict[str, Any]:
            self.calls.append(name)
            if self.fail_in == name:
                raise KeyboardInterrupt  # a kill in the middle of the stage
            (ctx.run_dir / out).write_text(json.dumps(ctx.config))
            return {"n": 1}

        return run


def graph(rec: Recorder, cfg: dict[str, Any]) -> list[Stage]:
    return [
        Stage("shard", rec.stage("shard", "a"), cfg["data"], (), ("a",)),
        Stage("teacher", rec.stage("teacher", "t"), cfg["teacher"], ("shard",), ("t",)),
        Stage("baseline", rec.stage("baseline", "b"), cfg["baseline"], ("shard",), ("b",)),
        Stage("student", rec.stage("student", "s"), cfg["soft"], ("teacher",), ("s",)),
    ]


CFG = {"data": {"n": 10}, "teacher": {"lr": 1}, "baseline": {"lr": 2}, "soft": {"T": 2}}


def test_second_run_skips_everything(tmp_path: Path) -> None:
    rec = Recorder()
    Pipeline(tmp_path, graph(rec, CFG), log=lambda _: None).run()
    assert rec.calls == ["shard", "teacher", "baseline", "student"]
    rec.calls.clear()
    Pipeline(tmp_path, graph(rec, CFG), log=lambda _: None).run()
    assert rec.calls == []
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert {s["status"] for s in m["stages"].values()} == {"done"}
    assert all("wall_s" in s and s["metrics"] == {"n": 1} for s in m["stages"].values())


def test_kill_then_rerun_resumes_at_the_killed_stage(tmp_path: Path) -> None:
    rec = Recorder()
    rec.fail_in = "baseline"
    with pytest.raises(KeyboardInterrupt):
        Pipeline(tmp_path, graph(rec, CFG), log=lambda _: None).run()
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["stages"]["baseline"]["status"] == "running"
    rec.calls.clear()
    rec.fail_in = None
    Pipeline(tmp_path, graph(rec, CFG), log=lambda _: None).run()
    assert rec.calls == ["baseline", "student"]


def test_config_change_reruns_only_dependents(tmp_path: Path) -> None:
    rec = Recorder()
    Pipeline(tmp_path, graph(rec, CFG), log=lambda _: None).run()
    rec.calls.clear()
    changed = {**CFG, "teacher": {"lr": 3}}
    Pipeline(tmp_path, graph(rec, changed), log=lambda _: None).run()
    assert rec.calls == ["teacher", "student"]
    assert json.loads((tmp_path / "t").read_text()) == {"lr": 3}
    rec.calls.clear()
    changed = {**changed, "data": {"n": 11}}
    Pipeline(tmp_path, graph(rec, changed), log=lambda _: None).run()
    assert rec.calls == ["shard", "teacher", "baseline", "student"]


def test_missing_output_reruns_the_stage(tmp_path: Path) -> None:
    rec = Recorder()
    Pipeline(tmp_path, graph(rec, CFG), log=lambda _: None).run()
    (tmp_path / "b").unlink()
    rec.calls.clear()
    Pipeline(tmp_path, graph(rec, CFG), log=lambda _: None).run()
    assert rec.calls == ["baseline"]


def test_incompatible_run_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(
        json.dumps({"format": "kdmem-run", "version": 99, "kdmem_version": "9.0"})
    )
    with pytest.raises(FormatVersionError, match="new run directory"):
        Pipeline(tmp_path, graph(Recorder(), CFG), log=lambda _: None).run()


def test_bad_stage_order_is_an_error(tmp_path: Path) -> None:
    rec = Recorder()
    stages = graph(rec, CFG)
    with pytest.raises(InvalidArgumentError, match="must come before"):
        Pipeline(tmp_path, [stages[1], stages[0]])
