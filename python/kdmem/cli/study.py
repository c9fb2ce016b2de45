"""Study commands: ``run``, ``demo`` (:mod:`kdmem.study`, :mod:`kdmem.demo`), the analyses
``predict``, ``sets``, ``report``, ``filter`` (:mod:`kdmem.analysis`), and ``doctor``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from kdmem.cli._app import main
from kdmem.cli._options import csv, quiet_transformers, run_dir_arg
from kdmem.rundir import PREDICTOR_JSON, PREDICTOR_SCORES, Layout


@main.command()
def doctor() -> None:
    """Report the linked zlib, threads and optional packages; warn on mismatches."""
    from kdmem.doctor import run_doctor

    sys.exit(run_doctor())


@main.command("run")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option(
    "--run-dir", type=click.Path(file_okay=False), help="Default: run.dir, else runs/<run.name>."
)
@click.option("--until", help="Stop after this stage (e.g. measure_teacher).")
@click.option(
    "--plan",
    is_flag=True,
    help="Print what would run and why, and per model pass its parameters, bytes per GPU "
    "(weights, gradients, AdamW, activations, teacher), whether it fits, the [launch] change "
    "that would, and its steps and examples; then exit. Reads model configs only.",
)
@click.option(
    "--gpus-per-node",
    type=click.IntRange(min=1),
    default=None,
    help="With --plan: GPUs per node (default: the visible ones).",
)
@click.option(
    "--gpu-mem",
    default=None,
    help="With --plan: memory per GPU, e.g. 80GB (GB = GiB here; default: the visible GPUs', "
    "or the RAM without one).",
)
@click.option(
    "--nodes",
    type=click.IntRange(min=1),
    default=None,
    help="With --plan: nodes available (default: launch.nnodes).",
)
@click.option("--json", "as_json", is_flag=True, help="With --plan: one JSON object.")
@click.option(
    "--emit-slurm",
    type=click.Path(file_okay=False),
    default=None,
    help="Write the stage graph as sbatch scripts plus submit.sh into this directory, then exit.",
)
@click.option("--force", is_flag=True, help="With --emit-slurm: write into a non-empty directory.")
@click.option(
    "--stage",
    default=None,
    help="Run only this stage (its inputs must be done): what each --emit-slurm job runs.",
)
@click.option(
    "--launcher",
    type=click.Choice(["local", "srun"]),
    default="local",
    show_default=True,
    help="How model passes start: torchrun on this node, or srun torchrun on every node of "
    "the Slurm allocation (the --emit-slurm jobs).",
)
def run_cmd(
    config: str,
    overrides: tuple[str, ...],
    run_dir: str | None,
    until: str | None,
    plan: bool,
    gpus_per_node: int | None,
    gpu_mem: str | None,
    nodes: int | None,
    as_json: bool,
    emit_slurm: str | None,
    force: bool,
    stage: str | None,
    launcher: str,
) -> None:
    """Run (or resume) every stage of an experiment config, with section.key=value OVERRIDES.

    Stages whose config and inputs are unchanged are skipped; a killed run resumes where it
    stopped; changing one key re-runs only the stages that depend on it. Model passes start
    on the [launch] processes (torchrun; docs/scaleout.md)."""
    from kdmem.config import load_config

    cfg = load_config(config, list(overrides))
    rd = Path(run_dir) if run_dir else cfg.run_dir()
    if not rd.resolve().is_relative_to(Path.cwd().resolve()):
        click.echo(f"kdmem: run directory {rd.resolve()} (outside the working directory)", err=True)
    if plan:
        _print_plan(cfg, rd, gpus_per_node, gpu_mem, nodes, as_json)
        return
    if emit_slurm:
        from kdmem.study import build_stages
        from kdmem.study.slurm import emit_slurm as emit

        path = emit(cfg, build_stages(cfg), rd, emit_slurm, force=force)
        click.echo(f"kdmem: wrote the Slurm jobs of {rd}; submit them with: bash {path}", err=True)
        return
    quiet_transformers()
    from kdmem.study import run_experiment

    run_experiment(
        cfg, rd, until=until, log=lambda m: click.echo(m, err=True), only=stage, launcher=launcher
    )
    if Layout(rd).report_index.exists() and stage is None:
        click.echo(f"report: {Layout(rd).report_index}")


def parse_gib(value: str) -> int:
    """``80GB``, ``80GiB``, ``80G`` or ``80`` as bytes (GiB: what nvidia-smi's MiB add up to)."""
    v = value.strip().upper().removesuffix("B").removesuffix("I").removesuffix("G").strip()
    try:
        n = float(v)
    except ValueError:
        n = -1.0
    if not n > 0:
        raise click.BadParameter(f"{value!r}: give the memory per GPU, e.g. 80GB")
    return int(n * 2**30)


def _print_plan(
    cfg: Any,
    rd: Path,
    gpus_per_node: int | None,
    gpu_mem: str | None,
    nodes: int | None,
    as_json: bool,
) -> None:
    from kdmem.launch import Devices, visible_devices
    from kdmem.study import plan_experiment
    from kdmem.study.plan import estimate_stages, format_plan, plan_json

    quiet_transformers()
    seen = visible_devices(cfg.run.device)
    if gpu_mem is not None:
        count = gpus_per_node or (seen.count if seen.kind == "cuda" else 0)
        devices = Devices("cuda", count or cfg.launch.nproc_per_node, parse_gib(gpu_mem), "given")
    elif seen.kind == "cuda" and seen.count:
        devices = Devices("cuda", gpus_per_node or seen.count, seen.memory, seen.name)
    else:
        devices = seen
    gpus = gpus_per_node or (devices.count if devices.kind == "cuda" else cfg.launch.nproc_per_node)
    n = nodes or cfg.launch.nnodes
    ests = estimate_stages(cfg, plan_experiment(cfg, rd), devices, gpus_per_node=gpus, nodes=n)
    if as_json:
        click.echo(json.dumps(plan_json(ests, cfg, devices, gpus, n), indent=2))
    else:
        for line in format_plan(ests, cfg, devices, gpus, n):
            click.echo(line)


@main.command()
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
def demo(out: str) -> None:
    """The whole study on a corpus built at run time from the Python standard library: tokenizer,
    base models, teacher, baseline, soft and hard students, measurement, features, predictor,
    sets, filtering and report. About 5 minutes on 2 CPU cores; rerun to resume."""
    quiet_transformers()
    from kdmem.demo import format_headline, run_demo

    summary = run_demo(out, log=lambda m: click.echo(m, err=True))
    click.echo(format_headline(summary, Path(out)))


@main.command()
@click.argument("run_dir", type=run_dir_arg)
@click.option(
    "--target", default=None, help="Student role to predict (default: the main soft student)."
)
@click.option(
    "--features",
    default=None,
    help="Comma-separated feature names (default: zlib_bytes,ppl_teacher,ppl_baseline,"
    "kl_teacher_baseline); see docs/run_dir.md for the names understood.",
)
@click.option(
    "--corpus-features",
    is_flag=True,
    help="Add log1p duplicate counts and longest-match features from features.parquet.",
)
@click.option("--resamples", default=100, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--neg-ratio", default=3.0, show_default=True, type=click.FloatRange(min=0, min_open=True)
)
@click.option(
    "--test-size",
    default=0.3,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
)
@click.option(
    "--folds",
    default=5,
    show_default=True,
    type=click.IntRange(min=2),
    help="CV folds at natural prevalence.",
)
@click.option(
    "--C",
    "C",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Inverse L2 strength.",
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--target-recall",
    default=0.95,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True),
    help="Recall the natural model's flagging threshold is chosen for (out-of-fold).",
)
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False),
    help="Output directory (default RUN_DIR/predictor).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the full JSON instead of tables.")
