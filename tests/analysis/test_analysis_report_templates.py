"""The report's templates: corpus text and every other value from the data are escaped (oracle:
:func:`html.escape`), autoescaping is on for every template, and no template opts out."""

from __future__ import annotations

import dataclasses
import html
import re
import shutil
import types
import typing
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from jinja2 import nodes

from kdmem.analysis import RunDir
from kdmem.analysis.report import build_report, environment
from kdmem.analysis.sections import TITLES, Figure, Section, Table
from kdmem.analysis.sections.memorization import (
    ExamplesView,
    MechanismView,
    RatesView,
    SetsView,
    TemperatureView,
    UtilityView,
    ZlibView,
)
from kdmem.analysis.sections.prefilter import FilterView, PredictorView
from kdmem.analysis.sections.scan import ScanView
from kdmem.analysis.sections.training import FamiliesView, SpotChecksView, TrainingView

# Corpus texts a model may memorize: markup, entities, quotes, template syntax, control
# characters (C0, DEL, C1, line and paragraph separators) and non-ASCII.
HOSTILE_TEXTS = [
    '<script>alert("x")</script>',
    "</td></tr></table><img src=x onerror=alert(1)>",
    "fish & chips &amp; &lt;not a tag&gt; &#60; AT&T",
    "it's \"quoted\" and 'single' `back`",
    "{{ 7 * 7 }} {% if true %}jinja{% endif %} {# comment #}",
    "ctl:\x00\x01\x07\x08\x0b\x0c\x1b\x7f\x85\x9f\u2028\u2029 end",
    "tabs\tand\nnewlines\r\nand ünïcödé ✓ <b>bold</b>",
]
ROLE = "<i>x&y'q"  # a validation/<role>.json file name: shown in the utility table


@pytest.fixture(scope="module")
def hostile_report(
    tmp_path_factory: pytest.TempPathFactory, synthetic_run: Path
) -> tuple[Path, dict[int, str]]:
    """The synthetic run with hostile texts for memorized examples, and its report."""
    run = tmp_path_factory.mktemp("hostile") / "run"
    shutil.copytree(synthetic_run, run)
    student = RunDir(run).primary("student_soft")
    ids = student.example_id[student.memorized][: len(HOSTILE_TEXTS)].tolist()
    assert len(ids) == len(HOSTILE_TEXTS)
    planted = dict(zip(ids, HOSTILE_TEXTS, strict=True))
    path = run / "data" / "examples.parquet"
    t = pq.read_table(path).to_pydict()
    t["text"] = [planted.get(i, x) for i, x in zip(t["example_id"], t["text"], strict=True)]
    pq.write_table(pa.table(t), path)
    (run / "validation" / f"{ROLE}.json").write_text('{"loss": 1.5, "ppl": 4.5}')
    rep = build_report(run, max_examples=10_000)
    return rep.index, planted


def test_corpus_text_is_escaped(hostile_report: tuple[Path, dict[int, str]]) -> None:
    index, planted = hostile_report
    page = index.read_bytes().decode("utf-8")  # not read_text: it would turn \r\n into \n
    cells = re.findall(r'<td class="text">(.*?)</td>', page, flags=re.S)
    for text in planted.values():
        assert html.escape(text, quote=True) in page, text
        assert html.escape(text, quote=True) in cells, text  # the whole text, in its own cell
        if "<" in text:
            assert text not in page, text
    # Every text cell is escaped text: unescaping gives back text with no markup left.
    for cell in cells:
        assert "<" not in cell and ">" not in cell and '"' not in cell and "'" not in cell
    assert "<script" not in page.lower() and "<img src=x" not in page
    assert html.escape(ROLE, quote=True) in page and ROLE not in page


def test_unescaping_a_text_cell_gives_the_text_back(
    hostile_report: tuple[Path, dict[int, str]],
) -> None:
    index, planted = hostile_report
    page = index.read_bytes().decode("utf-8")  # not read_text: it would turn \r\n into \n
    cells = {html.unescape(c) for c in re.findall(r'<td class="text">(.*?)</td>', page, re.S)}
    for text in planted.values():
        assert text in cells


