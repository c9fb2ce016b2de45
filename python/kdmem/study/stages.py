"""The stage functions of ``kdmem run``: each one a thin call into a library function, over
the paths of :class:`kdmem.rundir.Layout` (the graph that orders them: :mod:`kdmem.study`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
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
    OptimConfig,
    config_from_dict,
    recipe_to_toml,
)
from kdmem.corpus.examples import (
    Examples,
    load_examples,
    sample_study_set,
    write_example_texts,
    write_examples,
)
from kdmem.corpus.fanout import read_parts
from kdmem.corpus.featurize import PARTIAL_FORMAT, featurize, featurize_merge, partial_meta
from kdmem.corpus.index import build_index
from kdmem.corpus.scan import HITS_PARTIAL_FORMAT, scan, scan_merge
from kdmem.corpus.shard import shard_corpus
from kdmem.corpus.shard_tasks import merge_tasks
from kdmem.errors import MissingStageInputError, NoPositiveExamplesError, StudySetMismatchError
from kdmem.identity import tokenizer_hash
from kdmem.launch import launcher_for
from kdmem.measure import measure
from kdmem.measure.generate import GENERATIONS_FILE
from kdmem.models.tokenizer import load_tokenizer
from kdmem.pipeline import StageContext
from kdmem.rundir import Layout, read_table_meta
from kdmem.train import distill, finetune
from kdmem.train.distill import generations_dir

StageFn = Callable[[StageContext], Mapping[str, Any] | None]


def corpus_inputs(cfg: ExperimentConfig) -> list[str]:
    """``data.corpus`` as ``kdmem shard`` inputs: paths as they are, hub names as ``hf:``."""
    out = []
    for c in cfg.data.corpus:
        if Path(c).exists() or c.startswith("hf:"):
            out.append(c)
        else:  # a hub dataset name
            out.append(f"hf:{c}" + (f":{cfg.data.subset}" if cfg.data.subset else ""))
    return out


# ---- corpus and study set ------------------------------------------------------------------


def tokenizer_stage(cfg: ExperimentConfig) -> StageFn:
    def run(ctx: StageContext) -> dict[str, Any]:
        tok = load_tokenizer(cfg.data.tokenizer)
        tok.save_pretrained(str(ctx.layout.tokenizer_dir))
        return {"vocab_size": len(tok), "tokenizer_hash": tokenizer_hash(tok)}

    return run


def shard_options(cfg: ExperimentConfig) -> dict[str, Any]:
    """The ``kdmem shard`` options ``[data]`` sets (the shard stage and its Slurm array)."""
    d = cfg.data
    return {
        "dtype": d.dtype,
        "text_field": d.text_field,
        "split": d.split,
        "max_documents": d.max_documents,
    }


def shard_stage(cfg: ExperimentConfig) -> StageFn:
    """The corpus as token shards. In a Slurm job (``--launcher srun``) a job array has
    already sharded contiguous slices of the inputs into ``RUN/parts/shard/task-K``: merge
    those instead (:mod:`kdmem.corpus.shard_tasks`; the same documents and ids)."""

    def run(ctx: StageContext) -> dict[str, Any]:
        lay = ctx.layout
        if launcher_for(cfg).mode == "srun":
            res = merge_tasks(
                corpus_inputs(cfg),
                lay.tokenizer_json,
                lay.parts("shard"),
                lay.shards,
                cfg.slurm.array_tasks,
                **shard_options(cfg),
            )
        else:
            res = shard_corpus(
                corpus_inputs(cfg),
                lay.tokenizer_json,
                lay.shards,
                threads=cfg.run.threads,
                **shard_options(cfg),
            )
        return {"n_docs": res.n_docs, "n_tokens": res.n_tokens}

    return run


def index_stage(cfg: ExperimentConfig) -> StageFn:
    def run(ctx: StageContext) -> dict[str, Any]:
        rep = build_index(ctx.layout.shards, threads=cfg.run.threads)
        write_json_atomic(ctx.layout.index_report, rep)
        return {k: rep[k] for k in ("shards", "tokens_built", "seconds") if k in rep}

    return run


def study_stage(cfg: ExperimentConfig) -> StageFn:
    """Sample D and a disjoint validation set (:func:`kdmem.corpus.examples.sample_study_set`);
    example_id = global document id of the shards."""

    def run(ctx: StageContext) -> dict[str, Any]:
        d = cfg.data
        lay = ctx.layout
        study, val, n_eligible = sample_study_set(
            lay.shards,
            d.n_examples,
            d.n_validation,
            d.seq_len,
            d.sample_seed,
            windows=d.windows,
            allow_fewer=d.allow_fewer,
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


def _recipe_fields(
    cfg: ExperimentConfig, section: Optim, seed: int, seeded: bool = True
) -> dict[str, Any]:
    """The recipe config fields a study section sets: every :class:`Optim` field, plus the
    run's precision and device, the seed and the study's sequence length; ``seeded`` runs
    (baselines, students) also take ``run.seed_init``; from ``[launch]`` the strategy and
    (with ``launch.global_batch``) the accumulation."""
    optim = {f.name: getattr(section, f.name) for f in dataclasses.fields(Optim)}
    return {
        **optim,
        "grad_accum": cfg.launch.grad_accum(section),
        "distributed": cfg.launch.strategy,
        "precision": cfg.run.precision,
        "seed": seed,
        "seed_init": cfg.run.seed_init if seeded else "none",
        "snapshot_every": cfg.measure.every_steps,
        "device": cfg.run.device,
        "seq_len": cfg.data.seq_len,
    }


def _train(
    ctx: StageContext,
    cfg: ExperimentConfig,
    recipe: OptimConfig,
    command: str,
    fn: Callable[..., dict[str, Any]],
) -> dict[str, Any]:
    """Run a training recipe: in this process (one process in ``[launch]``), or written to
    ``RUN/launch/<stage>.toml`` and launched as ``kdmem train|distill --config FILE`` on
    every rank (:mod:`kdmem.launch.torchrun`). Returns the model's ``kdmem.json``."""
    launcher = launcher_for(cfg)
    if launcher.in_process:
        return fn(recipe, log=ctx.log)
    path = ctx.layout.launch_recipe(ctx.stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, recipe_to_toml(recipe).encode("utf-8"))
    launcher.run(ctx.run_dir, ctx.stage, [command, "--config", str(path)], ctx.log)
    info: dict[str, Any] = json.loads((Path(recipe.out) / "kdmem.json").read_text("utf-8"))
    return info


