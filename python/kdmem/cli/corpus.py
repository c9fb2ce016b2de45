"""Corpus commands: ``shard``, ``import``, ``index``, ``count``, ``locate``, ``featurize``,
``scan`` (:mod:`kdmem.corpus`)."""

from __future__ import annotations

from typing import Any

import click

from kdmem.cli._app import main
from kdmem.cli._options import (
    cache_option,
    group_option,
    index_option,
    partial_out_option,
    progress_bars,
    ray_option,
    shard_option,
    text_field_option,
    threads_option,
)
from kdmem.corpus.shard import ShardResult


def _shard_summary(res: ShardResult) -> None:
    click.echo(
        f"{res.out}: {res.n_docs:,} documents, {res.n_tokens:,} tokens in {res.n_shards} shard(s), "
        f"dtype {res.dtype}, eos {res.eos_id}, tokenizer {res.tokenizer_hash[:12]}"
        + (f", encoder {res.encoder}" if res.encoder else "")
        + (f", resumed {res.resumed_shards} shard(s)" if res.resumed_shards else "")
        + (f", appended {res.appended_shards} shard(s)" if res.appended_shards else "")
        + (f", skipped {res.skipped_bad:,} bad record(s)" if res.skipped_bad else "")
        + (
            f", {res.long_docs_split:,} document(s) over --max-doc-bytes tokenized in pieces"
            if res.long_docs_split
            else ""
        )
    )
    if res.shard_tokens is not None and res.memory is not None:
        click.echo(
            f"  shards of up to {res.shard_tokens:,} tokens: indexing one fits in "
            f"--memory {res.memory / 1e9:.2f} GB"
        )


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--tokenizer", required=True, type=click.Path(), help="tokenizer.json (or its directory)."
)
@click.option(
    "--out", type=click.Path(), help="Output shard directory (required except with --task)."
)
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
    default=None,
    type=click.IntRange(min=1),
    help="Tokens per shard (a shard ends after the document reaching it). "
    "[default: what --memory can index, at most 2^30]",
)
@click.option(
    "--memory",
    default=None,
    help="Memory budget, e.g. 8GB: shards are sized so that indexing one fits in it, and the "
    "writer's buffers stay within it. [default: 3/4 of this machine's memory]",
)
@click.option(
    "--max-doc-bytes",
    default=None,
    help="Documents longer than this (e.g. 16MB) are tokenized in pieces cut at spaces, so "
    "one huge record cannot exhaust memory (ids unchanged for byte-level BPE tokenizers; "
    "counted in the summary). [default: 1/1024 of --memory, 1 MiB to 64 MiB]",
)
@click.option("--overwrite", is_flag=True, help="Replace a different earlier output in --out.")
@click.option(
    "--append",
    is_flag=True,
    help="Add INPUT... to the finished shard set in --out as new shards (document ids "
    "continue; the old set stays intact until the new shards are committed).",
)
@click.option(
    "--encoder",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "tokenizers"]),
    help="auto: kdmem's byte-level BPE encoder for GPT-2/NeoX/Llama-3/OLMo-2/Qwen-style "
    "tokenizers (same ids), the tokenizers library otherwise; tokenizers: always the library.",
)
@click.option("--split", default="train", show_default=True, help="Split of datasets inputs.")
@click.option(
    "--max-documents",
    type=click.IntRange(min=1),
    default=None,
    help="Read at most N records of streamed sources (hf:NAME, Parquet, datasets dirs).",
)
@click.option(
    "--task",
    type=click.IntRange(min=0),
    default=None,
    help="With --tasks T and --partial-out DIR: shard only the K-th of T contiguous slices of "
    "INPUT... into DIR/task-K (one Slurm array task; docs/scaleout.md).",
)
@click.option(
    "--tasks",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Slices INPUT... is split into for --task and --merge (whole inputs, balanced by bytes).",
)
@click.option(
    "--partial-out",
    type=click.Path(file_okay=False),
    help="With --task: the directory the tasks write their shard sets into.",
)
@click.option(
    "--merge",
    "merge_dir",
    type=click.Path(exists=True, file_okay=False),
    help="Put the tasks' shard sets in this directory together into --out, in input order "
    "(document ids continue; no token is copied).",
)
def shard(inputs: tuple[str, ...], **kw: Any) -> None:
    """Tokenize INPUT... (.jsonl[.gz|.zst], .txt, .parquet, datasets dir, hf:NAME) into shards.

    Output is byte-identical for any --threads; a killed run resumes when rerun; --append
    adds new documents to an existing set as new shards.

    Split over tasks (a Slurm array): kdmem shard INPUT... --tokenizer T --tasks N --task K
    --partial-out parts/ for K = 0..N-1, then kdmem shard INPUT... --tokenizer T --tasks N
    --merge parts/ --out shards/ (the same documents and ids as one run).
    """
    from kdmem.corpus.shard import shard_corpus
    from kdmem.corpus.shard_tasks import merge_tasks, shard_task
    from kdmem.errors import InvalidArgumentError

    task, tasks, partial_out, merge_dir = (
        kw.pop(k) for k in ("task", "tasks", "partial_out", "merge_dir")
    )
    if (task is None) != (partial_out is None):
        raise InvalidArgumentError("--task and --partial-out go together (one task of a split run)")
    if partial_out is not None:
        if merge_dir is not None or kw["out"] is not None:
            raise InvalidArgumentError("--task writes into --partial-out: drop --out / --merge")
        del kw["out"]
        with progress_bars() as bars:
            res = shard_task(list(inputs), kw.pop("tokenizer"), partial_out, task, tasks,
                             progress=bars, **kw)  # fmt: skip
        if res is None:
            click.echo(f"kdmem shard: task {task} of {tasks} has no input (the inputs split "
                       f"into fewer slices); nothing to do")  # fmt: skip
        else:
            _shard_summary(res)
        return
    if kw["out"] is None:
        raise InvalidArgumentError("missing --out (the output shard directory)")
    if tasks != 1 and merge_dir is None:
        raise InvalidArgumentError("--tasks goes with --task (one task) or --merge (all of them)")
    if merge_dir is not None:
        if kw["append"] or kw["overwrite"]:
            raise InvalidArgumentError("--merge writes a new set: drop --append / --overwrite")
        res = merge_tasks(list(inputs), kw.pop("tokenizer"), merge_dir, kw.pop("out"), tasks, **kw)
        _shard_summary(res)
        return
    with progress_bars() as bars:
        res = shard_corpus(list(inputs), progress=bars, **kw)
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


