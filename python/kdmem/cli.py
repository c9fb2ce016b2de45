"""The ``kdmem`` command line: one click group, one subcommand per stage.

Each subcommand is a thin call into a library function that is also usable from Python.
Heavy libraries (torch, transformers, scikit-learn) are imported inside the commands that
need them, so ``kdmem --help`` stays fast. Bad input ends with one line on stderr naming
the problem and the fix, and exit status 2 (``KdmemError``) or 130 (Ctrl-C).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
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
        main.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except SystemExit as e:  # pragma: no cover - click exits via SystemExit in some paths
        return int(e.code or 0)
    except click.exceptions.Exit as e:
        return e.exit_code
    return 0


# ---- stage commands below; each lives in its own block ------------------------------------
