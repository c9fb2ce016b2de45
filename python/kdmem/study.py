"""``kdmem run EXP.toml``: the whole study as a stage graph over one run directory.

Stages (each a thin call into a library function; see :mod:`kdmem.pipeline` for resume and
change detection), in order::

    tokenizer -> shard -> index -> study
    teacher, baseline_seed<k>, student_soft_seed<k>, student_soft_T<t>_seed<k0>,
    student_hard_seed<k>                                  (kdmem.train)
    measure_<role> for every model; measure_teacher runs in pair mode with the first
        baseline (KL(teacher || baseline) plus both tables from two forward passes)
    featurize -> predict -> sets -> filter -> report

Run directory layout: docs/run_dir.md. Models go to ``models/<role>/``; their held-out
metrics to ``validation/<role>.json``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from kdmem.analysis.rundir import write_json_atomic
from kdmem.config import ExperimentConfig, to_toml
from kdmem.pipeline import Pipeline, Stage, StageContext

STUDY = "data/study.parquet"
VALIDATION = "data/validation.parquet"
EXAMPLES = "data/examples.parquet"
FILTERED = "data/filtered.parquet"
FILTERED_ROLE = "student_soft_filtered_seed"


def _asdict(x: Any) -> Any:
    return dataclasses.asdict(x) if dataclasses.is_dataclass(x) else x


def _corpus_inputs(cfg: ExperimentConfig) -> list[str]:
    out = []
    for c in cfg.data.corpus:
        p = Path(c)
        if p.exists() or c.startswith("hf:"):
            out.append(c)
        else:  # a hub dataset name
            out.append(f"hf:{c}" + (f":{cfg.data.subset}" if cfg.data.subset else ""))
    return out


# ---- stage functions -----------------------------------------------------------------------


def _tokenizer(cfg: ExperimentConfig) -> Any:
    def run(ctx: StageContext) -> dict[str, Any]:
        from kdmem.corpus import tokenizer_hash
        from kdmem.models import load_tokenizer

        tok = load_tokenizer(cfg.data.tokenizer)
        out = ctx.run_dir / "tokenizer"
        tok.save_pretrained(str(out))
        return {"vocab_size": len(tok), "tokenizer_hash": tokenizer_hash(tok)}

    return run


def _shard(cfg: ExperimentConfig) -> Any:
    def run(ctx: StageContext) -> dict[str, Any]:
        from kdmem.corpus import shard_corpus

        res = shard_corpus(
            _corpus_inputs(cfg),
            ctx.run_dir / "tokenizer" / "tokenizer.json",
            ctx.run_dir / "shards",
            threads=cfg.run.threads,
            dtype=cfg.data.dtype,
            text_field=cfg.data.text_field,
            split=cfg.data.split,
            max_documents=cfg.data.max_documents,
        )
        return {"n_docs": res.n_docs, "n_tokens": res.n_tokens}

    return run


def _index(cfg: ExperimentConfig) -> Any:
    def run(ctx: StageContext) -> dict[str, Any]:
        from kdmem.corpus.index import build_index

        rep = build_index(ctx.run_dir / "shards", threads=cfg.run.threads)
        write_json_atomic(ctx.run_dir / "index" / "build.json", rep)
        return {k: rep[k] for k in ("shards", "tokens_built", "seconds") if k in rep}

    return run


def _study(cfg: ExperimentConfig) -> Any:
    """Sample D (n_examples documents of >= seq_len tokens, truncated to seq_len) and a
    disjoint validation set; example_id = global document id of the shards."""

    def run(ctx: StageContext) -> dict[str, Any]:
        import pyarrow as pa
        from tokenizers import Tokenizer

        from kdmem.analysis.rundir import write_parquet_atomic
        from kdmem.corpus import open_shards
        from kdmem.data import Examples, write_examples
        from kdmem.errors import EmptyCorpusError

        d = cfg.data
        ss = open_shards(ctx.run_dir / "shards")
        lengths = np.concatenate([np.diff(np.asarray(s.offsets)) for s in ss.shards])
        eligible = np.flatnonzero(lengths >= d.seq_len)
        if len(eligible) == 0:
            raise EmptyCorpusError(
                f"no document of the corpus has data.seq_len = {d.seq_len} tokens; "
                "lower data.seq_len or use longer documents"
            )
        order = np.random.default_rng(d.sample_seed).permutation(eligible)
        n_val = min(d.n_validation, max(len(order) // 10, 1))
        val_ids = np.sort(order[:n_val])
        ids = np.sort(order[n_val : n_val + d.n_examples])

        def take(sel: np.ndarray) -> Examples:
            tok = np.stack([np.asarray(ss[int(i)][: d.seq_len], dtype=np.int64) for i in sel])
            return Examples(sel.astype(np.int64), tok, ss.tokenizer_hash)

        study = take(ids)
        write_examples(study, ctx.run_dir / STUDY)
        write_examples(take(val_ids), ctx.run_dir / VALIDATION)
        tok = Tokenizer.from_file(str(ctx.run_dir / "tokenizer" / "tokenizer.json"))
        texts = tok.decode_batch(study.tokens.tolist(), skip_special_tokens=False)
        write_parquet_atomic(
            ctx.run_dir / EXAMPLES,
            pa.table({"example_id": pa.array(study.example_ids, pa.int64()), "text": texts}),
        )
        return {"n_examples": len(study), "n_validation": len(val_ids), "n_eligible": len(eligible)}

    return run


def _validation_json(run_dir: Path, role: str) -> None:
    rows = json.loads((run_dir / "models" / role / "metrics.json").read_text("utf-8"))
    last = rows[-1] if rows else {}
    write_json_atomic(
        run_dir / "validation" / f"{role}.json",
        {
            "role": role,
            "loss": last.get("val_loss"),
            "ppl": last.get("val_ppl"),
            "n_tokens": last.get("val_tokens"),
            "epochs": rows,
        },
    )


def _common_train(cfg: ExperimentConfig, section: Any, seed: int) -> dict[str, Any]:
    return {
        "epochs": section.epochs,
        "lr": section.lr,
        "schedule": section.schedule,
        "warmup_steps": section.warmup_steps,
        "batch_size": section.batch_size,
        "grad_accum": section.grad_accum,
        "max_grad_norm": section.max_grad_norm,
        "precision": cfg.run.precision,
        "seed": seed,
        "device": cfg.run.device,
        "seq_len": cfg.data.seq_len,
    }


def _finetune(cfg: ExperimentConfig, role: str, kind: str, seed: int, data: str = STUDY) -> Any:
    def run(ctx: StageContext) -> dict[str, Any]:
        from kdmem.train.config import FinetuneConfig, config_from_dict
        from kdmem.train.finetune import finetune

        section = cfg.teacher if kind == "teacher" else cfg.baseline
        model = cfg.models.teacher if kind == "teacher" else cfg.models.student
        tcfg = config_from_dict(
            FinetuneConfig,
            {
                "role": kind,
                "model": model,
                "data": str(ctx.run_dir / data),
                "val_data": str(ctx.run_dir / VALIDATION),
                "out": str(ctx.run_dir / "models" / role),
                **_common_train(cfg, section, seed),
            },
        )
        info = finetune(tcfg, log=ctx.log)
        _validation_json(ctx.run_dir, role)
        return {"model_hash": info.get("model_hash", "")}

    return run


def _distill(
    cfg: ExperimentConfig, role: str, mode: str, seed: int, temperature: float, data: str = STUDY
) -> Any:
    def run(ctx: StageContext) -> dict[str, Any]:
        from kdmem.train.config import DistillConfig, config_from_dict
        from kdmem.train.distill import distill

        section = cfg.soft if mode == "soft" else cfg.hard
        extra: dict[str, Any] = {}
        if mode == "soft":
            extra = {"loss": cfg.soft.loss, "temperature": temperature, "alpha": cfg.soft.alpha}
        else:
            extra = {
                "prefix_len": cfg.data.prefix,
                "gen_len": cfg.hard.gen_len,
                "generations_dir": str(ctx.run_dir / "generations"),
            }
        dcfg = config_from_dict(
            DistillConfig,
            {
                "teacher": str(ctx.run_dir / "models" / "teacher"),
                "student": cfg.models.student,
                "mode": mode,
                "data": str(ctx.run_dir / data),
                "val_data": str(ctx.run_dir / VALIDATION),
                "out": str(ctx.run_dir / "models" / role),
                **extra,
                **_common_train(cfg, section, seed),
            },
        )
        info = distill(dcfg, log=ctx.log)
        _validation_json(ctx.run_dir, role)
        return {"model_hash": info.get("model_hash", "")}

    return run


def _measure(cfg: ExperimentConfig, role: str, reference: str | None) -> Any:
    """Stage ``measure_<role>``; with a ``reference`` in pair mode: KL(role || reference)
    and the reference's own table from the same pass (``kdmem measure --reference-out``)."""

    def run(ctx: StageContext) -> dict[str, Any]:
        from kdmem.measure import measure

        out = measure(
            ctx.run_dir / "models" / role,
            ctx.run_dir / STUDY,
            ctx.run_dir / "measure" / f"{role}.parquet",
            prefix=cfg.data.prefix,
            suffix=cfg.data.suffix,
            reference=None if reference is None else ctx.run_dir / "models" / reference,
            reference_out=None
            if reference is None
            else ctx.run_dir / "measure" / f"{reference}.parquet",
            batch_size=cfg.measure.batch_size,
            device=cfg.run.device,
            verify_generate=cfg.measure.verify_generate,
            role=role,
            progress=False,
        )
        import pyarrow.parquet as pq

        def rate(path: Any) -> tuple[int, float]:
            mem = pq.read_table(path, columns=["memorized"]).column("memorized").to_numpy()
            return int(mem.sum()), float(mem.mean()) if len(mem) else 0.0

        n, r = rate(out)
        metrics: dict[str, Any] = {"memorized": n, "rate": r}
        if reference is not None:
            n, r = rate(ctx.run_dir / "measure" / f"{reference}.parquet")
            metrics[reference] = {"memorized": n, "rate": r}
        return metrics

    return run


