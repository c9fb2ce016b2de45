"""The optional heavy dependencies and the one-line error when one is missing.

kdmem's core install (numpy, pyarrow, click, tqdm, tokenizers and the Rust extension) shards,
indexes and scans corpora. Models need ``kdmem[torch]`` (torch, transformers, safetensors,
accelerate), the predictor and the report ``kdmem[analysis]`` (scikit-learn, matplotlib,
Jinja2), hub datasets ``kdmem[hf]`` and ``--ray`` fan-out ``kdmem[ray]``.

Each subsystem calls :func:`require` once, where it is entered (``kdmem.models``,
``kdmem.train``, ``kdmem.measure``, ``kdmem.analysis.predictor``, the report and its figures,
``kdmem.corpus.sources`` for hub datasets, ``kdmem.corpus.fanout`` for Ray), so a missing
package is one ``kdmem: error:`` line naming the extra to install instead of an ImportError
deep in a traceback. ``import kdmem`` and ``kdmem --help`` import none of them.
"""

from __future__ import annotations

import importlib.util

from kdmem.errors import MissingDependencyError

__all__ = ["EXTRAS", "require"]

EXTRAS: dict[str, str] = {
    "torch": "torch",
    "transformers": "torch",
    "safetensors": "torch",
    "accelerate": "torch",
    "sklearn": "analysis",
    "matplotlib": "analysis",
    "jinja2": "analysis",
    "datasets": "hf",
    "ray": "ray",
}
"""Importable name -> the ``pip install "kdmem[EXTRA]"`` extra that provides it."""


def require(*modules: str, why: str = "") -> None:
    """Raise :class:`~kdmem.errors.MissingDependencyError` unless every module is importable.

    Checks with ``importlib.util.find_spec`` (nothing is imported here); ``why`` says what
    needs them, e.g. ``"kdmem train"``.
    """
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        extras = sorted({EXTRAS.get(m, m) for m in missing})
        spec = ",".join(extras)
        raise MissingDependencyError(
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed"
            + (f" (needed by {why})" if why else "")
            + f': pip install "kdmem[{spec}]"'
        )