@main.command("index")
@click.argument("shards_dir", type=click.Path(exists=True, file_okay=False))
@threads_option
@click.option(
    "--verify",
    is_flag=True,
    help="After building, recompute every checksum of the shards and suffix arrays.",
)
@click.option(
    "--memory",
    default=None,
    help="Memory budget of the build, e.g. 8GB (10^9 bytes) or 8GiB, read as kdmem shard "
    "reads it (default: three quarters of the RAM or of the cgroup limit). Peak memory "
    "stays within it: shards too large for it are indexed in pieces.",
)
@shard_option
@group_option
@click.option(
    "--groups",
    "list_groups",
    is_flag=True,
    help="Print the planned groups (one line each: number, shards, tokens) and exit.",
)
@ray_option
def index_cmd(
    shards_dir: str,
    threads: int | None,
    verify: bool,
    memory: str | None,
    shard: tuple[int, ...],
    group: tuple[int, ...],
    list_groups: bool,
    ray: bool,
) -> None:
    """Build the suffix arrays of SHARDS_DIR (resumable; finished units are kept).

    Writes *.kdsa unit files next to the shard-NNNNN.kdt shards: shards of fewer than 16M
    tokens are grouped into units of at least 134M tokens, shards too large for --memory are
    cut into pieces; a query costs the number of units, not of shards. Peak memory stays
    within --memory (6.5 bytes/token of the units sorted at once for u16 shards, 8.5 for
    u32).

    Distributed builds: --groups prints the planned groups (runs of consecutive small
    shards up to 134M tokens, each larger shard alone; planned from shards.json alone, so
    every task agrees), and --group K builds group K as one unit. An array of T tasks gives
    task t the groups t, t+T, ... (kdmem run --emit-slurm does); a later kdmem index DIR
    then finds nothing to build. --shard K builds shard K as its own unit (one unit per
    shard: queries cost more).

    Example: kdmem index runs/x/data/shards --threads 8 --memory 32GB --verify
    (a Slurm array of one task per group, --array=0-$((NG-1)) with NG the number of
    --groups lines: kdmem index DIR --group $SLURM_ARRAY_TASK_ID)"""
    from kdmem.corpus.index import build_index, shard_sizes, unit_groups, verify_index

    if list_groups:
        if shard or group or ray or verify:
            raise click.UsageError("--groups only lists the plan: drop the other options")
        sizes = shard_sizes(shards_dir)
        for i, g in enumerate(unit_groups(shards_dir)):
            span = f"{g[0]}" if len(g) == 1 else f"{g[0]}-{g[-1]}"
            click.echo(f"{i}\tshards {span}\t{sum(sizes[k] for k in g)} tokens")
        return
    if verify and (shard or group):
        raise click.UsageError(
            "--verify checks the whole directory: run `kdmem index DIR --verify` once every "
            "shard is built"
        )
    if shard and group:
        raise click.UsageError("pass --shard or --group, not both")
    with progress_bars() as bars:
        report = build_index(
            shards_dir,
            threads,
            bars,
            shards=shard or None,
            groups=group or None,
            ray=ray,
            memory=memory,
        )
    rate = report["tokens_built"] / max(report["seconds"], 1e-9)
    click.echo(
        f"kdmem index: {report['built']} built, {report['skipped']} up to date "
        f"({report['shards']} shards, {report['units']} units written, "
        f"{report['tokens_built']:,} tokens, {report['seconds']:.1f} s, "
        f"{rate / 1e6:.1f}M tokens/s, memory budget {report['memory'] / 2**30:.1f} GiB)"
        + (
            "; checksums verified"
            if report.get("verified")
            else "; files unchanged since their checksums were verified"
            if "verified" in report
            else ""
        )
    )
    if verify:
        verify_index(shards_dir, threads)
        click.echo(f"kdmem index: {report['shards']} shards and suffix arrays verified")