def _featurize(cfg: ExperimentConfig) -> Any:
    def run(ctx: StageContext) -> dict[str, Any]:
        from kdmem.corpus.featurize import featurize

        featurize(
            ctx.run_dir / STUDY,
            ctx.run_dir / "shards",
            ctx.run_dir / "features.parquet",
            prefix=cfg.data.prefix,
            suffix=cfg.data.suffix,
            ngram=tuple(cfg.featurize.ngram),
            exclude_self=True,
            tokenizer=str(ctx.run_dir / "tokenizer" / "tokenizer.json"),
            threads=cfg.run.threads,
            progress=False,
        )
        return {}

    return run


def _predict(cfg: ExperimentConfig) -> Any:
    def run(ctx: StageContext) -> dict[str, Any]:
        from kdmem.analysis import RunDir
        from kdmem.analysis.predictor import CORPUS_FEATURES, run_predict
        from kdmem.errors import NoPositiveExamplesError

        p = cfg.predict
        features = list(p.features) + (list(CORPUS_FEATURES) if p.corpus_features else [])
        target = None if p.target == "student_soft" else p.target
        try:
            res = run_predict(
                RunDir(ctx.run_dir),
                features=features,
                target=target,
                resamples=p.resamples,
                neg_ratio=float(p.negatives_per_positive),
                test_size=p.test_fraction,
                seed=p.seed,
            )
        except NoPositiveExamplesError as e:
            # Nothing to learn from: record why, so filter and report can say so.
            write_json_atomic(
                ctx.run_dir / "predictor" / "skipped.json", {"reason": str(e), "stage": "predict"}
            )
            ctx.log(f"[predict] skipped: {e}")
            return {"skipped": str(e)}
        (ctx.run_dir / "predictor" / "skipped.json").unlink(missing_ok=True)
        auc = res["metrics"]["paper_protocol"].get("roc_auc", {})
        return {"n_positive": res["n_positive"], "paper_roc_auc": auc.get("mean")}

    return run


