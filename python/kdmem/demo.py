"""``kdmem demo``: the whole study at laptop scale, from text on every machine, in minutes.

1. **Corpus** (built at run time, nothing downloaded): docstrings and comments of the running
   Python's standard library, split into documents. A random part is the fine-tuning corpus;
   a few of its documents are *planted*: repeated 2, 4, 8 and 16 times, so memorization has a
   known cause. The rest pretrains the base models.
2. **Tokenizer and base checkpoints**: a byte-level BPE trained locally; a small GPT-NeoX base
   model of the student size (baseline and students all start from it, as in the paper) and
   a larger teacher base, both pretrained briefly on the pretraining part.
3. **The study**: ``kdmem run`` on a generated config (``runs/demo/demo.toml``): shard, index,
   study set, teacher, baseline, soft and hard students, measurement of every model,
   features, predictor, set analyses, filtering and re-distillation, report.

Sizes are chosen so memorization is the exception, as in real fine-tuning; the numbers are
whatever they are and are reported as such.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import tomli_w
from tokenizers import Tokenizer

from kdmem.analysis.sets import format_directions
from kdmem.atomic import write_bytes_atomic, write_json_atomic, write_parquet_atomic
from kdmem.config import FinetuneConfig, config_from_dict, load_config
from kdmem.corpus.examples import Examples, write_examples
from kdmem.corpus.shard import shard_corpus
from kdmem.corpus.shards import open_shards
from kdmem.models.load import save_model
from kdmem.models.tiny import build_model, tiny_config
from kdmem.models.tokenizer import load_tokenizer, train_tokenizer
from kdmem.pipeline import Stage, StageContext
from kdmem.rundir import REL, Layout
from kdmem.stdlib_corpus import stdlib_documents, stdlib_files
from kdmem.study import run_experiment
from kdmem.train import finetune

PLANTED_COUNTS = (2, 4, 8, 16)


@dataclass(frozen=True)
class DemoSize:
    """Knobs of the demo (defaults sized for about 10 minutes on 2 CPU cores)."""

    n_examples: int = 600
    n_validation: int = 60
    planted_per_count: int = 2
    seq_len: int = 64
    prefix: int = 32
    suffix: int = 32
    vocab_size: int = 2048
    student_width: int = 128
    student_layers: int = 2
    teacher_width: int = 192
    teacher_layers: int = 3
    pretrain_epochs: int = 1
    pretrain_docs: int = 1200
    teacher_epochs: int = 6
    student_epochs: int = 6
    lr: float = 3e-3
    pretrain_lr: float = 3e-3
    batch_size: int = 8
    pretrain_batch_size: int = 32
    source_fraction: float = 0.5  # of the fine-tuning documents: stdlib source (natural repeats)
    seeds: tuple[int, ...] = (0, 1, 2)
    temperatures: tuple[float, ...] = (1.0, 4.0)  # sweep beside the main T = 2
    every_steps: int = 150  # memorization over training: a snapshot every K steps
    steps_subset: int = 200  # ... measured on this many examples of D
    seed: int = 0


def _docs_stage(size: DemoSize) -> Any:
    def run(ctx: StageContext) -> dict[str, Any]:
        rng = np.random.default_rng(size.seed)
        prose = [d for d in stdlib_documents("prose", chunk_chars=1200) if len(d) >= 300]
        prose = [prose[i] for i in rng.permutation(len(prose))]
        # the opening piece of every module, in a random order: what modules share there
        # (codec class templates, licence headers, import blocks) recurs on its own; the
        # modules' other pieces go to pretraining
        files = stdlib_files()
        source, later = [], []
        for i in rng.permutation(len(files)):
            pieces = stdlib_documents("definitions", chunk_chars=1200, files=[files[i]])
            kept = [p for p in pieces if len(p) >= 300]
            source += kept[:1]
            later += kept[1:]
        # spare documents: some are shorter than seq_len tokens
        n_ft = size.n_examples + size.n_validation + 200
        n_src = round(size.source_fraction * n_ft)
        ft = prose[: n_ft - n_src] + source[:n_src]
        ft = [ft[i] for i in rng.permutation(len(ft))]
        rest = prose[n_ft - n_src :] + source[n_src:] + later
        pre = [rest[i] for i in rng.permutation(len(rest))[: size.pretrain_docs]]
        write_bytes_atomic(
            ctx.layout.corpus("pretrain.jsonl"),
            "".join(json.dumps({"text": t}) + "\n" for t in pre).encode(),
        )
        write_bytes_atomic(
            ctx.layout.corpus("finetune_unplanted.jsonl"),
            "".join(json.dumps({"text": t}) + "\n" for t in ft).encode(),
        )
        return {"finetune_docs": len(ft), "pretrain_docs": len(pre)}

    return run


def _tokenizer_stage(size: DemoSize) -> Any:
    def run(ctx: StageContext) -> dict[str, Any]:
        texts = []
        for name in ("pretrain.jsonl", "finetune_unplanted.jsonl"):
            with open(ctx.layout.corpus(name), encoding="utf-8") as f:
                texts += [json.loads(line)["text"] for line in f]
        train_tokenizer(texts, size.vocab_size, ctx.layout.bases("tokenizer"))
        return {}

    return run


def _plant_stage(size: DemoSize) -> Any:
    """The fine-tuning corpus: documents of >= seq_len tokens, the first few planted (repeated
    2..16 times). ``corpus/planted.json`` records which texts and how often."""

    def run(ctx: StageContext) -> dict[str, Any]:
        tok = Tokenizer.from_file(str(ctx.layout.bases("tokenizer") / "tokenizer.json"))
        with open(ctx.layout.corpus("finetune_unplanted.jsonl"), encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for line in f]
        lens = [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]
        long = [t for t, n in zip(texts, lens, strict=True) if n >= size.seq_len]
        n_planted = size.planted_per_count * len(PLANTED_COUNTS)
        # D and the held-out set, planted copies included
        n_docs = size.n_examples + min(size.n_validation, size.n_examples // 9)
        base = long[: n_docs - sum((c - 1) * size.planted_per_count for c in PLANTED_COUNTS)]
        planted = []
        docs = list(base)
        for j, count in enumerate(PLANTED_COUNTS):
            for k in range(size.planted_per_count):
                text = base[j * size.planted_per_count + k]
                planted.append({"text": text, "copies": count})
                docs += [text] * (count - 1)
        rng = np.random.default_rng(size.seed + 1)
        docs = [docs[i] for i in rng.permutation(len(docs))]
        write_bytes_atomic(
            ctx.layout.corpus("finetune.jsonl"),
            "".join(json.dumps({"text": t}) + "\n" for t in docs).encode(),
        )
        write_json_atomic(ctx.layout.corpus("planted.json"), planted)
        # Which study examples are planted copies: example ids are the documents' positions
        # in finetune.jsonl (the shards keep the input order; D uses document windows).
        planted_texts = {p["text"] for p in planted}
        write_parquet_atomic(
            ctx.layout.groups,
            pa.table(
                {
                    "example_id": pa.array(np.arange(len(docs)), pa.int64()),
                    "group": ["planted" if t in planted_texts else "natural" for t in docs],
                }
            ),
        )
        return {"documents": len(docs), "planted": n_planted}

    return run


def _base_stage(size: DemoSize, which: str) -> Any:
    def run(ctx: StageContext) -> dict[str, Any]:
        lay = ctx.layout
        tok = load_tokenizer(lay.bases("tokenizer"))
        pre = lay.bases("pretrain")
        if not (pre / "train.parquet").exists():
            shard_corpus(
                [lay.corpus("pretrain.jsonl")],
                lay.bases("tokenizer") / "tokenizer.json",
                pre / "shards",
                overwrite=True,
            )
            ss = open_shards(pre / "shards")
            flat = np.concatenate([np.asarray(s.tokens, dtype=np.int64) for s in ss.shards])
            n = len(flat) // size.seq_len
            rows = flat[: n * size.seq_len].reshape(n, size.seq_len)
            write_examples(
                Examples(np.arange(n, dtype=np.int64), rows, ss.tokenizer_hash),
                pre / "train.parquet",
            )
        width = size.teacher_width if which == "teacher" else size.student_width
        layers = size.teacher_layers if which == "teacher" else size.student_layers
        init = lay.bases(f"{which}_init")
        cfg = tiny_config(
            "gpt_neox",
            len(tok),
            hidden_size=width,
            num_layers=layers,
            num_heads=4,
            max_position_embeddings=max(256, size.seq_len * 4),
            eos_token_id=tok.eos_token_id,
        )
        save_model(build_model(cfg, seed=size.seed), init, tok)
        info = finetune(
            config_from_dict(
                FinetuneConfig,
                {
                    "role": "baseline" if which == "student" else "teacher",
                    "model": str(init),
                    "data": str(pre / "train.parquet"),
                    "out": str(lay.bases(which)),
                    "epochs": size.pretrain_epochs,
                    "lr": size.pretrain_lr,
                    "warmup_steps": 20,
                    "batch_size": size.pretrain_batch_size,
                    "seed": size.seed,
                },
            ),
            log=lambda _m: None,
        )
        return {"train_loss": info["metrics"][-1]["train_loss"]}

    return run


def demo_config(run_dir: Path, size: DemoSize) -> dict[str, Any]:
    """The experiment config the demo runs (written to ``RUN/demo.toml``)."""
    lay = Layout(run_dir)
    optim = {"epochs": size.student_epochs, "lr": size.lr, "batch_size": size.batch_size}
    return {
        "run": {
            "name": "demo",
            "dir": str(run_dir),
            "seeds": list(size.seeds),
            "threads": 2,
            "device": "cpu",
        },
        "data": {
            "corpus": [str(lay.corpus("finetune.jsonl"))],
            "tokenizer": str(lay.bases("tokenizer")),
            "n_examples": size.n_examples,
            "n_validation": size.n_validation,
            "seq_len": size.seq_len,
            "prefix": size.prefix,
            "suffix": size.suffix,
        },
        "models": {"teacher": str(lay.bases("teacher")), "student": str(lay.bases("student"))},
        "teacher": {**optim, "epochs": size.teacher_epochs},
        "baseline": optim,
        "soft": {
            **optim,
            "temperature": 2.0,
            "temperatures": [float(t) for t in size.temperatures],
        },
        "hard": {**optim, "gen_len": size.seq_len},
        "measure": {"every_steps": size.every_steps, "subset": size.steps_subset},
        "featurize": {"ngram": [8]},
        "predict": {"resamples": 100},
    }


def demo_config_toml(run_dir: Path, size: DemoSize) -> str:
    """:func:`demo_config` as TOML, headed by the command that runs it."""
    return f"# kdmem run {run_dir}/demo.toml   (written by `kdmem demo`)\n" + tomli_w.dumps(
        demo_config(run_dir, size)
    )


_PRETRAIN = ("pretrain_epochs", "pretrain_lr", "pretrain_batch_size", "seq_len", "seed")


def _slice(size: DemoSize, *names: str) -> dict[str, Any]:
    """The part of the demo size a stage depends on (hashed by the pipeline)."""
    return {n: getattr(size, n) for n in names}


def demo_stages(size: DemoSize) -> list[Stage]:
    """The stages that build the demo's inputs (corpus, tokenizer, base checkpoints)."""
    return [
        Stage(
            "demo_corpus",
            _docs_stage(size),
            _slice(size, "n_examples", "n_validation", "pretrain_docs", "source_fraction", "seed"),
            (),
            (str(REL.corpus("pretrain.jsonl")), str(REL.corpus("finetune_unplanted.jsonl"))),
        ),
        Stage(
            "demo_tokenizer",
            _tokenizer_stage(size),
            _slice(size, "vocab_size"),
            ("demo_corpus",),
            (str(REL.bases("tokenizer")),),
        ),
        Stage(
            "demo_plant",
            _plant_stage(size),
            {
                **_slice(size, "seq_len", "planted_per_count", "n_examples", "n_validation"),
                "counts": PLANTED_COUNTS,
            },
            ("demo_tokenizer",),
            (
                str(REL.corpus("finetune.jsonl")),
                str(REL.corpus("planted.json")),
                str(REL.groups),
            ),
        ),
        Stage(
            "demo_base_student",
            _base_stage(size, "student"),
            _slice(size, "student_width", "student_layers", *_PRETRAIN),
            ("demo_tokenizer",),
            (str(REL.bases("student")),),
        ),
        Stage(
            "demo_base_teacher",
            _base_stage(size, "teacher"),
            _slice(size, "teacher_width", "teacher_layers", *_PRETRAIN),
            ("demo_tokenizer",),
            (str(REL.bases("teacher")),),
        ),
    ]