def finetune_stage(cfg: ExperimentConfig, role: str, kind: str, seed: int) -> StageFn:
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
                **_recipe_fields(cfg, section, seed, seeded=kind != "teacher"),
            },
        )
        info = _train(ctx, cfg, tcfg, "train", finetune)
        _validation_json(lay, role)
        return {"model_hash": info.get("model_hash", "")}

    return run


def distill_stage(
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
                "teacher_shard": cfg.launch.teacher_shard,
            },
        )
        info = _train(ctx, cfg, dcfg, "distill", distill)
        _validation_json(lay, role)
        return {"model_hash": info.get("model_hash", "")}

    return run


# ---- measurement and analyses ------------------------------------------------------------------


def _rate(path: Path) -> dict[str, Any]:
    mem = pq.read_table(path, columns=["memorized"]).column("memorized").to_numpy()
    return {
        "memorized": int(mem.sum()),
        "n": len(mem),
        "rate": float(mem.mean()) if len(mem) else 0.0,
    }


def _measure(
    ctx: StageContext,
    cfg: ExperimentConfig,
    model: Path,
    data: Path,
    out: Path,
    kw: dict[str, Any],
) -> Path:
    """:func:`kdmem.measure.measure` in this process (one process in ``[launch]``), or as
    ``kdmem measure`` on every rank of a torchrun launch, each rank measuring its share of
    the chunks (the table is the same; :mod:`kdmem.launch.torchrun`)."""
    launcher = launcher_for(cfg)
    if launcher.in_process:
        return measure(model, data, out, **kw)
    argv = ["measure", "--model", str(model), "--data", str(data), "--out", str(out)]
    for k, v in kw.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            argv += [flag] if v else []
        elif v is not None:
            argv += [flag, str(v)]
    launcher.run(ctx.run_dir, ctx.stage, argv, ctx.log)
    return out