def predict(
    run_dir: str, features: str | None, corpus_features: bool, as_json: bool, **kw: Any
) -> None:
    """Logistic regression predicting student memorization from pre-distillation features."""
    from kdmem.analysis import RunDir
    from kdmem.analysis.predictor import (
        CORPUS_FEATURES,
        DEFAULT_FEATURES,
        format_predict,
        run_predict,
    )

    names = csv(features) or list(DEFAULT_FEATURES)
    if corpus_features:
        names += [f for f in CORPUS_FEATURES if f not in names]
    result = run_predict(RunDir(run_dir), features=names, **kw)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(format_predict(result), nl=False)
    out = Path(kw["out"]) if kw["out"] else Layout(run_dir).predictor_dir
    click.echo(f"kdmem: wrote {out / PREDICTOR_JSON} and {out / PREDICTOR_SCORES}", err=True)


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=run_dir_arg)
@click.option(
    "--out",
    default=None,
    type=click.Path(dir_okay=False),
    help="JSON output (default FIRST_RUN_DIR/sets/sets.json).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON instead of tables.")
def sets(run_dirs: tuple[str, ...], out: str | None, as_json: bool) -> None:
    """Set algebra of T, B, S: rates, easy examples, inheritance, soft vs hard, seeds, families.

    Give one run directory per model family for the cross-family overlap.
    """
    from kdmem.analysis import RunDir
    from kdmem.analysis.sets import analyze_sets, format_sets, write_sets

    result = analyze_sets([RunDir(d) for d in run_dirs])
    path = Path(out) if out else Layout(run_dirs[0]).sets
    write_sets(result, path)
    click.echo(json.dumps(result, indent=2) if as_json else format_sets(result), nl=not as_json)
    click.echo(f"kdmem: wrote {path}", err=True)