def _lookup_options(f: Any) -> Any:
    opts = [
        click.argument("index_dir", metavar="INDEX", type=click.Path(exists=True, file_okay=False)),
        click.argument("text", required=False),
        click.option("--ids", default=None, help="Token ids instead of text, e.g. 464,3290,318."),
        click.option(
            "--tokenizer",
            type=click.Path(exists=True),
            help="The index's tokenizer.json (default: INDEX/tokenizer.json, or the one "
            "shards.json records); a tokenizer of another vocabulary is refused.",
        ),
        threads_option,
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _lookup(index_dir: str, text: str | None, ids: str | None, **kw: Any) -> Any:
    from kdmem.corpus.lookup import lookup, parse_ids

    return lookup(index_dir, text, ids=None if ids is None else parse_ids(ids), **kw)


def _selection(index_dir: str, shard: tuple[int, ...], group: tuple[int, ...]) -> list[int]:
    """The shard numbers of --shard / --group (planned groups, ``kdmem index --groups``)."""
    if shard and group:
        raise click.UsageError("pass --shard or --group, not both")
    if not group:
        return list(shard)
    from kdmem.corpus.index import group_shards

    return group_shards(index_dir, group)


@main.command()
@_lookup_options
def count(index_dir: str, text: str | None, ids: str | None, **kw: Any) -> None:
    """Occurrences of TEXT (tokenized with the index's tokenizer) or of --ids in INDEX.

    Example: kdmem count data/shards "def __init__(self):" """
    res = _lookup(index_dir, text, ids, limit=0, **kw)
    click.echo(f"{res.count}\t{len(res.ids)} tokens: {' '.join(map(str, res.ids))}")


@main.command()
@_lookup_options
@click.option("--context", default=20, show_default=True, type=click.IntRange(min=0),
              help="Tokens shown on each side of a match.")  # fmt: skip
@click.option("--limit", default=10, show_default=True, type=click.IntRange(min=0),
              help="Matches shown (in corpus order).")  # fmt: skip
def locate(index_dir: str, text: str | None, ids: str | None, **kw: Any) -> None:
    """Where TEXT (or --ids) occurs in INDEX: the count, then one line per match (shard,
    document, token offset) with the decoded text around it, the match highlighted and
    control characters escaped.

    Example: kdmem locate data/shards "def __init__(self):" --context 20"""
    res = _lookup(index_dir, text, ids, **kw)
    shown = f", first {len(res.hits)}" if len(res.hits) < res.count else ""
    click.echo(f"{res.count} occurrence(s) of {len(res.ids)} tokens{shown}")
    for h in res.hits:
        where = f"shard {h.shard} doc {h.document} offset {h.offset}:"
        match = click.style(res.text(h.match), bold=True, underline=True)
        click.echo(f"{where} {res.text(h.before)}[{match}]{res.text(h.after)}")


@main.command()
@click.argument("examples", type=click.Path(exists=True))
@index_option
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
@text_field_option
@threads_option
@shard_option
@group_option
@partial_out_option
@click.option(
    "--merge",
    "merge_dir",
    type=click.Path(exists=True, file_okay=False),
    help="Merge the --partial-out results of every shard into --out.",
)
@ray_option
@cache_option
def featurize(examples: str, index_dir: str, out: str | None, **kw: Any) -> None:
    """Corpus features of EXAMPLES: zlib entropy, duplicate counts, longest verbatim match and
    n-gram overlap against an index (docs/formats.md).

    Per group of shards (Slurm array, docs/scaleout.md): kdmem featurize EX --index DIR
    --group K --partial-out parts/ (K = t, t+T, ... for task t of T; --shard K works too),
    then kdmem featurize EX --index DIR --merge parts/ --out F.parquet"""
    from kdmem.corpus.featurize import run_featurize

    kw["ngram"] = tuple(kw["ngram"])
    sel = _selection(index_dir, kw.pop("shard"), kw.pop("group"))
    with progress_bars() as bars:
        path = run_featurize(examples, index_dir, out, shards=sel, progress=bars, **kw)
    click.echo(f"wrote {path}")


@main.command()
@click.argument("generations", type=click.Path(exists=True))
@index_option
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
@text_field_option
@threads_option
@shard_option
@group_option
@click.option(
    "--lm",
    "lm_dir",
    type=click.Path(exists=True, file_okay=False),
    help="Round-1 results of every shard (matching statistics); selects round 2.",
)
@click.option(
    "--partial-out",
    type=click.Path(file_okay=False),
    help="With --shard or --group: write the round-1 (or, with --lm, round-2) results of "
    "those shards here.",
)
@click.option(
    "--merge",
    "merge_dir",
    type=click.Path(exists=True, file_okay=False),
    help="Merge the round-2 results of every shard into --out.",
)
@ray_option
@cache_option
def scan(generations: str, index_dir: str, out: str | None, **kw: Any) -> None:
    """Every maximal span of at least --min-len tokens of each generation that occurs verbatim
    in the index, with its count and locations.

    Per group of shards (Slurm array, docs/scaleout.md), three steps: --group K
    --partial-out lm/; --group K --lm lm/ --partial-out hits/; --merge hits/ --out
    spans.parquet (--shard K works in place of --group K)"""
    import pyarrow.parquet as pq

    from kdmem.corpus.scan import run_scan

    sel = _selection(index_dir, kw.pop("shard"), kw.pop("group"))
    with progress_bars() as bars:
        path = run_scan(generations, index_dir, out, shards=sel, progress=bars, **kw)
    if kw["partial_out"]:
        click.echo(f"wrote {path}")
    else:
        click.echo(f"wrote {path}: {pq.read_metadata(path).num_rows} spans")