def measure_stage(
    cfg: ExperimentConfig, role: str, reference: str | None, after: str = ""
) -> StageFn:
    """Stage ``measure_<role>``; with a ``reference`` in pair mode: KL(role || reference)
    and the reference's own table from the same pass (``kdmem measure --reference-out``).
    ``after``: the training stage whose skip skips this one."""

    def run(ctx: StageContext) -> dict[str, Any]:
        lay = ctx.layout
        if after and (why := ctx.skipped(after)):
            return {"skipped": why}
        kw: dict[str, Any] = dict(
            prefix=cfg.data.prefix,
            suffix=cfg.data.suffix,
            reference=None if reference is None else lay.model(reference),
            reference_out=None if reference is None else lay.measure(reference),
            batch_size=cfg.measure.batch_size,
            device=cfg.run.device,
            verify_generate=cfg.measure.verify_generate,
            spot_checks=cfg.measure.spot_checks,
            partial=cfg.measure.partial,
            role=role,
        )
        out = _measure(ctx, cfg, lay.model(role), lay.study, lay.measure(role), kw)
        metrics = _rate(out)
        if reference is not None:
            metrics[reference] = _rate(lay.measure(reference))
        return metrics

    return run


def steps_subset_stage(cfg: ExperimentConfig) -> StageFn:
    """The fixed random subset of D (``measure.subset`` examples, seeded by
    ``data.sample_seed``) that every kept model is measured on."""

    def run(ctx: StageContext) -> dict[str, Any]:
        study = load_examples(ctx.layout.study)
        rng = np.random.default_rng([cfg.data.sample_seed, 7])
        rows = np.sort(
            rng.choice(len(study), size=min(cfg.measure.subset, len(study)), replace=False)
        )
        write_examples(study.select(rows), ctx.layout.steps_subset)
        return {"n_examples": len(rows)}

    return run


def steps_stage(cfg: ExperimentConfig, role: str) -> StageFn:
    """Memorization over training: measure every kept model of ``role`` on the subset and
    summarise the rate per step (``measure/steps/<role>.json``)."""

    def run(ctx: StageContext) -> dict[str, Any]:
        lay = ctx.layout
        rows = []
        for snap in sorted(lay.model_snapshots(role).glob("step-*")):
            step = int(snap.name.removeprefix("step-"))
            kw = dict(
                prefix=cfg.data.prefix,
                suffix=cfg.data.suffix,
                batch_size=cfg.measure.batch_size,
                device=cfg.run.device,
                role=role,
            )
            out = _measure(
                ctx,
                cfg,
                snap,
                lay.steps_subset,
                lay.measure_steps(role) / f"{snap.name}.parquet",
                kw,
            )
            rows.append({"step": step, **_rate(out)})
        write_json_atomic(lay.steps_summary(role), {"role": role, "steps": rows})
        return {"snapshots": len(rows)}

    return run


def featurize_stage(cfg: ExperimentConfig) -> StageFn:
    """Corpus features of D. In a Slurm job (``--launcher srun``) a job array has already
    computed them per index shard into ``RUN/parts/featurize``: merge those instead (the
    merge checks that they cover every shard once and agree on their options)."""

    def run(ctx: StageContext) -> dict[str, Any]:
        lay = ctx.layout
        if launcher_for(cfg).mode == "srun":
            parts = read_parts(lay.parts("featurize"))
            for t in parts:
                meta = partial_meta(t, PARTIAL_FORMAT)
                if (meta.get("prefix"), meta.get("suffix")) != (cfg.data.prefix, cfg.data.suffix):
                    raise StudySetMismatchError(
                        f"{lay.parts('featurize')} holds features for prefix {meta.get('prefix')}"
                        f" / suffix {meta.get('suffix')}, the config says {cfg.data.prefix} / "
                        f"{cfg.data.suffix}; rerun the featurize array job (or delete the parts)"
                    )
            featurize_merge(
                lay.study,
                parts,
                lay.features,
                index=lay.shards,
                ngram=tuple(cfg.featurize.ngram),
                exclude_self=True,
                tokenizer=str(lay.tokenizer_json),
                threads=cfg.run.threads,
            )
            return {}
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


