"""``kdmem doctor``: what this installation links and whether it agrees with the host."""

from __future__ import annotations

import importlib.util
import platform
import zlib as host_zlib
from importlib.metadata import PackageNotFoundError, version

import click

from kdmem import _core
from kdmem._version import __version__
from kdmem.zlib import zlib_bytes

# Texts whose compressed sizes expose a different deflate implementation (zlib-ng, ...).
_PROBES = [
    "",
    "a",
    "The quick brown fox jumps over the lazy dog. " * 40,
    "".join(chr(0x41 + (i * 7919) % 5000) for i in range(5000)),
    "def f(x):\n    return x + 1\n" * 200,
]


def _pkg(name: str) -> str:
    if importlib.util.find_spec(name) is None:
        return "not installed"
    try:
        return version(name)
    except PackageNotFoundError:  # pragma: no cover
        return "installed"


def run_doctor() -> int:
    """Print the report; return 0, or 1 when the host zlib disagrees with kdmem's."""
    linked = _core.zlib_version()
    host = host_zlib.ZLIB_RUNTIME_VERSION
    click.echo(f"kdmem {__version__} (Python {platform.python_version()}, {platform.machine()})")
    click.echo(f"zlib linked into kdmem: {linked} (classic zlib, static, level 6)")
    click.echo(f"zlib of the host Python: {host}")
    ours = zlib_bytes(_PROBES, threads=1).tolist()
    theirs = [len(host_zlib.compress(t.encode("utf-8"))) for t in _PROBES]
    status = 0
    if ours == theirs:
        click.echo("zlib_bytes agrees with the host's zlib.compress on the probe texts")
    else:
        status = 1
        click.echo(
            "warning: the host Python's zlib gives other sizes than kdmem's classic zlib "
            f"(probe sizes kdmem={ours}, host={theirs}); it may be zlib-ng. kdmem's numbers "
            "are the portable ones; compare zlib features only within one implementation.",
            err=True,
        )
    click.echo(f"threads: {_core.resolve_threads(None)} (set --threads or KDMEM_NUM_THREADS)")
    for name in ("torch", "transformers", "datasets", "sklearn", "tokenizers", "pyarrow"):
        click.echo(f"{name}: {_pkg(name)}")
    return status
