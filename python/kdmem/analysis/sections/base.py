"""The building blocks of the report's sections and how values are shown.

A :class:`Section` holds either a *view* (a frozen dataclass of the tables, figures and values
its template ``templates/sections/<id>.html.j2`` lays out) or a *note* naming the missing
input and the command that writes it, plus its part of ``summary.json``. Table cells are
display strings (:func:`num`, :func:`pct`), escaped by the templates; a :class:`Figure` names
a :mod:`kdmem.analysis.figures` plot that the report draws.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, SupportsFloat, TypeAlias

import numpy as np

from kdmem.analysis.figures import Plot
from kdmem.errors import MissingStageInputError, NoPositiveExamplesError, TableSchemaError

__all__ = [
    "OPTIONAL",
    "TITLES",
    "Cell",
    "Figure",
    "Section",
    "Table",
    "missing",
    "num",
    "omitted",
    "pct",
    "table",
]

# Optional inputs that may be absent: their sections become notes instead of errors.
OPTIONAL = (MissingStageInputError, TableSchemaError, NoPositiveExamplesError)

TITLES: dict[str, str] = {
    "rates": "Memorization rates",
    "sets": "Who memorized what: T, B and S",
    "zlib": "Easy examples: zlib entropy vs baseline perplexity",
    "mechanism": "Entropy vs log-probability on (T ∩ B) \\ S",
    "temperature": "Memorization vs distillation temperature",
    "predictor": "Predicting student memorization before distillation",
    "utility": "Utility: held-out validation loss and perplexity",
    "filter": "Pre-filtering and re-distillation",
    "scan": "Corpus spans in the teacher's continuations",
    "training": "Memorization over training",
    "families": "Across model families",
    "spot_checks": "Decoded spot checks",
    "examples": "Memorized examples",
}
"""Section id -> title, in report order."""


# ---- values as shown ----------------------------------------------------------------------------


Cell: TypeAlias = str | SupportsFloat | None
"""A table cell as given to :func:`table`: text shown as it is, or a number for :func:`num`."""


def num(v: SupportsFloat | None, digits: int = 4) -> str:
    """A number as the report shows it: ints exact, floats to ``digits`` significant digits,
    booleans yes/no, None and NaN as ``-``."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float) and np.isnan(v):
        return "-"
    return f"{float(v):.{digits}g}"


def pct(v: float | None) -> str:
    """A rate in [0, 1] as a percentage with 3 significant digits (``-`` for None)."""
    return "-" if v is None else f"{100 * v:.3g}%"


@dataclass(frozen=True)
class Table:
    """One table of a section: ``cls`` is its HTML class (tests and styles find it by that),
    cells are display strings. The first ``left`` columns are left-aligned; with ``text_last``
    the last column holds example text (monospace, wrapped)."""

    cls: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    left: int = 1
    text_last: bool = False

    def __post_init__(self) -> None:
        widths = {len(r) for r in self.rows} - {len(self.header)}
        if widths:
            raise ValueError(
                f"table {self.cls!r}: rows of {widths} cells, header of {len(self.header)}"
            )

    def th_class(self, i: int) -> str:
        return "l" if i < self.left or (self.text_last and i == len(self.header) - 1) else ""

    def td_class(self, i: int) -> str:
        if self.text_last and i == len(self.header) - 1:
            return "text"
        return "l" if i < self.left else ""


def table(
    cls: str,
    header: Sequence[str],
    rows: Sequence[Sequence[Cell]],
    *,
    left: int = 1,
    text_last: bool = False,
) -> Table:
    """A :class:`Table` whose cells are given as strings (shown as they are) or numbers
    (shown through :func:`num`)."""
    return Table(
        cls=cls,
        header=tuple(header),
        rows=tuple(tuple(v if isinstance(v, str) else num(v) for v in r) for r in rows),
        left=left,
        text_last=text_last,
    )


@dataclass(frozen=True)
class Figure:
    """A figure of a section: written as ``fig-<name>.png`` and embedded in the page."""

    name: str
    alt: str
    plot: Plot

    @property
    def file(self) -> str:
        return f"fig-{self.name}.png"


@dataclass(frozen=True)
class Section:
    """One section of the report: its view, or the note saying why it is omitted."""

    id: str
    view: Any = None  # a *View dataclass, laid out by templates/sections/<id>.html.j2
    note: str | None = None
    summary: Mapping[str, Any] = field(default_factory=dict)  # its part of summary.json

    @property
    def title(self) -> str:
        return TITLES[self.id]

    @property
    def figures(self) -> list[Figure]:
        """The view's figures in the order the page shows them (its field order)."""
        if self.view is None:
            return []
        out = []
        for f in dataclasses.fields(self.view):
            v = getattr(self.view, f.name)
            if isinstance(v, Figure):
                out.append(v)
        return out


def omitted(sid: str, note: str) -> Section:
    """Section ``sid``, left out for the reason ``note`` ("Section omitted: ...")."""
    return Section(sid, note=note)


def missing(e: Exception) -> str:
    """The note of a section whose optional input raised ``e`` (one of :data:`OPTIONAL`)."""
    return f"Section omitted: {e}"