def continuations_stage(cfg: ExperimentConfig) -> StageFn:
    """The scan's input: the teacher's hard-distillation continuations (written by the first
    hard student's stage into ``generations/``) without their prefix, i.e. tokens
    ``[data.prefix, hard.gen_len)`` of every example, the tokens the teacher generated."""

    def run(ctx: StageContext) -> dict[str, Any]:
        lay = ctx.layout
        info = json.loads((lay.model("teacher") / "kdmem.json").read_text("utf-8"))
        teacher_hash = str(info["model_hash"])
        d = generations_dir(lay.generations, teacher_hash, cfg.data.prefix, cfg.hard.gen_len)
        src = d / GENERATIONS_FILE
        if not src.is_file() or read_table_meta(src).get("teacher_hash") != teacher_hash:
            raise MissingStageInputError(
                f"{src} does not hold the continuations of the teacher in {lay.model('teacher')}; "
                f"they are written by the stage student_hard_seed{cfg.run.seeds[0]}: rerun it"
            )
        gen = load_examples(src)
        cont = Examples(gen.example_ids, gen.tokens[:, cfg.data.prefix :], gen.tokenizer_hash)
        write_examples(cont, lay.continuations)
        return {"n_continuations": len(cont), "tokens_each": cont.length}

    return run


def scan_stage(cfg: ExperimentConfig) -> StageFn:
    """Maximal verbatim corpus spans of at least ``scan.min_len`` tokens (0: ``data.suffix``)
    in the teacher's continuations (:func:`kdmem.corpus.scan.scan`). In a Slurm job two job
    arrays have already run both rounds per index shard into ``RUN/parts/scan-lm`` and
    ``RUN/parts/scan-hits``: merge the round-2 parts instead (the same table)."""

    def run(ctx: StageContext) -> dict[str, Any]:
        lay = ctx.layout
        min_len, max_loc = cfg.scan_min_len(), cfg.scan.max_locations
        if launcher_for(cfg).mode == "srun":
            parts = read_parts(lay.parts("scan-hits"))
            n = pq.read_metadata(lay.continuations).num_rows
            for t in parts:
                meta = partial_meta(t, HITS_PARTIAL_FORMAT)
                got = (meta.get("min_len"), meta.get("max_locations"), meta.get("n_generations"))
                if got != (min_len, max_loc, n):
                    raise StudySetMismatchError(
                        f"{lay.parts('scan-hits')} holds spans of min_len {got[0]} / "
                        f"max_locations {got[1]} over {got[2]} continuations; the run has "
                        f"{min_len} / {max_loc} over {n}: rerun the scan array jobs (or delete "
                        "the parts)"
                    )
            scan_merge(parts, lay.spans, index=lay.shards)
        else:
            scan(
                lay.continuations,
                lay.shards,
                lay.spans,
                min_len=min_len,
                max_locations=max_loc,
                threads=cfg.run.threads,
            )
        return {"spans": pq.read_metadata(lay.spans).num_rows}

    return run


def predict_stage(cfg: ExperimentConfig) -> StageFn:
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
                target_recall=p.target_recall,
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


def sets_stage(cfg: ExperimentConfig) -> StageFn:
    def run(ctx: StageContext) -> dict[str, Any]:
        write_sets(analyze_sets([RunDir(ctx.run_dir)]), ctx.layout.sets)
        return {}

    return run


def filter_flag_stage(cfg: ExperimentConfig) -> StageFn:
    def run(ctx: StageContext) -> dict[str, Any]:
        if why := ctx.skipped("predict"):
            return {"skipped": f"no predictor: {why}"}
        res = run_filter_flag(ctx.run_dir, model=cfg.filter.model, threshold=cfg.filter.threshold)
        return {"n_flagged": res["n_flagged"], "n_kept": res["n_kept"]}

    return run


def filter_compare_stage(cfg: ExperimentConfig, before: str, after: str) -> StageFn:
    def run(ctx: StageContext) -> dict[str, Any]:
        if why := ctx.skipped(f"measure_{after}"):
            write_json_atomic(ctx.layout.filter_result, {"skipped": why})
            return {"skipped": why}
        res = run_filter_compare(ctx.run_dir, before, after)
        return {k: res[k] for k in ("memorized_before", "memorized_after", "n_new", "n_flagged")}

    return run


def report_stage(cfg: ExperimentConfig) -> StageFn:
    def run(ctx: StageContext) -> dict[str, Any]:
        build_report(ctx.run_dir)
        return {}

    return run
