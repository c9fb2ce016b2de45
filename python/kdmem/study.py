"""``kdmem run EXP.toml``: the whole study as a stage graph over one run directory.

Stages (each a thin call into a library function; :mod:`kdmem.pipeline` does resume and
change detection; paths come from :class:`kdmem.rundir.Layout`), in dependency order::

    tokenizer -> shard -> index ; shard -> study
    teacher, baseline_seed<k>, student_soft_seed<k>, student_soft_T<t>_seed<k0>,
    student_hard_seed<k>                                   (kdmem.train)
    measure_<role> for every model; measure_teacher runs in pair mode with the first
        baseline (KL(teacher || baseline) plus both tables from two forward passes)
    featurize -> predict -> sets
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
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from kdmem.analysis.filter import run_filter_compare, run_filter_flag
from kdmem.analysis.predictor import CORPUS_FEATURES, run_predict
from kdmem.analysis.report import build_report
from kdmem.analysis.sets import analyze_sets, write_sets
from kdmem.analysis.tables import RunDir
from kdmem.atomic import write_bytes_atomic, write_json_atomic
from kdmem.config import (
    DistillConfig,
    ExperimentConfig,
    FinetuneConfig,
    Optim,
    config_from_dict,
    to_toml,
)
from kdmem.corpus.examples import sample_study_set, write_example_texts, write_examples
from kdmem.corpus.featurize import featurize
from kdmem.corpus.index import build_index
from kdmem.corpus.shard import shard_corpus
from kdmem.errors import NoPositiveExamplesError
from kdmem.identity import tokenizer_hash
from kdmem.measure import measure
from kdmem.models.tokenizer import load_tokenizer
from kdmem.pipeline import Pipeline, Stage, StageContext, StagePlan
from kdmem.rundir import REL, Layout
from kdmem.train import distill, finetune

__all__ = ["build_stages", "plan_experiment", "run_experiment"]

FILTERED_KIND = "student_soft_filtered"

StageFn = Callable[[StageContext], Mapping[str, Any] | None]


def _asdict(x: Any) -> Any:
    return dataclasses.asdict(x) if dataclasses.is_dataclass(x) and not isinstance(x, type) else x


def _corpus_inputs(cfg: ExperimentConfig) -> list[str]:
    out = []
    for c in cfg.data.corpus:
        if Path(c).exists() or c.startswith("hf:"):
            out.append(c)
        else:  # a hub dataset name
            out.append(f"hf:{c}" + (f":{cfg.data.subset}" if cfg.data.subset else ""))
    return out


# ---- corpus and study set ------------------------------------------------------------------


def _tokenizer(cfg: ExperimentConfig) -> StageFn:
    def run(ctx: StageContext) -> dict[str, Any]:
        tok = load_tokenizer(cfg.data.tokenizer)
        tok.save_pretrained(str(ctx.layout.tokenizer_dir))
        return {"vocab_size": len(tok), "tokenizer_hash": tokenizer_hash(tok)}

    return run


def _shard(cfg: ExperimentConfig) -> StageFn:
    def run(ctx: StageContext) -> dict[str, Any]:
        res = shard_corpus(
            _corpus_inputs(cfg),
            ctx.layout.tokenizer_json,
            ctx.layout.shards,
            threads=cfg.run.threads,
            dtype=cfg.data.dtype,
            text_field=cfg.data.text_field,
            split=cfg.data.split,
            max_documents=cfg.data.max_documents,
        )
        return {"n_docs": res.n_docs, "n_tokens": res.n_tokens}

    return run


def _index(cfg: ExperimentConfig) -> StageFn:
    def run(ctx: StageContext) -> dict[str, Any]:
        rep = build_index(ctx.layout.shards, threads=cfg.run.threads)
        write_json_atomic(ctx.layout.index_report, rep)
        return {k: rep[k] for k in ("shards", "tokens_built", "seconds") if k in rep}

    return run


def _study(cfg: ExperimentConfig) -> StageFn:
    """Sample D and a disjoint validation set (:func:`kdmem.corpus.examples.sample_study_set`);
    example_id = global document id of the shards."""

    def run(ctx: StageContext) -> dict[str, Any]:
        d = cfg.data
        lay = ctx.layout
        study, val, n_eligible = sample_study_set(
            lay.shards, d.n_examples, d.n_validation, d.seq_len, d.sample_seed
        )
        write_examples(study, lay.study)
        write_examples(val, lay.validation_set)
        write_example_texts(study, lay.tokenizer_json, lay.examples)
        return {"n_examples": len(study), "n_validation": len(val), "n_eligible": n_eligible}

    return run


# ---- training ----------------------------------------------------------------------------------


def _validation_json(lay: Layout, role: str) -> None:
    rows = json.loads(lay.model_metrics(role).read_text("utf-8"))
    last = rows[-1] if rows else {}
    write_json_atomic(
        lay.validation(role),
        {
            "role": role,
            "loss": last.get("val_loss"),
            "ppl": last.get("val_ppl"),
            "n_tokens": last.get("val_tokens"),
            "epochs": rows,
        },
    )


def _recipe_fields(cfg: ExperimentConfig, section: Optim, seed: int) -> dict[str, Any]:
    """The recipe config fields a study section sets: every :class:`Optim` field, plus the
    run's precision and device, the seed and the study's sequence length."""
    optim = {f.name: getattr(section, f.name) for f in dataclasses.fields(Optim)}
    return {
        **optim,
        "precision": cfg.run.precision,
        "seed": seed,
        "device": cfg.run.device,
        "seq_len": cfg.data.seq_len,
    }


def _finetune(cfg: ExperimentConfig, role: str, kind: str, seed: int) -> StageFn:
    def run(ctx: StageContext) -> dict[str, Any]:
        lay = ctx.layout
        section = cfg.teacher if kind == "teacher" else cfg.baseline
        tcfg = config_from_dict(
            FinetuneConfig,
            {
                "role": kind,
                "model": cfg.models.teacher if kind == "teacher" else cfg.models.student,
                "data": str(lay.study),
                "val_data": str(lay.validation_set),
                "out": str(lay.model(role)),
                **_recipe_fields(cfg, section, seed),
            },
        )
        info = finetune(tcfg, log=ctx.log)
        _validation_json(lay, role)
        return {"model_hash": info.get("model_hash", "")}

    return run


def _distill(
    cfg: ExperimentConfig,
    role: str,
    mode: str,
    seed: int,
    temperature: float,
    filtered: bool = False,
) -> StageFn:
    def run(ctx: StageContext) -> dict[str, Any]:
        lay = ctx.layout
        if filtered and (why := ctx.skipped("filter_flag")):
            return {"skipped": why}
        section: Optim = cfg.soft if mode == "soft" else cfg.hard
        extra: dict[str, Any]
        if mode == "soft":
            extra = {"loss": cfg.soft.loss, "temperature": temperature, "alpha": cfg.soft.alpha}
        else:
            extra = {
                "prefix_len": cfg.data.prefix,
                "gen_len": cfg.hard.gen_len,
                "generations_dir": str(lay.generations),
            }
        dcfg = config_from_dict(
            DistillConfig,
            {
                "teacher": str(lay.model("teacher")),
                "student": cfg.models.student,
                "mode": mode,
                "data": str(lay.filtered if filtered else lay.study),
                "val_data": str(lay.validation_set),
                "out": str(lay.model(role)),
                **extra,
                **_recipe_fields(cfg, section, seed),
            },
        )
        info = distill(dcfg, log=ctx.log)
        _validation_json(lay, role)
        return {"model_hash": info.get("model_hash", "")}

    return run


# ---- measurement and analyses ------------------------------------------------------------------


def _rate(path: Path) -> dict[str, Any]:
    mem = pq.read_table(path, columns=["memorized"]).column("memorized").to_numpy()
    return {"memorized": int(mem.sum()), "rate": float(mem.mean()) if len(mem) else 0.0}


def _measure(cfg: ExperimentConfig, role: str, reference: str | None, after: str = "") -> StageFn:
    """Stage ``measure_<role>``; with a ``reference`` in pair mode: KL(role || reference)
    and the reference's own table from the same pass (``kdmem measure --reference-out``).
    ``after``: the training stage whose skip skips this one."""

    def run(ctx: StageContext) -> dict[str, Any]:
        lay = ctx.layout
        if after and (why := ctx.skipped(after)):
            return {"skipped": why}
        out = measure(
            lay.model(role),
            lay.study,
            lay.measure(role),
            prefix=cfg.data.prefix,
            suffix=cfg.data.suffix,
            reference=None if reference is None else lay.model(reference),
            reference_out=None if reference is None else lay.measure(reference),
            batch_size=cfg.measure.batch_size,
            device=cfg.run.device,
            verify_generate=cfg.measure.verify_generate,
            role=role,
        )
        metrics = _rate(out)
        if reference is not None:
            metrics[reference] = _rate(lay.measure(reference))
        return metrics

    return run


def _featurize(cfg: ExperimentConfig) -> StageFn:
    def run(ctx: StageContext) -> dict[str, Any]:
        lay = ctx.layout
        featurize(
            lay.study,
            lay.shards,
            lay.features,
            prefix=cfg.data.prefix,
            suffix=cfg.data.suffix,
            ngram=tuple(cfg.featurize.ngram),
            exclude_self=True,
            tokenizer=str(lay.tokenizer_json),
            threads=cfg.run.threads,
        )
        return {}

    return run


def _predict(cfg: ExperimentConfig) -> StageFn:
    def run(ctx: StageContext) -> dict[str, Any]:
        p = cfg.predict
        lay = ctx.layout
        features = list(p.features) + (list(CORPUS_FEATURES) if p.corpus_features else [])
        try:
            res = run_predict(
                RunDir(ctx.run_dir),
                features=features,
                target=None if p.target == "student_soft" else p.target,
                resamples=p.resamples,
                neg_ratio=float(p.negatives_per_positive),
                test_size=p.test_fraction,
                seed=p.seed,
            )
        except NoPositiveExamplesError as e:
            # Nothing to learn from: record why, so filtering and the report can say so.
            write_json_atomic(lay.predictor_skipped, {"reason": str(e), "stage": "predict"})
            ctx.log(f"[predict] skipped: {e}")
            return {"skipped": str(e)}
        lay.predictor_skipped.unlink(missing_ok=True)
        auc = res["metrics"]["paper_protocol"].get("roc_auc", {})
        return {"n_positive": res["n_positive"], "paper_roc_auc": auc.get("mean")}

    return run


def _sets(cfg: ExperimentConfig) -> StageFn:
    def run(ctx: StageContext) -> dict[str, Any]:
        write_sets(analyze_sets([RunDir(ctx.run_dir)]), ctx.layout.sets)
        return {}

    return run


def _filter_flag(cfg: ExperimentConfig) -> StageFn:
    def run(ctx: StageContext) -> dict[str, Any]:
        if why := ctx.skipped("predict"):
            return {"skipped": f"no predictor: {why}"}
        res = run_filter_flag(ctx.run_dir, threshold=cfg.filter.threshold)
        return {"n_flagged": res["n_flagged"], "n_kept": res["n_kept"]}

    return run


def _filter_compare(cfg: ExperimentConfig, before: str, after: str) -> StageFn:
    def run(ctx: StageContext) -> dict[str, Any]:
        if why := ctx.skipped(f"measure_{after}"):
            write_json_atomic(ctx.layout.filter_result, {"skipped": why})
            return {"skipped": why}
        res = run_filter_compare(ctx.run_dir, before, after)
        return {k: res[k] for k in ("memorized_before", "memorized_after", "n_new", "n_flagged")}

    return run


def _report(cfg: ExperimentConfig) -> StageFn:
    def run(ctx: StageContext) -> dict[str, Any]:
        build_report(ctx.run_dir)
        return {}

    return run


# ---- the graph -------------------------------------------------------------------------------


def build_stages(cfg: ExperimentConfig, before: list[Stage] | None = None) -> list[Stage]:
    """The stage list of ``cfg`` (dependency order), after the stages ``before`` (which make
    the inputs; every study stage depends on them through the tokenizer stage)."""
    c = cfg
    data = _asdict(c.data)
    seeds = list(c.run.seeds)
    s0 = seeds[0]
    train_env = {"precision": c.run.precision, "seq_len": c.data.seq_len}
    before = list(before or [])
    roots = tuple(st.name for st in before)
    stages = [
        *before,
        Stage(
            "tokenizer",
            _tokenizer(c),
            {"tokenizer": c.data.tokenizer},
            roots,
            (str(REL.tokenizer_dir),),
        ),
        Stage(
            "shard",
            _shard(c),
            {
                **{k: data[k] for k in ("corpus", "text_field", "subset", "split", "dtype")},
                # only when set, so runs made before the option keep their fingerprint
                **({"max_documents": c.data.max_documents} if c.data.max_documents else {}),
            },
            ("tokenizer",),
            (str(REL.shards),),
        ),
        Stage("index", _index(c), {}, ("shard",), (str(REL.index_report),)),
        Stage(
            "study",
            _study(c),
            {k: data[k] for k in ("n_examples", "n_validation", "seq_len", "sample_seed")},
            ("shard",),
            (str(REL.study), str(REL.validation_set), str(REL.examples)),
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
                {"section": _asdict(section), "models": _asdict(c.models), **train_env},
                deps,
                model_outputs(role),
                seed=seed,
            )
        )
        models.append(role)

    train_stage("teacher", _finetune(c, "teacher", "teacher", 0), c.teacher, ("study",), 0)
    for k in seeds:
        role = f"baseline_seed{k}"
        train_stage(role, _finetune(c, role, "baseline", k), c.baseline, ("study",), k)
    if c.soft.enabled:
        for k in seeds:
            role = f"student_soft_seed{k}"
            train_stage(
                role, _distill(c, role, "soft", k, c.soft.temperature), c.soft, ("teacher",), k
            )
        for t in c.soft.temperatures:
            if t == c.soft.temperature:
                continue
            role = f"student_soft_T{t:g}_seed{s0}"
            train_stage(
                role,
                _distill(c, role, "soft", s0, t),
                {**_asdict(c.soft), "T": t},
                ("teacher",),
                s0,
            )
    if c.hard.enabled:
        for k in seeds:
            role = f"student_hard_seed{k}"
            train_stage(
                role,
                _distill(c, role, "hard", k, c.soft.temperature),
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
                _measure(c, role, ref if paired else None),
                window,
                (role, ref) if paired else (role,),
                (str(REL.measure(role)),) + ((str(REL.measure(ref)),) if paired else ()),
                version=2 if paired else 1,
            )
        )
        measured.append(f"measure_{role}")
    analyses = []
    if c.featurize.enabled:
        stages.append(
            Stage(
                "featurize",
                _featurize(c),
                {"ngram": c.featurize.ngram, **window},
                ("index", "study"),
                (str(REL.features),),
            )
        )
        analyses.append("featurize")
    feats = ("featurize",) if c.featurize.enabled else ()
    stages.append(
        Stage(
            "predict",
            _predict(c),
            _asdict(c.predict),
            (*measured, *feats),
            (str(REL.predictor_dir),),
        )
    )
    stages.append(Stage("sets", _sets(c), {}, tuple(measured), (str(REL.sets),)))
    analyses += ["predict", "sets"]
    if c.filter.enabled and c.soft.enabled:
        before_role = f"student_soft_seed{s0}"
        role = f"{FILTERED_KIND}_seed{s0}"
        stages.append(
            Stage(
                "filter_flag",
                _filter_flag(c),
                _asdict(c.filter),
                ("predict", f"measure_{before_role}"),
                (str(REL.flagged), str(REL.filtered)),
                version=2,
            )
        )
        stages.append(
            Stage(
                role,
                _distill(c, role, "soft", s0, c.soft.temperature, filtered=True),
                {"section": _asdict(c.soft), "models": _asdict(c.models), **train_env},
                ("filter_flag", "teacher"),
                model_outputs(role),
                seed=s0,
            )
        )
        stages.append(
            Stage(
                f"measure_{role}",
                _measure(c, role, None, after=role),
                window,
                (role,),
                (str(REL.measure(role)),),
            )
        )
        stages.append(
            Stage(
                "filter",
                _filter_compare(c, before_role, role),
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
            _report(c),
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
) -> dict[str, Any]:
    """Run (or resume) every stage of ``cfg`` (after ``before``); returns the manifest."""
    rd = Path(run_dir) if run_dir is not None else cfg.run_dir()
    rd.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(Layout(rd).config, to_toml(cfg).encode("utf-8"))
    return Pipeline(rd, build_stages(cfg, before), log=log).run(until=until)


def plan_experiment(cfg: ExperimentConfig, run_dir: str | Path | None = None) -> list[StagePlan]:
    """What :func:`run_experiment` would do for each stage of ``cfg``, and why."""
    rd = Path(run_dir) if run_dir is not None else cfg.run_dir()
    return Pipeline(rd, build_stages(cfg), log=lambda _m: None).plan()
