"""``kdmem run EXP.toml``: the whole study as a stage graph over one run directory.

Stages (each a thin call into a library function; :mod:`kdmem.pipeline` does resume and
change detection; paths come from :class:`kdmem.rundir.Layout`), in dependency order::

    tokenizer -> shard -> index ; shard -> study
    teacher, baseline_seed<k>, student_soft_seed<k>, student_soft_T<t>_seed<k0>,
    student_hard_seed<k>                                   (kdmem.train)
    measure_<role> for every model; measure_teacher runs in pair mode with the first
        baseline (KL(teacher || baseline) plus both tables from two forward passes)
    featurize -> predict -> sets
    continuations -> scan (with [hard]: the teacher's generated tokens, their verbatim spans
        in the corpus index)
    filter_flag -> student_soft_filtered_seed<k0> -> measure_student_soft_filtered_seed<k0>
        -> filter                                          (pre-filtering, resumable inside)
    report

A stage whose input does not exist (no positives to train the predictor on, so nothing to
filter with) returns ``{"skipped": reason}``; the stages that need its output skip in turn,
and the report says why. Models go to ``models/<role>/``, their held-out metrics to
``validation/<role>.json``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdmem.atomic import write_bytes_atomic
from kdmem.config import ExperimentConfig, to_toml
from kdmem.launch import check_launch, launcher_mode, visible_devices
from kdmem.pipeline import Pipeline, Stage, StagePlan
from kdmem.rundir import REL, Layout
from kdmem.study import stages as stage_fns
from kdmem.study.plan import check_fits, model_passes
from kdmem.study.stages import StageFn

__all__ = ["build_stages", "plan_experiment", "run_experiment"]

FILTERED_KIND = "student_soft_filtered"


def _asdict(x: Any) -> Any:
    return dataclasses.asdict(x) if dataclasses.is_dataclass(x) and not isinstance(x, type) else x


# ---- the graph -------------------------------------------------------------------------------


def _launch_key(c: ExperimentConfig, section: Any) -> dict[str, Any]:
    """What ``[launch]`` changes in a training stage's result: its global batch, recorded
    only when the launch is not the default one process (so runs made before ``[launch]``
    keep their fingerprint). Strategy and process count change floats only (to 1e-5)."""
    la = c.launch
    if la.world_size == 1 and not la.global_batch:
        return {}
    sec = _asdict(section)
    accum = (
        la.global_batch // (sec["batch_size"] * la.world_size)
        if la.global_batch
        else (sec["grad_accum"])
    )
    return {"global_batch": sec["batch_size"] * accum * la.world_size}


def build_stages(cfg: ExperimentConfig, before: list[Stage] | None = None) -> list[Stage]:
    """The stage list of ``cfg`` (dependency order), after the stages ``before`` (which make
    the inputs; every study stage depends on them through the tokenizer stage)."""
    c = cfg
    data = _asdict(c.data)
    seeds = list(c.run.seeds)
    s0 = seeds[0]
    train_env = {
        "precision": c.run.precision,
        "seq_len": c.data.seq_len,
        "seed_init": c.run.seed_init,
        "snapshot_every": c.measure.every_steps,
    }
    before = list(before or [])
    roots = tuple(st.name for st in before)
    stages = [
        *before,
        Stage(
            "tokenizer",
            stage_fns.tokenizer_stage(c),
            {"tokenizer": c.data.tokenizer},
            roots,
            (str(REL.tokenizer_dir),),
        ),
        Stage(
            "shard",
            stage_fns.shard_stage(c),
            {
                **{k: data[k] for k in ("corpus", "text_field", "subset", "split", "dtype")},
                # only when set, so runs made before the option keep their fingerprint
                **({"max_documents": c.data.max_documents} if c.data.max_documents else {}),
            },
            ("tokenizer",),
            (str(REL.shards),),
        ),
        Stage("index", stage_fns.index_stage(c), {}, ("shard",), (str(REL.index_report),)),
        Stage(
            "study",
            stage_fns.study_stage(c),
            {
                k: data[k]
                for k in (
                    "n_examples",
                    "n_validation",
                    "seq_len",
                    "sample_seed",
                    "windows",
                    "allow_fewer",
                )
            },
            ("shard",),
            (str(REL.study), str(REL.validation_set), str(REL.examples)),
            version=2,  # 2: documents visited in a permutation of all ids (family-aligned)
        ),
    ]
    models: list[str] = []  # roles, each trained by the stage of the same name

    def model_outputs(role: str) -> tuple[str, ...]:
        return (str(REL.model(role)), str(REL.validation(role)))

    def train_stage(role: str, fn: StageFn, section: Any, deps: tuple[str, ...], seed: int) -> None:
        stages.append(
            Stage(
                role,
                fn,
                {
                    "section": _asdict(section),
                    "models": _asdict(c.models),
                    **train_env,
                    **_launch_key(c, section),
                },
                deps,
                model_outputs(role),
                seed=seed,
            )
        )
        models.append(role)

    train_stage(
        "teacher", stage_fns.finetune_stage(c, "teacher", "teacher", 0), c.teacher, ("study",), 0
    )
    for k in seeds:
        role = f"baseline_seed{k}"
        train_stage(
            role, stage_fns.finetune_stage(c, role, "baseline", k), c.baseline, ("study",), k
        )
    if c.soft.enabled:
        for k in seeds:
            role = f"student_soft_seed{k}"
            train_stage(
                role,
                stage_fns.distill_stage(c, role, "soft", k, c.soft.temperature),
                c.soft,
                ("teacher",),
                k,
            )
        for t in c.soft.temperatures:
            if t == c.soft.temperature:
                continue
            role = f"student_soft_T{t:g}_seed{s0}"
            train_stage(
                role,
                stage_fns.distill_stage(c, role, "soft", s0, t),
                {**_asdict(c.soft), "T": t},
                ("teacher",),
                s0,
            )
    if c.hard.enabled:
        for k in seeds:
            role = f"student_hard_seed{k}"
            train_stage(
                role,
                stage_fns.distill_stage(c, role, "hard", k, c.soft.temperature),
                {**_asdict(c.hard), "prefix": c.data.prefix},
                ("teacher",),
                k,
            )
    window = {"prefix": c.data.prefix, "suffix": c.data.suffix, "measure": _asdict(c.measure)}
    measured = []
    ref = f"baseline_seed{s0}"  # measured together with the teacher (pair mode)
    for role in models:
        if role == ref:
            continue
        paired = role == "teacher"
        stages.append(
            Stage(
                f"measure_{role}",
                stage_fns.measure_stage(c, role, ref if paired else None),
                window,
                (role, ref) if paired else (role,),
                (str(REL.measure(role)),) + ((str(REL.measure(ref)),) if paired else ()),
                version=2 if paired else 1,
            )
        )
        measured.append(f"measure_{role}")
    analyses = []
    if c.measure.every_steps:
        stages.append(
            Stage(
                "steps_subset",
                stage_fns.steps_subset_stage(c),
                {"subset": c.measure.subset, "sample_seed": c.data.sample_seed},
                ("study",),
                (str(REL.steps_subset),),
            )
        )
        for role in models:
            stages.append(
                Stage(
                    f"steps_{role}",
                    stage_fns.steps_stage(c, role),
                    window,
                    (role, "steps_subset"),
                    (str(REL.steps_summary(role)),),
                    scratch=(str(REL.measure_steps(role)),),
                )
            )
            analyses.append(f"steps_{role}")
    if c.featurize.enabled:
        stages.append(
            Stage(
                "featurize",
                stage_fns.featurize_stage(c),
                {"ngram": c.featurize.ngram, **window},
                ("index", "study"),
                (str(REL.features),),
            )
        )
        analyses.append("featurize")
    if c.hard.enabled and c.scan.enabled:
        stages.append(
            Stage(
                "continuations",
                stage_fns.continuations_stage(c),
                {"prefix": c.data.prefix, "gen_len": c.hard.gen_len},
                (f"student_hard_seed{s0}",),
                (str(REL.continuations),),
            )
        )
        stages.append(
            Stage(
                "scan",
                stage_fns.scan_stage(c),
                {"min_len": c.scan_min_len(), "max_locations": c.scan.max_locations},
                ("continuations", "index"),
                (str(REL.spans),),
            )
        )
        analyses.append("scan")
    feats = ("featurize",) if c.featurize.enabled else ()
    stages.append(
        Stage(
            "predict",
            stage_fns.predict_stage(c),
            _asdict(c.predict),
            (*measured, *feats),
            (str(REL.predictor_dir),),
        )
    )
    stages.append(Stage("sets", stage_fns.sets_stage(c), {}, tuple(measured), (str(REL.sets),)))
    analyses += ["predict", "sets"]
    if c.filter.enabled and c.soft.enabled:
        before_role = f"student_soft_seed{s0}"
        role = f"{FILTERED_KIND}_seed{s0}"
        stages.append(
            Stage(
                "filter_flag",
                stage_fns.filter_flag_stage(c),
                _asdict(c.filter),
                ("predict", f"measure_{before_role}"),
                (str(REL.flagged), str(REL.filtered)),
                version=2,
            )
        )
        stages.append(
            Stage(
                role,
                stage_fns.distill_stage(c, role, "soft", s0, c.soft.temperature, filtered=True),
                {
                    "section": _asdict(c.soft),
                    "models": _asdict(c.models),
                    **train_env,
                    **_launch_key(c, c.soft),
                },
                ("filter_flag", "teacher"),
                model_outputs(role),
                seed=s0,
            )
        )
        stages.append(
            Stage(
                f"measure_{role}",
                stage_fns.measure_stage(c, role, None, after=role),
                window,
                (role,),
                (str(REL.measure(role)),),
            )
        )
        stages.append(
            Stage(
                "filter",
                stage_fns.filter_compare_stage(c, before_role, role),
                {},
                (f"measure_{role}", "filter_flag", f"measure_{before_role}"),
                (str(REL.filter_result),),
                version=2,
            )
        )
        analyses.append("filter")
    stages.append(
        Stage(
            "report",
            stage_fns.report_stage(c),
            {},
            (*models, *measured, *analyses),
            (str(REL.report_index), str(REL.report_summary)),
        )
    )
    return stages


def run_experiment(
    cfg: ExperimentConfig,
    run_dir: str | Path | None = None,
    *,
    until: str | None = None,
    before: list[Stage] | None = None,
    log: Callable[[str], None] = print,
    only: str | None = None,
    launcher: str = "local",
) -> dict[str, Any]:
    """Run (or resume) every stage of ``cfg`` (after ``before``); returns the manifest.

    Before the first stage, ``[launch]`` is checked against this machine (processes per
    node vs visible devices, the backend) and every model pass that would run against the
    device memory (:func:`kdmem.study.plan.check_fits`). ``only``: run just that stage (its
    dependencies must be done), as one job of ``--emit-slurm``; ``launcher``: ``local``
    (torchrun on this node) or ``srun`` (torchrun on every node of the Slurm allocation)."""
    rd = Path(run_dir) if run_dir is not None else cfg.run_dir()
    passes_here = only is None or only in model_passes(cfg)  # a CPU job checks no devices
    backend = check_launch(cfg, multinode_ok=launcher == "srun", check_devices=passes_here, log=log)
    rd.mkdir(parents=True, exist_ok=True)
    pipeline = Pipeline(rd, build_stages(cfg, before), log=log)
    plans = pipeline.plan()
    if only is not None:
        plans = [p for p in plans if p.stage.name == only]
    if passes_here and any(p.action != "skip" for p in plans):
        devices = visible_devices(cfg.run.device)
        if devices.count:
            check_fits(cfg, plans, devices, log=log)
    write_bytes_atomic(Layout(rd).config, to_toml(cfg).encode("utf-8"))
    with launcher_mode(launcher, backend):
        return pipeline.run(until=until, only=only)


def plan_experiment(cfg: ExperimentConfig, run_dir: str | Path | None = None) -> list[StagePlan]:
    """What :func:`run_experiment` would do for each stage of ``cfg``, and why."""
    rd = Path(run_dir) if run_dir is not None else cfg.run_dir()
    return Pipeline(rd, build_stages(cfg), log=lambda _m: None).plan()