@main.command()
@click.argument("run_dir", type=run_dir_arg)
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False),
    help="Output directory (default RUN_DIR/report).",
)
@click.option(
    "--max-examples",
    default=50,
    show_default=True,
    type=click.IntRange(min=0),
    help="Memorized examples listed with their text.",
)
@click.option(
    "--sample-size",
    default=2000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Random examples in the zlib scatter.",
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--family",
    "families",
    multiple=True,
    metavar="NAME=DIR",
    help="A run of another model family over the same documents, for the cross-family "
    "section (repeatable), e.g. --family olmo2=runs/olmo2.",
)
def report(run_dir: str, families: tuple[str, ...], **kw: Any) -> None:
    """Write RUN_DIR/report/index.html (self-contained), summary.json and figure files."""
    from kdmem.analysis.report import build_report

    named: dict[str, str] = {}
    for item in families:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"{item!r}: expected NAME=DIR", param_hint="--family")
        if not Path(path).is_dir():
            raise click.BadParameter(f"{path}: no such run directory", param_hint="--family")
        named[name] = path
    rep = build_report(run_dir, families=named, **kw)
    omitted = [k for k, v in rep.summary["sections"].items() if v != "ok"]
    click.echo(str(rep.index))
    line = f"kdmem: wrote {rep.index} and {rep.summary_path}"
    if omitted:
        line += f"; sections omitted for missing inputs: {', '.join(omitted)}"
    click.echo(line, err=True)


@main.command("filter")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--data",
    type=click.Path(exists=True),
    help="Study set to filter (default RUN_DIR/data/study.parquet).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="Filtered study set (default RUN_DIR/data/filtered.parquet).",
)
@click.option(
    "--predictor",
    type=click.Path(exists=True, dir_okay=False),
    help="Default RUN_DIR/predictor/predictor.json.",
)
@click.option(
    "--model",
    "model",
    default="paper",
    show_default=True,
    type=click.Choice(["paper", "natural"]),
    help="Saved predictor that flags: 'paper' (1:3 protocol fit, threshold 0.5) or "
    "'natural' (natural-prevalence fit, threshold for the target recall).",
)
@click.option(
    "--threshold",
    default=None,
    type=float,
    help="Flag at predicted probability >= this (default: the model's own threshold).",
)
@click.option(
    "--compare",
    nargs=2,
    metavar="BEFORE AFTER",
    help="Instead: compare two measured roles (e.g. student_soft_seed0 student_soft_filtered_seed0).",
)
def filter_cmd(
    run_dir: str,
    data: str | None,
    out: str | None,
    predictor: str | None,
    model: str,
    threshold: float | None,
    compare: tuple[str, str] | None,
) -> None:
    """Pre-filtering: drop the examples the predictor flags (then re-distill on the filtered set
    with `kdmem distill --data`, measure on the full set, and `--compare`)."""
    from kdmem.analysis.filter import run_filter_compare, run_filter_flag

    if compare:
        res = run_filter_compare(run_dir, compare[0], compare[1])
        click.echo(
            f"memorized before {res['memorized_before']}, after {res['memorized_after']} "
            f"({res['n_new']} new: {res['new'][:20]}); wrote {Layout(run_dir).filter_result}"
        )
        return
    res = run_filter_flag(
        run_dir, model=model, threshold=threshold, predictor=predictor, data=data, out=out
    )
    click.echo(f"flagged {res['n_flagged']} examples; kept {res['n_kept']} in {res['out']}")