def _sets(cfg: ExperimentConfig) -> Any:
    def run(ctx: StageContext) -> dict[str, Any]:
        from kdmem.analysis import RunDir
        from kdmem.analysis.sets import analyze_sets, write_sets

        res = analyze_sets([RunDir(ctx.run_dir)])
        write_sets(res, ctx.run_dir / "sets" / "sets.json")
        return {}

    return run


def _filter(cfg: ExperimentConfig, seed: int) -> Any:
    role = f"{FILTERED_ROLE}{seed}"

    def run(ctx: StageContext) -> dict[str, Any]:
        from kdmem.analysis import RunDir
        from kdmem.analysis.filter import compare_filtered, flag_examples, write_filtered

        out = ctx.run_dir / "filter" / "filter.json"
        if (ctx.run_dir / "predictor" / "skipped.json").exists():
            reason = json.loads((ctx.run_dir / "predictor" / "skipped.json").read_text())
            write_json_atomic(out, {"skipped": f"no predictor: {reason['reason']}"})
            return {"skipped": True}
        run_dir = RunDir(ctx.run_dir)
        flags = flag_examples(run_dir, threshold=cfg.filter.threshold)
        write_filtered(
            ctx.run_dir / STUDY,
            flags,
            ctx.run_dir / FILTERED,
            ctx.run_dir / "filter" / "flagged.json",
        )
        _distill(cfg, role, "soft", seed, cfg.soft.temperature, data=FILTERED)(ctx)
        _measure(cfg, role, None)(ctx)
        flagged = json.loads((ctx.run_dir / "filter" / "flagged.json").read_text())["flagged"]
        res = compare_filtered(RunDir(ctx.run_dir), f"student_soft_seed{seed}", role, flagged)
        write_json_atomic(out, res)
        return {k: res[k] for k in ("memorized_before", "memorized_after", "n_new", "n_flagged")}

    return run


