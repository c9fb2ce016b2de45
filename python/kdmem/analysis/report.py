"""``kdmem report RUN_DIR``: one self-contained HTML page, a summary JSON and figure files.

Writes ``RUN/report/index.html`` (inline CSS, every figure embedded as a PNG data URI so the
file alone is the whole report), ``RUN/report/summary.json`` and ``RUN/report/fig-*.png``.

Three parts, one concern each:

* :mod:`kdmem.analysis.sections`: what each section shows, computed from the run directory
  (tables, values, notes for missing inputs, its part of ``summary.json``);
* :mod:`kdmem.analysis.figures`: the matplotlib figures;
* ``templates/`` (Jinja2, loaded from the installed package): the page, one template per
  section and the table/figure macros.

Autoescaping is on for every template, so every value taken from the data (corpus text, role
names, notes) is HTML-escaped where it is output; the templates never mark a value safe.
Values are escaped with :func:`html.escape` (``quote=True``), the spelling the report had
before it was a template.
"""

from __future__ import annotations

import base64
import functools
import html
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdmem import extras
from kdmem._version import __version__
from kdmem.analysis import figures  # imports matplotlib only when it draws
from kdmem.analysis import sections as _sections
from kdmem.analysis.tables import STAGE_MEASURE, RunDir
from kdmem.atomic import write_bytes_atomic, write_json_atomic
from kdmem.errors import MissingStageInputError

extras.require("jinja2", why="kdmem report")

# The guard above runs first so a missing Jinja2 is one line, not an ImportError.
import jinja2  # noqa: E402
import markupsafe  # noqa: E402

__all__ = ["REPORT_FORMAT", "REPORT_FORMAT_VERSION", "Report", "build_report", "environment"]

REPORT_FORMAT = "kdmem-report"
REPORT_FORMAT_VERSION = 1


def _escape(value: object) -> markupsafe.Markup:
    """Jinja2 ``finalize``: every output value as escaped markup (already-built markup, such
    as a macro's output, passes through). Autoescaping would escape it anyway; this picks
    :func:`html.escape`'s spelling of quotes (``&quot;``, ``&#x27;``)."""
    if isinstance(value, markupsafe.Markup):
        return value
    return markupsafe.Markup(html.escape(str(value), quote=True))


@functools.cache
def environment() -> jinja2.Environment:
    """The report's Jinja2 environment: templates from the installed ``kdmem.analysis``
    package, autoescaping on for every template, undefined names an error."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("kdmem.analysis", "templates"),
        autoescape=True,
        finalize=_escape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


@dataclass(frozen=True)
class Report:
    """Where the report went and what it says."""

    index: Path
    summary_path: Path
    summary: dict[str, Any]


def build_report(
    run_dir: str | Path | RunDir,
    out: str | Path | None = None,
    *,
    max_examples: int = 50,
    sample_size: int = 2000,
    seed: int = 0,
    families: Mapping[str, str | Path | RunDir] | None = None,
) -> Report:
    """Write ``index.html``, ``summary.json`` and ``fig-*.png`` into ``out`` (default
    ``RUN/report/``), each atomically.

    ``max_examples`` memorized examples are listed with their text; ``sample_size`` random
    examples (drawn with ``seed``) are the background of the zlib scatter. ``families`` names
    runs of other model families over the same documents (name -> run directory) for the
    cross-family section.

    Raises:
        MissingStageInputError: the run has no measure tables at all.
        StudySetMismatchError: its tables describe different study sets.
        FormatVersionError: the run directory was written by an incompatible kdmem.
        MissingDependencyError: matplotlib (``kdmem[analysis]``) is not installed.
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    if not run.roles():
        raise MissingStageInputError(
            f"{run.layout.measure_dir} holds no <role>.parquet tables; they are written by "
            f"`{STAGE_MEASURE}`: run that first"
        )
    out_dir = Path(out) if out is not None else run.layout.report_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("fig-*.png"):
        old.unlink()
    others = {
        name: r if isinstance(r, RunDir) else RunDir(r) for name, r in (families or {}).items()
    }
    sections = _sections.gather(
        run, max_examples=max_examples, sample_size=sample_size, seed=seed, others=others
    )
    images: dict[str, str] = {}
    for fig in (f for s in sections for f in s.figures):
        data = figures.png(fig.plot)
        write_bytes_atomic(out_dir / fig.file, data)
        images[fig.name] = base64.b64encode(data).decode("ascii")
    n = next(iter(run.all_measures().values())).n
    page = (
        environment()
        .get_template("report.html.j2")
        .render(
            title=f"kdmem report: {run.name}",
            n_examples=n,
            version=__version__,
            sections=sections,
            images=images,
        )
    )
    index = out_dir / "index.html"
    write_bytes_atomic(index, page.encode("utf-8"))
    summary: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "version": REPORT_FORMAT_VERSION,
        "kdmem_version": __version__,
        "run": str(run.path),
        "n_examples": n,
        "sections": {s.id: "omitted" if s.note else "ok" for s in sections},
        "notes": {s.id: s.note for s in sections if s.note},
        "figures": [f.file for s in sections for f in s.figures],
    }
    for s in sections:
        summary.update(s.summary)
    if "sets" in summary:
        summary["directions"] = summary["sets"]["directions"]
    summary_path = out_dir / "summary.json"
    write_json_atomic(summary_path, summary)
    return Report(index=index, summary_path=summary_path, summary=summary)
