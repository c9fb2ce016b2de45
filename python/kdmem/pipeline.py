"""The stage graph of one experiment over a run directory (the only state).

A :class:`Stage` names the config it depends on, the stages it reads from, and the outputs it
writes under the run directory. :class:`Pipeline` runs stages in dependency order and keeps
``manifest.json`` (per stage: status, hash, inputs, versions, seed, wall time, metrics):

* a stage whose hash (its config + its dependencies' hashes + its code version) matches the
  manifest and whose outputs exist is skipped;
* a stage left ``running`` by a kill is rerun with its outputs kept, so stages that resume
  internally (training checkpoints, measurement chunks, shard files) pick up where they
  stopped;
* a stage whose hash changed has its outputs removed first, then reruns, and so does every
  stage downstream of it (their hashes include it), and nothing else;
* a stage that cannot do its work because an input does not exist (e.g. no memorized example
  to train a predictor on) returns ``{"skipped": reason}``: it is recorded as ``skipped``
  (outputs not required, up to date like ``done``), and the stages that need it ask
  :meth:`StageContext.skipped` and skip in turn.

The manifest is rewritten atomically after every transition, under a lock on
``manifest.lock`` and merged with what is on disk, so stages of one run directory can run in
separate processes at once (the jobs of ``kdmem run --emit-slurm``, each ``--stage NAME``).
A whole run holds the run directory's write lock (:mod:`kdmem.lock`); each stage, while it
runs, its own lock, which is all a one-stage job takes. The processes a stage launches
(torchrun ranks running ``kdmem train|distill|measure|generate``) take no run-directory
lock; ``kdmem measure`` and ``kdmem generate`` rank 0 take their output file's lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import platform
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdmem.errors import CorruptFileError, InvalidArgumentError, MissingStageInputError
from kdmem.lock import dir_lock, output_lock
from kdmem.rundir import Layout, read_manifest, write_manifest

__all__ = ["Pipeline", "Stage", "StageContext", "StagePlan", "stable_hash"]


def stable_hash(obj: Any) -> str:
    """SHA-256 hex of the canonical JSON of ``obj`` (sorted keys, no whitespace)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StageContext:
    """What a stage function receives: the run directory (and its :class:`Layout`), its own
    resolved config, its name, a logger and the manifest as of its start."""

    run_dir: Path
    config: Any
    stage: str
    log: Callable[[str], None]
    manifest: Mapping[str, Any] = field(default_factory=dict)

    @property
    def layout(self) -> Layout:
        return Layout(self.run_dir)

    def skipped(self, stage: str) -> str | None:
        """Why ``stage`` (upstream of this one) skipped its work, or None if it did it."""
        rec = self.manifest.get("stages", {}).get(stage, {})
        if rec.get("status") != "skipped":
            return None
        return str(rec.get("metrics", {}).get("skipped") or f"stage {stage} was skipped")


@dataclass(frozen=True)
class Stage:
    """One step of the experiment.

    ``run`` does the work and returns metrics (JSON-able: throughput, counts) that land in
    the manifest. ``config`` is the JSON-able slice of the experiment config this stage
    depends on. ``outputs`` are paths relative to the run directory; all must exist after
    ``run`` returns. ``scratch`` are further paths the stage may write (models, tables of
    optional branches); like ``outputs`` they are removed before a rerun, but they need not
    exist. ``version`` bumps when the stage's code changes its outputs.
    """

    name: str
    run: Callable[[StageContext], Mapping[str, Any] | None]
    config: Any = None
    deps: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    version: int = 1
    seed: int | None = None
    scratch: tuple[str, ...] = ()


@dataclass
class StagePlan:
    """What :meth:`Pipeline.run` would do with one stage, and why."""

    stage: Stage
    hash: str
    action: str  # "skip" | "resume" | "run" | "rerun"
    reason: str