def _report(cfg: ExperimentConfig) -> Any:
    def run(ctx: StageContext) -> dict[str, Any]:
        from kdmem.analysis.report import build_report

        build_report(ctx.run_dir)
        return {}

    return run


# ---- the graph -----------------------------------------------------------------------------


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
        Stage("tokenizer", _tokenizer(c), {"tokenizer": c.data.tokenizer}, roots, ("tokenizer",)),
        Stage(
            "shard",
            _shard(c),
            {
                **{k: data[k] for k in ("corpus", "text_field", "subset", "split", "dtype")},
                # only when set, so runs made before the option keep their fingerprint
                **({"max_documents": c.data.max_documents} if c.data.max_documents else {}),
            },
            ("tokenizer",),
            ("shards",),
        ),
        Stage("index", _index(c), {}, ("shard",), ("index/build.json",)),
        Stage(
            "study",
            _study(c),
            {k: data[k] for k in ("n_examples", "n_validation", "seq_len", "sample_seed")},
            ("shard",),
            (STUDY, VALIDATION, EXAMPLES),
        ),
    ]
    models: list[tuple[str, str]] = []  # (role, training stage)

    def train_stage(role: str, fn: Any, section: Any, deps: tuple[str, ...], seed: int) -> None:
        stages.append(
            Stage(
                role,
                fn,
                {"section": _asdict(section), "models": _asdict(c.models), **train_env},
                deps,
                (f"models/{role}", f"validation/{role}.json"),
                seed=seed,
            )
        )
        models.append((role, role))

    train_stage("teacher", _finetune(c, "teacher", "teacher", 0), c.teacher, ("study",), 0)
    for k in seeds:
        train_stage(
            f"baseline_seed{k}",
            _finetune(c, f"baseline_seed{k}", "baseline", k),
            c.baseline,
            ("study",),
            k,
        )
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
    for role, stage in models:
        if role == ref:
            continue
        paired = role == "teacher"
        stages.append(
            Stage(
                f"measure_{role}",
                _measure(c, role, ref if paired else None),
                window,
                (stage, ref) if paired else (stage,),
                (f"measure/{role}.parquet",) + ((f"measure/{ref}.parquet",) if paired else ()),
                version=2 if paired else 1,
            )
        )
        measured.append(f"measure_{role}")
    if c.featurize.enabled:
        stages.append(
            Stage(
                "featurize",
                _featurize(c),
                {"ngram": c.featurize.ngram, **window},
                ("index", "study"),
                ("features.parquet",),
            )
        )
    feats = ("featurize",) if c.featurize.enabled else ()
    stages.append(
        Stage("predict", _predict(c), _asdict(c.predict), (*measured, *feats), ("predictor",))
    )
    stages.append(Stage("sets", _sets(c), {}, tuple(measured), ("sets/sets.json",)))
    if c.filter.enabled and c.soft.enabled:
        stages.append(
            Stage(
                "filter",
                _filter(c, s0),
                {"filter": _asdict(c.filter), "soft": _asdict(c.soft), **window},
                ("predict", f"student_soft_seed{s0}", f"measure_student_soft_seed{s0}"),
                ("filter/filter.json",),
                seed=s0,
                scratch=(
                    "filter",
                    FILTERED,
                    f"models/{FILTERED_ROLE}{s0}",
                    f"measure/{FILTERED_ROLE}{s0}.parquet",
                    f"validation/{FILTERED_ROLE}{s0}.json",
                ),
            )
        )
    stages.append(
        Stage(
            "report",
            _report(c),
            {},
            tuple(st.name for st in stages[len(before) + 4 :]),
            ("report/index.html", "report/summary.json"),
        )
    )
    return stages


def run_experiment(
    cfg: ExperimentConfig,
    run_dir: str | Path | None = None,
    *,
    until: str | None = None,
    before: list[Stage] | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Run (or resume) every stage of ``cfg`` (after ``before``); returns the manifest."""
    from kdmem.analysis.rundir import write_bytes_atomic

    rd = Path(run_dir) if run_dir is not None else cfg.run_dir()
    rd.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(rd / "config.toml", to_toml(cfg).encode("utf-8"))
    return Pipeline(rd, build_stages(cfg, before), log=log).run(until=until)
