"""The ``kdmem`` command line: one click group, one subcommand per stage.

Each subcommand is a thin call into a library function that is also usable from Python.
Heavy libraries (torch, transformers, scikit-learn) are imported inside the commands that
need them, so ``kdmem --help`` stays fast. Bad input ends with one line on stderr naming
the problem and the fix, and exit status 2 (``KdmemError``) or 130 (Ctrl-C).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

import kdmem
from kdmem.errors import KdmemError


class _Group(click.Group):
    """Turn kdmem errors into one clear line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KdmemError as e:
            click.echo(f"kdmem: error: {e}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("kdmem: interrupted; rerun the same command to resume", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(kdmem.__version__, prog_name="kdmem")
def main() -> None:
    """Memorization in knowledge distillation: shard and scan corpora, train teachers and
    students, measure who memorized what, predict it, and report."""


threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Worker threads (default: KDMEM_NUM_THREADS or every core). Results do not depend on it.",
)


@main.command()
def doctor() -> None:
    """Report the linked zlib, threads and optional packages; warn on mismatches."""
    from kdmem.doctor import run_doctor

    sys.exit(run_doctor())


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI in-process (for tests); returns the exit code."""
    try:
        rv = main.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except SystemExit as e:  # pragma: no cover - click exits via SystemExit in some paths
        return int(e.code or 0)
    except click.exceptions.Exit as e:
        return e.exit_code
    return int(rv or 0)


# ---- stage commands below; each lives in its own block ------------------------------------


# ---- measure / generate (kdmem.measure) ----------------------------------------------------


def _batch_size(value: str) -> int | None:
    if value == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise click.BadParameter(f"{value!r}: use 'auto' or a positive integer")
    return n


_dtype_choice = click.Choice(["float32", "bfloat16", "float16"])


def _options(*opts: Any) -> Any:
    """Several click options as one decorator, listed in the given order."""

    def deco(f: Any) -> Any:
        for o in reversed(opts):
            f = o(f)
        return f

    return deco


# Options shared by `kdmem featurize` and `kdmem scan`.
_index_option = click.option(
    "--index",
    "index_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="An indexed shard directory (kdmem index).",
)
_text_field_option = click.option("--text-field", default="text", show_default=True)

# Options shared by `kdmem measure` and `kdmem generate`.
_data_option = click.option(
    "--data", required=True, type=click.Path(), help="Study set: shard dir, .parquet or .npy."
)
_prefix_option = click.option(
    "--prefix", default=50, show_default=True, type=click.IntRange(min=1), help="Prefix tokens."
)
_model_runtime_options = _options(
    click.option(
        "--batch-size", default="auto", show_default=True, help="'auto' or N (halved on CUDA OOM)."
    ),
    click.option("--dtype", default="float32", show_default=True, type=_dtype_choice),
    click.option(
        "--device", default=None, help="cpu, cuda, cuda:1 (default: cuda:LOCAL_RANK if available)."
    ),
    click.option(
        "--attn-implementation", default=None, help="eager, sdpa, ... (default: the model's)."
    ),
)
_chunk_size_option = click.option(
    "--chunk-size",
    default=4096,
    show_default=True,
    type=click.IntRange(min=1),
    help="Examples per resumable chunk.",
)


@main.command()
@click.option("--model", "model", required=True, help="Hub id or local directory (safetensors).")
@_data_option
@_prefix_option
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
@_model_runtime_options
@click.option(
    "--verify-generate",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Re-decode K random examples plus every near-tie; flip rate goes in the metadata.",
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
@_chunk_size_option
@click.option(
    "--strict",
    is_flag=True,
    help="Error on examples shorter than prefix+suffix instead of skipping.",
)
@click.option(
    "--role", default=None, help="Role name in the metadata (default: the --out file stem)."
)
def measure(**kw: Any) -> None:
    """Exact memorization labels and per-example scores from one teacher-forced pass."""
    import os

    from kdmem.measure import measure as run_measure
    from kdmem.measure._runtime import read_meta

    kw["batch_size"] = _batch_size(kw["batch_size"])
    out = run_measure(kw.pop("model"), kw.pop("data"), kw.pop("out"), **kw)
    outs = [out] + ([Path(kw["reference_out"])] if kw["reference_out"] else [])
    for path in outs:
        if not path.is_file() or int(os.environ.get("RANK", "0")) != 0:
            continue
        meta = read_meta(path)
        line = (
            f"kdmem: {path}: {meta.get('n_memorized')} of {meta.get('n_examples')} memorized "
            f"(prefix {meta.get('prefix')}, suffix {meta.get('suffix')})"
        )
        if meta.get("n_short"):
            line += f"; skipped {meta['n_short']} examples shorter than prefix+suffix"
        if meta.get("verify"):
            v = meta["verify"]
            line += f"; verify: {v['n_flips']} flips in {v['n_checked']} re-decoded"
        click.echo(line, err=True)


@main.command()
@click.option("--model", "model", required=True, help="Teacher: hub id or local directory.")
@_data_option
@_prefix_option
@click.option(
    "--new-tokens",
    default=206,
    show_default=True,
    type=click.IntRange(min=1),
    help="Greedy tokens written after each prefix.",
)
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Output directory.")
@_model_runtime_options
@click.option(
    "--cache",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "static", "dynamic"]),
    help="KV cache (auto: static on CUDA where supported).",
)
@_chunk_size_option
@click.option(
    "--strict", is_flag=True, help="Error on examples shorter than the prefix instead of skipping."
)
def generate(**kw: Any) -> None:
    """Greedy teacher continuations of fixed-length prefixes (hard-distillation data)."""
    import os

    from kdmem.measure import generate as run_generate
    from kdmem.measure._runtime import read_meta

    kw["batch_size"] = _batch_size(kw["batch_size"])
    out = run_generate(kw.pop("model"), kw.pop("data"), kw.pop("out_dir"), **kw)
    if out.is_file() and int(os.environ.get("RANK", "0")) == 0:
        meta = read_meta(out)
        line = f"kdmem: wrote {out}: {meta.get('n_examples')} sequences"
        if meta.get("n_short"):
            line += f"; skipped {meta['n_short']} examples shorter than the prefix"
        click.echo(line, err=True)


# ---- analysis: predict, sets, report (kdmem.analysis) ---------------------------------------


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise click.BadParameter("give at least one name")
    return items


_run_dir_arg = click.Path(file_okay=False, path_type=str)


@main.command()
@click.argument("run_dir", type=_run_dir_arg)
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
    import json

    from kdmem.analysis import RunDir
    from kdmem.analysis.predictor import (
        CORPUS_FEATURES,
        DEFAULT_FEATURES,
        format_predict,
        run_predict,
    )

    names = _csv(features) or list(DEFAULT_FEATURES)
    if corpus_features:
        names += [f for f in CORPUS_FEATURES if f not in names]
    result = run_predict(RunDir(run_dir), features=names, **kw)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(format_predict(result), nl=False)
    out = kw["out"] or f"{run_dir}/predictor"
    click.echo(f"kdmem: wrote {out}/predictor.json and {out}/scores.parquet", err=True)


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=_run_dir_arg)
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
    import json
    from pathlib import Path

    from kdmem.analysis import RunDir
    from kdmem.analysis.sets import analyze_sets, format_sets, write_sets

    result = analyze_sets([RunDir(d) for d in run_dirs])
    path = Path(out) if out else Path(run_dirs[0]) / "sets" / "sets.json"
    write_sets(result, path)
    click.echo(json.dumps(result, indent=2) if as_json else format_sets(result), nl=not as_json)
    click.echo(f"kdmem: wrote {path}", err=True)


@main.command()
@click.argument("run_dir", type=_run_dir_arg)
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
def report(run_dir: str, **kw: Any) -> None:
    """Write RUN_DIR/report/index.html (self-contained), summary.json and figure files."""
    from kdmem.analysis.report import build_report

    rep = build_report(run_dir, **kw)
    omitted = [k for k, v in rep.summary["sections"].items() if v != "ok"]
    click.echo(str(rep.index))
    line = f"kdmem: wrote {rep.index} and {rep.summary_path}"
    if omitted:
        line += f"; sections omitted for missing inputs: {', '.join(omitted)}"
    click.echo(line, err=True)


# ---- train / distill (kdmem.train) ----------------------------------------------------------


def _config_options(cls: type, fixed: Sequence[str] = ()) -> Any:
    """One ``--option`` per field of a recipe config (``kdmem.train.config``); values left
    unset fall back to ``--config FILE.toml`` and then to the dataclass default."""
    import dataclasses
    import typing

    from kdmem.train.config import HELP

    hints = typing.get_type_hints(cls)

    def click_type(tp: Any) -> Any:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if typing.get_origin(tp) is typing.Literal:
            return click.Choice([str(a) for a in typing.get_args(tp)])
        if args and typing.get_origin(tp) is not typing.Literal:
            return click_type(args[0])
        return {int: int, float: float, str: str}.get(tp, str)

    def deco(f: Any) -> Any:
        for fld in reversed(dataclasses.fields(cls)):
            if fld.name in fixed:
                continue
            flag = "--" + fld.name.replace("_", "-")
            tp = hints[fld.name]
            unset = fld.default is dataclasses.MISSING or fld.default is None
            default = "" if unset else f" [default: {fld.default}]"
            text = HELP.get(fld.name, "") + default
            if tp is bool:
                opt = click.option(f"{flag}/--no-{flag[2:]}", fld.name, default=None, help=text)
            else:
                opt = click.option(flag, fld.name, type=click_type(tp), default=None, help=text)
            f = opt(f)
        return click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False),
            default=None,
            help="TOML file of the same keys (command-line options win).",
        )(f)

    return deco


def _recipe_config(cls: type, kw: dict[str, Any]) -> Any:
    from kdmem.errors import KdmemIOError
    from kdmem.train.config import config_from_dict

    values: dict[str, Any] = {}
    path = kw.pop("config_file", None)
    if path:
        import tomllib

        try:
            with open(path, "rb") as fh:
                values = tomllib.load(fh)
        except OSError as e:
            raise KdmemIOError(f"cannot read --config {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise KdmemIOError(f"--config {path} is not valid TOML: {e}") from None
    values.update({k: v for k, v in kw.items() if v is not None})
    return config_from_dict(cls, values)


def _quiet_transformers() -> None:
    import os

    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _train_cfg_cls() -> type:
    from kdmem.train.config import FinetuneConfig

    return FinetuneConfig


def _distill_cfg_cls() -> type:
    from kdmem.train.config import DistillConfig

    return DistillConfig


@main.command()
@_config_options(_train_cfg_cls())
def train(**kw: Any) -> None:
    """Fine-tune a teacher or baseline with cross-entropy (resumes from OUT/checkpoint).

    Example: kdmem train --role baseline --model EleutherAI/pythia-1.4b --data D --out
    runs/x/models/baseline --epochs 4 --lr 5e-5 --schedule cosine. Multi-GPU: torchrun
    --nproc-per-node 8 -m kdmem.train train ... (see docs/train.md)."""
    from kdmem.train.config import FinetuneConfig

    cfg = _recipe_config(FinetuneConfig, kw)
    _quiet_transformers()
    from kdmem._dist import shutdown
    from kdmem.train.finetune import finetune

    try:
        finetune(cfg)
    finally:
        shutdown()


@main.command()
@_config_options(_distill_cfg_cls())
def distill(**kw: Any) -> None:
    """Distil a fine-tuned teacher into a student: soft (T^2 * KL), hard (CE on the teacher's
    greedy continuations) or argmax (CE on the teacher's argmax labels).

    Example: kdmem distill --teacher runs/x/models/teacher --student EleutherAI/pythia-1.4b
    --data D --out runs/x/models/soft --mode soft --loss fkl --temperature 2 --alpha 0."""
    from kdmem.train.config import DistillConfig

    cfg = _recipe_config(DistillConfig, kw)
    _quiet_transformers()
    from kdmem._dist import shutdown
    from kdmem.train.distill import distill as run_distill

    try:
        run_distill(cfg)
    finally:
        shutdown()


# ---- kdmem index ---------------------------------------------------------------------------

shard_option = click.option(
    "--shard",
    multiple=True,
    type=click.IntRange(min=0),
    help="Work on this shard number only (repeatable): one task of a Slurm array "
    "(docs/scaleout.md).",
)
ray_option = click.option(
    "--ray",
    is_flag=True,
    help="One Ray task per shard (joins RAY_ADDRESS or starts a local cluster); "
    "same output as a local run.",
)


def _read_parts(directory: str) -> list[Any]:
    """The per-shard tables (``*.parquet``) that ``--partial-out`` wrote into ``directory``."""
    import pyarrow.parquet as pq

    paths = sorted(Path(directory).glob("*.parquet"))
    if not paths:
        raise click.UsageError(f"{directory} holds no per-shard .parquet results")
    return [pq.read_table(p) for p in paths]


def _write_part(table: Any, directory: str, shards: tuple[int, ...]) -> Path:
    from kdmem.analysis.rundir import write_parquet_atomic

    out = Path(directory) / f"shard-{min(shards):05d}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(out, table)
    return out


@main.command("index")
@click.argument("shards_dir", type=click.Path(exists=True, file_okay=False))
@threads_option
@click.option(
    "--verify",
    is_flag=True,
    help="After building, recompute every checksum of the shards and suffix arrays.",
)
@shard_option
@ray_option
def index_cmd(
    shards_dir: str, threads: int | None, verify: bool, shard: tuple[int, ...], ray: bool
) -> None:
    """Build one suffix array per shard of SHARDS_DIR (resumable; finished shards are kept).

    Writes shard-NNNNN.kdsa next to every shard-NNNNN.kdt. Peak memory: about THREADS x the
    largest shard x 6.4 bytes/token (u16 shards) or 8.4 bytes/token (u32).

    Example: kdmem index runs/x/data/shards --threads 8 --verify
    (one Slurm array element: kdmem index DIR --shard $SLURM_ARRAY_TASK_ID)"""
    from tqdm import tqdm

    from kdmem.corpus.index import build_index, verify_index

    if verify and shard:
        raise click.UsageError(
            "--verify checks the whole directory: run `kdmem index DIR --verify` once every "
            "shard is built"
        )
    with tqdm(unit=" shards", desc="index", disable=None) as bar:

        def progress(shards: int, tokens: int, _b: int, _t: int) -> None:
            bar.n = shards
            bar.set_postfix_str(f"{tokens / 1e6:.1f}M tokens", refresh=True)

        report = build_index(shards_dir, threads, progress, shards=shard or None, ray=ray)
    rate = report["tokens_built"] / max(report["seconds"], 1e-9)
    click.echo(
        f"kdmem index: {report['built']} built, {report['skipped']} up to date "
        f"({report['shards']} shards, {report['tokens_built']:,} tokens, "
        f"{report['seconds']:.1f} s, {rate / 1e6:.1f}M tokens/s)"
    )
    if verify:
        verify_index(shards_dir, threads)
        click.echo(f"kdmem index: {report['shards']} shards and suffix arrays verified")


# ---- shard / import (kdmem.corpus) ---------------------------------------------------------


class _ShardProgress:
    """tqdm bar (documents, tokens, MB/s, ETA) on a terminal; nothing when stderr is not a TTY."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.enabled = sys.stderr.isatty()

    def __call__(self, docs: int, tokens: int, nbytes: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total / 1e6 if total else None,
                unit="MB",
                unit_scale=False,
                dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} MB [{elapsed}<{remaining}, {rate_fmt}{postfix}]",
            )
        self.bar.n = nbytes / 1e6
        self.bar.set_postfix_str(f"{docs:,} docs, {tokens:,} tokens", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _shard_summary(res: Any) -> None:
    click.echo(
        f"{res.out}: {res.n_docs:,} documents, {res.n_tokens:,} tokens in {res.n_shards} shard(s), "
        f"dtype {res.dtype}, eos {res.eos_id}, tokenizer {res.tokenizer_hash[:12]}"
        + (f", resumed {res.resumed_shards} shard(s)" if res.resumed_shards else "")
        + (f", skipped {res.skipped_bad:,} bad record(s)" if res.skipped_bad else "")
    )


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--tokenizer", required=True, type=click.Path(), help="tokenizer.json (or its directory)."
)
@click.option("--out", required=True, type=click.Path(), help="Output shard directory.")
@threads_option
@click.option(
    "--dtype", default="auto", show_default=True, type=click.Choice(["auto", "u16", "u32"])
)
@click.option(
    "--text-field", default="text", show_default=True, help="JSON key / column of the text."
)
@click.option(
    "--eos",
    default="auto",
    show_default=True,
    help="Appended after every document: auto (the tokenizer's <|endoftext|>, </s>, ... if any), none, or a token.",
)
@click.option(
    "--skip-bad", is_flag=True, help="Count and skip malformed records instead of failing."
)
@click.option(
    "--shard-tokens",
    default=1 << 30,
    show_default=True,
    type=click.IntRange(min=1),
    help="Tokens per shard (a shard ends after the document reaching it).",
)
@click.option("--overwrite", is_flag=True, help="Replace a different earlier output in --out.")
@click.option("--split", default="train", show_default=True, help="Split of datasets inputs.")
@click.option(
    "--max-documents",
    type=click.IntRange(min=1),
    default=None,
    help="Read at most N records of streamed sources (hf:NAME, Parquet, datasets dirs).",
)
def shard(inputs: tuple[str, ...], **kw: Any) -> None:
    """Tokenize INPUT... (.jsonl[.gz|.zst], .txt, .parquet, datasets dir, hf:NAME) into shards.

    Output is byte-identical for any --threads; a killed run resumes when rerun.
    """
    from kdmem.corpus import shard_corpus

    bar = _ShardProgress()
    try:
        res = shard_corpus(list(inputs), progress=bar, **kw)
    finally:
        bar.close()
    _shard_summary(res)