@dataclass
class Pipeline:
    """Run ``stages`` over ``run_dir`` with resume and change detection (module docstring)."""

    run_dir: Path
    stages: Sequence[Stage]
    log: Callable[[str], None] = print
    versions: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise InvalidArgumentError(f"invalid stage list {names}: names must be unique")
        seen: set[str] = set()
        for s in self.stages:
            missing = [d for d in s.deps if d not in seen]
            if missing:
                raise InvalidArgumentError(
                    f"invalid stage order: {s.name} depends on {missing}, which must come before it"
                )
            seen.add(s.name)

    # -- manifest

    def read_manifest(self) -> dict[str, Any]:
        """The manifest (a fresh one when absent), under the run directory's version rule."""
        return read_manifest(self.run_dir, for_update=True)

    def _write(self, manifest: dict[str, Any]) -> None:
        write_manifest(self.run_dir, manifest)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the run directory's manifest lock (``flock``; released if the process dies)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(Layout(self.run_dir).manifest_lock, "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _commit(self, manifest: dict[str, Any], name: str) -> None:
        """Write stage ``name``'s record of ``manifest`` into the manifest on disk (which
        other processes may have updated meanwhile), and refresh ``manifest`` from it."""
        with self._locked():
            disk = self.read_manifest()
            disk["stages"][name] = manifest["stages"][name]
            self._write(disk)
        manifest["stages"] = disk["stages"]

    # -- planning

    def plan(self) -> list[StagePlan]:
        """What :meth:`run` would do for each stage, and why."""
        manifest = self.read_manifest()
        hashes: dict[str, str] = {}
        out: list[StagePlan] = []
        for s in self.stages:
            h = stable_hash(
                {
                    "stage": s.name,
                    "version": s.version,
                    "config": s.config,
                    "seed": s.seed,
                    "deps": {d: hashes[d] for d in s.deps},
                }
            )
            hashes[s.name] = h
            rec = manifest["stages"].get(s.name)
            missing = [o for o in s.outputs if not (self.run_dir / o).exists()]
            if rec is None:
                out.append(StagePlan(s, h, "run", "never run"))
            elif rec.get("hash") != h:
                out.append(StagePlan(s, h, "rerun", "its config or an upstream stage changed"))
            elif rec.get("status") == "running":
                out.append(StagePlan(s, h, "resume", "interrupted while running"))
            elif rec.get("status") == "skipped":
                out.append(
                    StagePlan(s, h, "skip", "up to date (skipped: its input does not exist)")
                )
            elif rec.get("status") != "done" or missing:
                why = f"outputs missing: {missing}" if missing else f"status {rec.get('status')}"
                out.append(StagePlan(s, h, "resume", why))
            else:
                out.append(StagePlan(s, h, "skip", "up to date"))
        return out

    # -- running

    def run(self, until: str | None = None, only: str | None = None) -> dict[str, Any]:
        """Run every stage that is not up to date (up to and including ``until``), or only
        stage ``only``, whose dependencies must then be up to date already (one job of a
        scheduler; :class:`~kdmem.errors.MissingStageInputError` names the one that is not).

        A whole run holds the run directory's write lock (a second ``kdmem run`` on it fails
        at once). Every stage, while it runs, also holds its own lock (``.stage-NAME.lock``):
        a one-stage run (``only``) takes that one alone, so the jobs of different stages of
        one run directory run at once while two writers of the same stage, or a one-stage
        job and a whole run reaching that stage, exclude each other
        (:class:`~kdmem.errors.LockedError`)."""
        if only is not None:
            with self._stage_lock(only):
                return self._run(until, only)
        with dir_lock(self.run_dir, "kdmem run"):
            return self._run(until, None)

    def _stage_lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        return output_lock(self.run_dir / f"stage-{name}", f"kdmem run (stage {name})")

    def _run(self, until: str | None, only: str | None) -> dict[str, Any]:
        manifest = self.read_manifest()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        plans = self.plan()
        if only is not None:
            by_name = {p.stage.name: p for p in plans}
            if only not in by_name:
                raise InvalidArgumentError(
                    f"no stage {only!r} in this experiment; stages: {', '.join(by_name)}"
                )
            for d in by_name[only].stage.deps:
                if by_name[d].action != "skip":
                    raise MissingStageInputError(
                        f"stage {only} needs stage {d}, which is not done "
                        f"({by_name[d].reason}); run it first (its job, or kdmem run --until {d})"
                    )
            plans = [by_name[only]]
        for p in plans:
            s = p.stage
            if p.action == "skip":
                self.log(f"[{s.name}] up to date")
            else:
                # the one-stage run holds this stage's lock already
                with contextlib.nullcontext() if only is not None else self._stage_lock(s.name):
                    self._run_stage(p, manifest)
            if until is not None and s.name == until:
                break
        return manifest

    def _run_stage(self, p: StagePlan, manifest: dict[str, Any]) -> None:
        """Run one stage that is not up to date and record it in ``manifest``."""
        s = p.stage
        if p.action == "rerun":
            self.log(f"[{s.name}] {p.reason}: removing its outputs and rerunning")
            for o in (*s.outputs, *s.scratch):
                target = self.run_dir / o
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        else:
            self.log(f"[{s.name}] running ({p.reason})")
        manifest["stages"][s.name] = {
            "status": "running",
            "hash": p.hash,
            "deps": list(s.deps),
            "seed": s.seed,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self._commit(manifest, s.name)
        t0 = time.perf_counter()
        ctx = StageContext(self.run_dir, s.config, s.name, self.log, manifest)
        metrics = dict(s.run(ctx) or {})
        wall = time.perf_counter() - t0
        skipped = "skipped" in metrics
        missing = [o for o in s.outputs if not (self.run_dir / o).exists()]
        if skipped:
            missing = []
        if missing:
            raise CorruptFileError(
                f"stage {s.name} finished without writing {missing}; this is a kdmem "
                "bug: please report it with the run directory's manifest.json"
            )
        manifest["stages"][s.name].update(
            status="skipped" if skipped else "done",
            wall_s=round(wall, 3),
            metrics=dict(metrics),
            outputs=list(s.outputs),
            versions={"python": platform.python_version(), **self.versions},
        )
        self._commit(manifest, s.name)
        if skipped:
            self.log(f"[{s.name}] skipped: {metrics['skipped']}")
        else:
            self.log(f"[{s.name}] done in {wall:.1f}s")
