"""The ``kdmem`` click group: error handling, exit codes and the in-process runner."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from kdmem._version import __version__
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
@click.version_option(__version__, prog_name="kdmem")
def main() -> None:
    """Memorization in knowledge distillation: shard and scan corpora, train teachers and
    students, measure who memorized what, predict it, and report."""


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI in-process (for tests); returns the exit code."""
    try:
        rv = main.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except SystemExit as e:  # pragma: no cover - click exits via SystemExit in some paths
        return int(e.code or 0)
    except click.exceptions.Exit as e:
        return e.exit_code
    return int(rv or 0)