@main.group("import")
def import_group() -> None:
    """Convert tokenized corpora (Megatron, datatrove, .npy) into kdmem shards."""


def _import_options(f: Any) -> Any:
    opts = [
        click.option("--out", required=True, type=click.Path(), help="Output shard directory."),
        click.option(
            "--dtype", default="auto", show_default=True, type=click.Choice(["auto", "u16", "u32"])
        ),
        click.option("--vocab-size", default=0, type=click.IntRange(min=0), help="0 = unknown."),
        click.option(
            "--tokenizer",
            default=None,
            type=click.Path(),
            help="tokenizer.json to record its hash.",
        ),
        click.option("--tokenizer-hash", default=None, help="64 hex digits (default: unknown)."),
        click.option(
            "--eos-id", default=None, type=click.IntRange(min=0), help="EOS id the data uses."
        ),
        click.option(
            "--shard-tokens", default=1 << 30, show_default=True, type=click.IntRange(min=1)
        ),
        click.option("--overwrite", is_flag=True),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@import_group.command("megatron")
@click.argument("prefix")
@_import_options
def import_megatron_cmd(prefix: str, **kw: Any) -> None:
    """Import a Megatron PREFIX.bin + PREFIX.idx (MMIDIDX) dataset."""
    from kdmem.corpus.importers import import_megatron

    _shard_summary(import_megatron(prefix, **kw))


@import_group.command("datatrove")
@click.argument("files", nargs=-1, required=True)
@click.option(
    "--token-size", default=None, type=click.Choice(["2", "4"]), help="Default: inferred."
)
@_import_options
def import_datatrove_cmd(files: tuple[str, ...], token_size: str | None, **kw: Any) -> None:
    """Import datatrove NAME.ds files (each with NAME.ds.index)."""
    from kdmem.corpus.importers import import_datatrove

    ts = int(token_size) if token_size else None
    _shard_summary(import_datatrove(list(files), token_size=ts, **kw))


@import_group.command("npy")
@click.argument("files", nargs=-1, required=True)
@click.option("--offsets", default=None, type=click.Path(), help=".npy of document offsets/ends.")
@click.option(
    "--split-on", default=None, type=click.IntRange(min=0), help="End a document after this id."
)
@_import_options
def import_npy_cmd(files: tuple[str, ...], **kw: Any) -> None:
    """Import .npy token arrays (1-D with --offsets/--split-on, or 2-D one row per document)."""
    from kdmem.corpus.importers import import_npy

    _shard_summary(import_npy(list(files), **kw))


# ---- featurize / scan (kdmem.corpus.featurize, kdmem.corpus.scan) -------------------------


@main.command()
@click.argument("examples", type=click.Path(exists=True))
@_index_option
@click.option("--out", type=click.Path(dir_okay=False), help="Output Parquet file.")
@click.option("--prefix", default=50, show_default=True, type=click.IntRange(min=0))
@click.option("--suffix", default=50, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--ngram",
    multiple=True,
    type=click.IntRange(min=1),
    default=(8,),
    show_default=True,
    help="n for ngram_overlap_<n> (repeatable).",
)
@click.option(
    "--exclude-self", is_flag=True, help="Subtract the example's own occurrence from the counts."
)
@click.option(
    "--tokenizer",
    type=click.Path(exists=True),
    help="tokenizer.json to decode token ids (zlib) or encode text.",
)
@_text_field_option
@threads_option
@shard_option
@click.option(
    "--partial-out",
    type=click.Path(file_okay=False),
    help="With --shard: write this shard's counts and matching statistics into this directory.",
)
@click.option(
    "--merge",
    "merge_dir",
    type=click.Path(exists=True, file_okay=False),
    help="Merge the --partial-out results of every shard into --out.",
)
@ray_option
def featurize(
    examples: str,
    index_dir: str,
    out: str | None,
    shard: tuple[int, ...],
    partial_out: str | None,
    merge_dir: str | None,
    ray: bool,
    **kw: Any,
) -> None:
    """Corpus features of EXAMPLES: zlib entropy, duplicate counts, longest verbatim match and
    n-gram overlap against an index (docs/formats.md).

    Per shard (Slurm array, docs/scaleout.md): kdmem featurize EX --index DIR --shard K
    --partial-out parts/, then kdmem featurize EX --index DIR --merge parts/ --out F.parquet"""
    from kdmem.corpus import featurize as fz

    kw["ngram"] = tuple(kw["ngram"])
    if bool(shard) != bool(partial_out):
        raise click.UsageError("--shard and --partial-out go together (one per-shard task)")
    if partial_out:
        if merge_dir or ray:
            raise click.UsageError("--partial-out runs one shard: drop --merge / --ray")
        table = fz.featurize_partial(
            examples,
            index_dir,
            shards=shard,
            **{k: kw[k] for k in ("prefix", "suffix", "tokenizer", "text_field", "threads")},
        )
        click.echo(f"wrote {_write_part(table, partial_out, shard)}")
        return
    if out is None:
        raise click.UsageError("missing --out (or --shard K --partial-out DIR for one shard)")
    if merge_dir:
        path = fz.featurize_merge(
            examples,
            _read_parts(merge_dir),
            out,
            index=index_dir,
            **{k: kw[k] for k in ("ngram", "exclude_self", "tokenizer", "text_field", "threads")},
        )
    else:
        path = fz.featurize(examples, index_dir, out, ray=ray, **kw)
    click.echo(f"wrote {path}")


@main.command()
@click.argument("generations", type=click.Path(exists=True))
@_index_option
@click.option("--out", type=click.Path(dir_okay=False), help="Output Parquet file of spans.")
@click.option(
    "--min-len",
    default=50,
    show_default=True,
    type=click.IntRange(min=1),
    help="Shortest span reported, in tokens.",
)
@click.option(
    "--max-locations",
    default=16,
    show_default=True,
    type=click.IntRange(min=0),
    help="Locations kept per span.",
)
@click.option(
    "--tokenizer", type=click.Path(exists=True), help="tokenizer.json to encode text generations."
)
@_text_field_option
@threads_option
@shard_option
@click.option(
    "--lm",
    "lm_dir",
    type=click.Path(exists=True, file_okay=False),
    help="Round-1 results of every shard (matching statistics); selects round 2.",
)
@click.option(
    "--partial-out",
    type=click.Path(file_okay=False),
    help="With --shard: write this shard's round-1 (or, with --lm, round-2) results here.",
)
@click.option(
    "--merge",
    "merge_dir",
    type=click.Path(exists=True, file_okay=False),
    help="Merge the round-2 results of every shard into --out.",
)
@ray_option
def scan(
    generations: str,
    index_dir: str,
    out: str | None,
    shard: tuple[int, ...],
    lm_dir: str | None,
    partial_out: str | None,
    merge_dir: str | None,
    ray: bool,
    **kw: Any,
) -> None:
    """Every maximal span of at least --min-len tokens of each generation that occurs verbatim
    in the index, with its count and locations.

    Per shard (Slurm array, docs/scaleout.md), three steps: --shard K --partial-out lm/;
    --shard K --lm lm/ --partial-out hits/; --merge hits/ --out spans.parquet"""
    import pyarrow.parquet as pq

    from kdmem.corpus import scan as sc

    common = {k: kw[k] for k in ("tokenizer", "text_field", "threads")}
    if bool(shard) != bool(partial_out):
        raise click.UsageError("--shard and --partial-out go together (one per-shard task)")
    if partial_out:
        if merge_dir or ray:
            raise click.UsageError("--partial-out runs one shard: drop --merge / --ray")
        if lm_dir is None:
            table = sc.scan_lm_partial(generations, index_dir, shards=shard, **common)
        else:
            table = sc.scan_hits_partial(
                generations,
                index_dir,
                _read_parts(lm_dir),
                shards=shard,
                min_len=kw["min_len"],
                max_locations=kw["max_locations"],
                **common,
            )
        click.echo(f"wrote {_write_part(table, partial_out, shard)}")
        return
    if out is None:
        raise click.UsageError("missing --out (or --shard K --partial-out DIR for one shard)")
    if merge_dir:
        path = sc.scan_merge(_read_parts(merge_dir), out, index=index_dir)
    else:
        path = sc.scan(generations, index_dir, out, ray=ray, **kw)
    n = pq.read_metadata(path).num_rows
    click.echo(f"wrote {path}: {n} spans")


# ---- run / demo (kdmem.study, kdmem.demo) ---------------------------------------------------


@main.command("run")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option(
    "--run-dir", type=click.Path(file_okay=False), help="Default: run.dir, else runs/<run.name>."
)
@click.option("--until", help="Stop after this stage (e.g. measure_teacher).")
@click.option("--plan", is_flag=True, help="Print what would run and why, then exit.")
def run_cmd(
    config: str, overrides: tuple[str, ...], run_dir: str | None, until: str | None, plan: bool
) -> None:
    """Run (or resume) every stage of an experiment config, with section.key=value OVERRIDES.

    Stages whose config and inputs are unchanged are skipped; a killed run resumes where it
    stopped; changing one key re-runs only the stages that depend on it."""
    from kdmem.config import load_config
    from kdmem.pipeline import Pipeline
    from kdmem.study import build_stages, run_experiment

    cfg = load_config(config, list(overrides))
    if plan:
        rd = Path(run_dir) if run_dir else cfg.run_dir()
        for p in Pipeline(rd, build_stages(cfg), log=lambda _m: None).plan():
            click.echo(f"{p.action:7s} {p.stage.name:32s} {p.reason}")
        return
    _quiet_transformers()
    run_experiment(cfg, run_dir, until=until, log=lambda m: click.echo(m, err=True))
    rd = Path(run_dir) if run_dir else cfg.run_dir()
    report = rd / "report" / "index.html"
    if report.exists():
        click.echo(f"report: {report}")


@main.command()
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
def demo(out: str) -> None:
    """The whole study on a corpus built at run time from the Python standard library: tokenizer,
    base models, teacher, baseline, soft and hard students, measurement, features, predictor,
    sets, filtering and report. About 5 minutes on 2 CPU cores; rerun to resume."""
    from kdmem.demo import format_headline, run_demo

    _quiet_transformers()
    summary = run_demo(out, log=lambda m: click.echo(m, err=True))
    click.echo(format_headline(summary, Path(out)))


# ---- filter (kdmem.analysis.filter) ---------------------------------------------------------


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
    "--threshold",
    default=0.5,
    show_default=True,
    type=float,
    help="Flag examples with predicted probability >= this.",
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
    threshold: float,
    compare: tuple[str, str] | None,
) -> None:
    """Pre-filtering: drop the examples the predictor flags (then re-distill on the filtered set
    with `kdmem distill --data`, measure on the full set, and `--compare`)."""
    import json

    from kdmem.analysis import RunDir
    from kdmem.analysis.filter import compare_filtered, flag_examples, write_filtered
    from kdmem.analysis.rundir import write_json_atomic

    rd = Path(run_dir)
    if compare:
        flagged_path = rd / "filter" / "flagged.json"
        flagged = json.loads(flagged_path.read_text())["flagged"] if flagged_path.exists() else []
        res = compare_filtered(RunDir(rd), compare[0], compare[1], flagged)
        write_json_atomic(rd / "filter" / "filter.json", res)
        click.echo(
            f"memorized before {res['memorized_before']}, after {res['memorized_after']} "
            f"({res['n_new']} new: {res['new'][:20]}); wrote {rd / 'filter' / 'filter.json'}"
        )
        return
    flags = flag_examples(RunDir(rd), predictor, threshold)
    target = Path(out) if out else rd / "data" / "filtered.parquet"
    kept = write_filtered(
        data or rd / "data" / "study.parquet", flags, target, rd / "filter" / "flagged.json"
    )
    click.echo(f"flagged {int(flags['flagged'].sum())} examples; kept {len(kept)} in {target}")