def run_demo(
    run_dir: str | Path = "runs/demo", size: DemoSize | None = None, log: Any = print
) -> dict[str, Any]:
    """Build the demo inputs, run the study, print the headline numbers; returns the summary."""
    size = size or DemoSize()
    rd = Path(run_dir)
    t0 = time.perf_counter()
    prep = demo_stages(size)
    rd.mkdir(parents=True, exist_ok=True)
    toml = rd / "demo.toml"
    write_bytes_atomic(toml, demo_config_toml(rd, size).encode())
    run_experiment(load_config(toml), rd, before=prep, log=log)
    summary: dict[str, Any] = json.loads(Layout(rd).report_summary.read_text())
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    return summary


def format_headline(summary: dict[str, Any], run_dir: Path) -> str:
    """The demo's closing lines: rates, overlaps, predictor, filtering, where the report is."""
    lines = [
        f"kdmem demo: {summary.get('n_examples', '?')} examples, {summary.get('wall_s', '?')} s"
    ]
    for role, r in summary.get("rates", {}).items():
        rate = r.get("rate")
        lines.append(
            f"  {role:32s} memorized {r['n_memorized']:5d} / {r['n']}"
            + (f"  ({100 * rate:.2f}%)" if rate is not None else "")
        )
    groups = summary.get("sets", {}).get("groups") or {}
    if groups:
        lines.append(
            "  memorized by group (teacher): "
            + ", ".join(
                f"{g} {v['memorized'].get('teacher', 0)} of {v['n']}" for g, v in groups.items()
            )
        )
    jac = summary.get("sets", {}).get("seed_stability", {}).get("jaccard", {})
    if jac:
        lines.append(
            "  seeds' memorized sets, mean Jaccard: "
            + ", ".join(f"{k} {v['mean']:.2f}" for k, v in jac.items() if v["mean"] is not None)
        )
    if "directions" in summary:
        lines.append("  the paper's directions, on this run:")
        lines += [f"    {line}" for line in format_directions(summary["directions"])]
    pred = summary.get("predictor")
    if pred:
        auc = pred["paper_protocol"]["roc_auc"]
        lines.append(
            f"  predictor of {pred['target']}: paper-protocol ROC-AUC {auc['mean']:.3f}"
            f" ± {auc.get('std') or 0:.3f}"
            + "".join(
                f"; held-out {g} ROC-AUC {v['roc_auc']:.3f}"
                for g, v in (pred.get("by_group") or {}).items()
                if v.get("roc_auc") is not None
            )
        )
    else:
        note = summary.get("notes", {}).get("predictor")
        lines.append(f"  predictor: {note or 'not run'}")
    filt = Layout(run_dir).filter_result
    if filt.exists():
        f = json.loads(filt.read_text())
        if "skipped" in f:
            lines.append(f"  filtering: skipped ({f['skipped']})")
        else:
            lines.append(
                f"  filtering: {f['n_flagged']} flagged; memorized before {f['memorized_before']}, "
                f"after {f['memorized_after']} ({f['n_new']} new)"
            )
    lines.append(f"report: {Layout(run_dir).report_index}")
    return "\n".join(lines)
