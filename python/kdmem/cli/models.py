"""Model commands: ``train``, ``distill`` (:mod:`kdmem.train`), ``measure``, ``generate``
(:mod:`kdmem.measure`). They import torch inside the command, and end a torchrun launch's
process group when they finish."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from kdmem.cli._app import main
from kdmem.cli._options import (
    batch_size,
    chunk_size_option,
    config_options,
    data_option,
    is_main_rank,
    model_runtime_options,
    prefix_option,
    progress_bars,
    quiet_transformers,
)
from kdmem.config import DistillConfig, FinetuneConfig, load_recipe
from kdmem.rundir import read_table_meta


@main.command()
@config_options(FinetuneConfig)
def train(config_file: str | None, **kw: Any) -> None:
    """Fine-tune a teacher or baseline with cross-entropy (resumes from OUT/checkpoint).

    Example: kdmem train --role baseline --model EleutherAI/pythia-1.4b --data D --out
    runs/x/models/baseline --epochs 4 --lr 5e-5 --schedule cosine. Multi-GPU: torchrun
    --nproc-per-node 8 -m kdmem.train train ... (see docs/train.md)."""
    cfg = load_recipe(FinetuneConfig, config_file, kw)
    quiet_transformers()
    from kdmem.distributed import shutdown
    from kdmem.train import finetune

    try:
        finetune(cfg)
    finally:
        shutdown()


@main.command()
@config_options(DistillConfig)
def distill(config_file: str | None, **kw: Any) -> None:
    """Distil a fine-tuned teacher into a student: soft (T^2 * KL), hard (CE on the teacher's
    greedy continuations) or argmax (CE on the teacher's argmax labels).

    Example: kdmem distill --teacher runs/x/models/teacher --student EleutherAI/pythia-1.4b
    --data D --out runs/x/models/soft --mode soft --loss fkl --temperature 2 --alpha 0."""
    cfg = load_recipe(DistillConfig, config_file, kw)
    quiet_transformers()
    from kdmem.distributed import shutdown
    from kdmem.train import distill as run_distill

    try:
        run_distill(cfg)
    finally:
        shutdown()


def _measure_line(path: Path) -> str:
    meta = read_table_meta(path)
    line = (
        f"kdmem: {path}: {meta.get('n_memorized')} of {meta.get('n_examples')} memorized "
        f"(prefix {meta.get('prefix')}, suffix {meta.get('suffix')})"
    )
    if meta.get("n_short"):
        line += f"; skipped {meta['n_short']} examples shorter than prefix+suffix"
    if meta.get("verify"):
        v = meta["verify"]
        line += f"; verify: {v['n_flips']} flips in {v['n_checked']} re-decoded"
    return line


@main.command()
@click.option("--model", "model", required=True, help="Hub id or local directory (safetensors).")
@data_option
@prefix_option
@click.option(
    "--suffix", default=50, show_default=True, type=click.IntRange(min=1), help="Suffix tokens."
)
@click.option(
    "--out", required=True, type=click.Path(), help="Output table, e.g. measure/teacher.parquet."
)
@click.option(
    "--reference", default=None, help="Second model: adds kl_to_reference = KL(model || reference)."
)
@click.option("--reverse-kl", is_flag=True, help="Also write kl_reference_to_model.")
@click.option(
    "--reference-out",
    default=None,
    type=click.Path(),
    help="Also write the reference's own labels and scores here, from the pass the KL "
    "already runs (pair mode: e.g. measure/baseline_seed0.parquet).",
)
@model_runtime_options
@click.option(
    "--verify-generate",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Re-decode K random examples plus every near-tie; flip rate goes in the metadata.",
)
@click.option(
    "--spot-checks",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Also re-decode K random memorized examples and keep their decoded suffixes "
    "(metadata verify.spot_checks; the report shows them).",
)
@click.option(
    "--partial",
    is_flag=True,
    help="Add match_frac, the decoded partial score (Biderman et al. 2023): greedy-decodes "
    "every non-memorized example.",
)
@click.option(
    "--tie-threshold",
    default=None,
    type=click.FloatRange(min=0),
    help="Top-2 logit gap below which --verify-generate re-decodes an example "
    "(default: 0.01 float32, 0.1 float16, 0.5 bfloat16).",
)
@click.option(
    "--seq-chunk",
    default=None,
    type=click.IntRange(min=1),
    help="Positions per lm-head chunk (default: 64 MiB of fp32 logits per model).",
)
@chunk_size_option
@click.option(
    "--strict",
    is_flag=True,
    help="Error on examples shorter than prefix+suffix instead of skipping.",
)
@click.option(
    "--role", default=None, help="Role name in the metadata (default: the --out file stem)."
)
def measure(model: str, data: str, out: str, **kw: Any) -> None:
    """Exact memorization labels and per-example scores from one teacher-forced pass."""
    from kdmem.distributed import shutdown
    from kdmem.measure import measure as run_measure

    kw["batch_size"] = batch_size(kw["batch_size"])
    try:
        with progress_bars() as bars:
            path = run_measure(model, data, out, progress=bars, **kw)
    finally:
        shutdown()
    outs = [path] + ([Path(kw["reference_out"])] if kw["reference_out"] else [])
    for p in outs:
        if p.is_file() and is_main_rank():
            click.echo(_measure_line(p), err=True)


@main.command()
@click.option("--model", "model", required=True, help="Teacher: hub id or local directory.")
@data_option
@prefix_option
@click.option(
    "--new-tokens",
    default=206,
    show_default=True,
    type=click.IntRange(min=1),
    help="Greedy tokens written after each prefix.",
)
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Output directory.")
@model_runtime_options
@click.option(
    "--cache",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "static", "dynamic"]),
    help="KV cache (auto: static on CUDA where supported).",
)
@chunk_size_option
@click.option(
    "--strict", is_flag=True, help="Error on examples shorter than the prefix instead of skipping."
)
def generate(model: str, data: str, out_dir: str, **kw: Any) -> None:
    """Greedy teacher continuations of fixed-length prefixes (hard-distillation data)."""
    from kdmem.distributed import shutdown
    from kdmem.measure import generate as run_generate

    kw["batch_size"] = batch_size(kw["batch_size"])
    try:
        with progress_bars() as bars:
            path = run_generate(model, data, out_dir, progress=bars, **kw)
    finally:
        shutdown()
    if path.is_file() and is_main_rank():
        meta = read_table_meta(path)
        line = f"kdmem: wrote {path}: {meta.get('n_examples')} sequences"
        if meta.get("n_short"):
            line += f"; skipped {meta['n_short']} examples shorter than the prefix"
        click.echo(line, err=True)
