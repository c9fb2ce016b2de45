"""What several commands share: options, value parsers, the recipe-config option generator,
and the progress bars (the one place kdmem draws with tqdm)."""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from kdmem.config import help_of
from kdmem.progress import Progress, Tick

F = typing.TypeVar("F", bound=Callable[..., Any])


def options(*opts: Callable[[F], F]) -> Callable[[F], F]:
    """Several click options as one decorator, listed in the given order."""

    def deco(f: F) -> F:
        for o in reversed(opts):
            f = o(f)
        return f

    return deco


threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Worker threads (default: KDMEM_NUM_THREADS or every core). Results do not depend on it.",
)
index_option = click.option(
    "--index",
    "index_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="An indexed shard directory (kdmem index).",
)
text_field_option = click.option("--text-field", default="text", show_default=True)
shard_option = click.option(
    "--shard",
    multiple=True,
    type=click.IntRange(min=0),
    help="Work on this shard number only (repeatable). Array tasks usually take --group "
    "instead: whole units, each built or searched once (docs/scaleout.md).",
)
group_option = click.option(
    "--group",
    multiple=True,
    type=click.IntRange(min=0),
    help="Work on this planned group of shards only (repeatable; `kdmem index DIR --groups` "
    "lists them): one task of a Slurm array, which searches (or builds) whole units "
    "(docs/scaleout.md).",
)
ray_option = click.option(
    "--ray",
    is_flag=True,
    help="One Ray task per planned group of shards (index) or per unit (featurize, scan); "
    "joins RAY_ADDRESS or starts a local cluster; same output as a local run.",
)
cache_option = click.option(
    "--cache/--no-cache",
    default=True,
    show_default=True,
    help="Keep each shard's partial result in OUT.parts/ and reuse those of unchanged shards "
    "(after kdmem shard --append, only the new shards are queried); same output either way.",
)
partial_out_option = click.option(
    "--partial-out",
    type=click.Path(file_okay=False),
    help="With --shard or --group: write the counts and matching statistics of those shards "
    "into this directory.",
)
data_option = click.option(
    "--data", required=True, type=click.Path(), help="Study set: shard dir, .parquet or .npy."
)
prefix_option = click.option(
    "--prefix", default=50, show_default=True, type=click.IntRange(min=1), help="Prefix tokens."
)
dtype_choice = click.Choice(["float32", "bfloat16", "float16"])
model_runtime_options = options(
    click.option(
        "--batch-size", default="auto", show_default=True, help="'auto' or N (halved on CUDA OOM)."
    ),
    click.option("--dtype", default="float32", show_default=True, type=dtype_choice),
    click.option(
        "--device", default=None, help="cpu, cuda, cuda:1 (default: cuda:LOCAL_RANK if available)."
    ),
    click.option(
        "--attn-implementation", default=None, help="eager, sdpa, ... (default: the model's)."
    ),
)
chunk_size_option = click.option(
    "--chunk-size",
    default=4096,
    show_default=True,
    type=click.IntRange(min=1),
    help="Examples per resumable chunk.",
)
run_dir_arg = click.Path(file_okay=False, path_type=str)


def batch_size(value: str) -> int | None:
    """``--batch-size``: ``auto`` (None) or a positive integer."""
    if value == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise click.BadParameter(f"{value!r}: use 'auto' or a positive integer")
    return n


def csv(value: str | None) -> list[str] | None:
    """A comma-separated list option (None when not given)."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise click.BadParameter("give at least one name")
    return items


def is_main_rank() -> bool:
    """Rank 0 of a torchrun launch (or a plain process): the one that prints summaries."""
    return int(os.environ.get("RANK", "0")) == 0


def quiet_transformers() -> None:
    """No advisory warnings or progress bars from transformers in kdmem's output."""
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


# ---- recipe configs as options ------------------------------------------------------------


def _click_type(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(tp)])
    if args:
        return _click_type(args[0])
    return {int: int, float: float, str: str}.get(tp, str)


def _own_fields_first(cls: type) -> list[dataclasses.Field[Any]]:
    """Fields of ``cls``, the class's own first, then its bases' (most derived first)."""
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    order: list[str] = []
    for klass in cls.__mro__:
        for name in getattr(klass, "__annotations__", {}):
            if name in by_name and name not in order:
                order.append(name)
    return [by_name[n] for n in order]


def config_options(cls: type) -> Callable[[F], F]:
    """One ``--option`` per field of a recipe config (:mod:`kdmem.config`), with the field's
    help and default; values left unset fall back to ``--config FILE.toml`` and then to the
    field default (see :func:`kdmem.config.load_recipe`)."""
    hints = typing.get_type_hints(cls)

    def deco(f: F) -> F:
        for fld in reversed(_own_fields_first(cls)):
            flag = "--" + fld.name.replace("_", "-")
            tp = hints[fld.name]
            unset = fld.default is dataclasses.MISSING or fld.default is None
            default = "" if unset else f" [default: {fld.default}]"
            text = help_of(cls, fld.name) + default
            if tp is bool:
                opt = click.option(f"{flag}/--no-{flag[2:]}", fld.name, default=None, help=text)
            else:
                opt = click.option(flag, fld.name, type=_click_type(tp), default=None, help=text)
            f = opt(f)
        return click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False),
            default=None,
            help="TOML file of the same keys (command-line options win).",
        )(f)

    return deco


# ---- progress: the tqdm edge --------------------------------------------------------------


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return f"{v:,}" if isinstance(v, int) else f"{v:,.0f}"


class TqdmProgress:
    """A :data:`kdmem.progress.Progress` that draws one tqdm bar per stage on a terminal
    (nothing when stderr is not a TTY, so logs and pipes stay clean)."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.bars: dict[str, Any] = {}

    def __call__(self, tick: Tick) -> None:
        if not self.enabled:
            return
        bar = self.bars.get(tick.stage)
        if bar is None:
            from tqdm import tqdm

            byte_unit = tick.unit == "B"
            bar = tqdm(
                total=tick.total,
                desc=tick.stage,
                unit=tick.unit if byte_unit else f" {tick.unit}",
                unit_scale=byte_unit,
                unit_divisor=1000,
                dynamic_ncols=True,
            )
            self.bars[tick.stage] = bar
        if tick.total is not None and bar.total != tick.total:
            bar.total = tick.total
        bar.n = tick.done
        if tick.info:
            bar.set_postfix_str(
                ", ".join(f"{_fmt(v)} {k}" for k, v in tick.info.items()), refresh=False
            )
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


@contextmanager
def progress_bars() -> Iterator[Progress]:
    """A :class:`TqdmProgress` for the duration of one command."""
    bars = TqdmProgress()
    try:
        yield bars
    finally:
        bars.close()