def test_autoescape_is_on_and_no_template_opts_out() -> None:
    env = environment()
    assert env.autoescape is True  # a bool: on for every template name, not a per-name rule
    assert env.loader is not None
    names = env.list_templates()
    expected = {"report.html.j2", "macros.html.j2", "report.css"} | {
        f"sections/{sid}.html.j2" for sid in TITLES
    }
    assert set(names) == expected
    for name in names:
        source, _, _ = env.loader.get_source(env, name)
        tree = env.parse(source)
        for node in tree.find_all((nodes.Filter, nodes.EvalContextModifier)):
            assert not isinstance(node, nodes.EvalContextModifier), f"{name}: autoescape block"
            assert node.name not in ("safe", "forceescape"), f"{name}: |{node.name}"
        assert "Markup" not in source and "__html__" not in source, name


def test_a_value_is_escaped_in_every_template() -> None:
    """Render the page with every section's view filled with one hostile value (type-driven),
    so every ``{{ ... }}`` of every template outputs it: it must never come out as markup."""
    bad = "<em data-q='1'>\"&amp;\"</em>"
    views = {
        "rates": RatesView,
        "sets": SetsView,
        "zlib": ZlibView,
        "mechanism": MechanismView,
        "temperature": TemperatureView,
        "predictor": PredictorView,
        "utility": UtilityView,
        "filter": FilterView,
        "scan": ScanView,
        "training": TrainingView,
        "families": FamiliesView,
        "spot_checks": SpotChecksView,
        "examples": ExamplesView,
    }
    assert set(views) == set(TITLES)
    sections = [Section(sid, view=_fill(views[sid], bad)) for sid in TITLES]
    sections.append(Section("rates", note=bad))
    page = (
        environment()
        .get_template("report.html.j2")
        .render(
            title=bad,
            n_examples=bad,
            version=bad,
            sections=sections,
            images={bad: "iVBORw0KGgo="},
        )
    )
    assert "<em" not in page
    escaped = html.escape(bad, quote=True)
    parts = page.split('<section id="')[1:]
    assert len(parts) == len(TITLES) + 1
    for part in parts:
        assert escaped in part, part[:200]
    assert page.count('src="data:image/png;base64,iVBORw0KGgo="') == sum(
        len(s.figures) for s in sections
    )
    # The same environment escapes a plain value, and markup built by hand is still escaped.
    assert environment().from_string("{{ x }}").render(x="<b>") == "&lt;b&gt;"
    with pytest.raises(jinja2.UndefinedError):
        environment().from_string("{{ missing }}").render()


def _fill(cls: type, bad: str) -> Any:
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _value(hints[f.name], bad) for f in dataclasses.fields(cls)})


def _value(tp: Any, bad: str) -> Any:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return _value(next(a for a in typing.get_args(tp) if a is not type(None)), bad)
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: two of them
            return (_value(args[0], bad), _value(args[0], bad))
        return tuple(_value(a, bad) for a in args)  # tuple[X, Y, ...]: one of each
    if tp is str:
        return bad
    if tp is int:
        return 3
    if tp is Path:
        return Path(bad)
    if tp is Table:
        return Table(cls=bad, header=(bad, bad), rows=((bad, bad),), text_last=True)
    if tp is Figure:
        return Figure(name=bad, alt=bad, plot=None)
    raise AssertionError(f"no hostile value for {tp!r}: extend _value")


def test_summary_sections_follow_the_titles(hostile_report: tuple[Path, dict[int, str]]) -> None:
    import json

    index, _ = hostile_report
    summary = json.loads((index.parent / "summary.json").read_text())
    assert list(summary["sections"]) == list(TITLES)
    assert np.all([(index.parent / f).is_file() for f in summary["figures"]])
