"""A real-text corpus present on every machine: the running Python's standard library.

Used by ``kdmem demo`` and the benchmarks, so neither downloads anything. Documents are the
``.py`` sources (or their docstrings and comments, which read more like prose), split into
chunks; the order is deterministic (sorted paths), so the corpus is the same on every run of
the same Python.
"""

from __future__ import annotations

import ast
import io
import itertools
import sysconfig
import tokenize
from collections.abc import Iterator
from pathlib import Path


def stdlib_files() -> list[Path]:
    """Sorted ``.py`` files of the standard library (no site-packages, no tests)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(
        p
        for p in root.rglob("*.py")
        if "site-packages" not in p.parts and "test" not in p.parts and "tests" not in p.parts
    )


def _prose(source: str) -> list[str]:
    """Docstrings and comment blocks of one module, in source order."""
    out: list[tuple[int, str]] = []
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) > 40:
                out.append((getattr(node, "lineno", 0), doc))
    block: list[str] = []
    start = 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                text = tok.string.lstrip("#").strip()
                if not block:
                    start = tok.start[0]
                if text:
                    block.append(text)
            elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
                if len(block) >= 2:
                    out.append((start, " ".join(block)))
                block = []
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    return [t for _, t in sorted(out, key=lambda x: x[0])]


def _definitions(source: str, chunk_chars: int) -> list[str]:
    """A module's source cut at top-level statement boundaries (decorators and preceding
    comments stay with their statement) into pieces of about ``chunk_chars`` characters, so
    pieces start where code units start: boilerplate that recurs across modules (codec
    classes, licence headers, ``__main__`` blocks) recurs as whole pieces."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    lines = source.splitlines(keepends=True)
    starts = sorted(
        {0}
        | {
            min([n.lineno, *(d.lineno for d in getattr(n, "decorator_list", []))]) - 1
            for n in tree.body
        }
    )
    # a statement's leading comment lines belong to it
    cuts = []
    for s in starts:
        while s > 0 and lines[s - 1].lstrip().startswith("#"):
            s -= 1
        cuts.append(s)
    cuts = [*sorted(set(cuts)), len(lines)]
    pieces: list[str] = []
    buf = ""
    for a, b in itertools.pairwise(cuts):
        unit = "".join(lines[a:b])
        if buf and len(buf) + len(unit) > chunk_chars:
            pieces.append(buf)
            buf = ""
        buf += unit
    if buf:
        pieces.append(buf)
    return pieces


def stdlib_documents(
    kind: str = "prose",
    chunk_chars: int = 2000,
    max_bytes: int | None = None,
    files: list[Path] | None = None,
) -> Iterator[str]:
    """Yield documents of at most ``chunk_chars`` characters (split at line ends).

    ``kind="prose"``: docstrings and comments; ``kind="source"``: whole source files;
    ``kind="definitions"``: source cut at top-level statements (pieces may exceed
    ``chunk_chars`` by one statement before the line split). Stops once ``max_bytes``
    UTF-8 bytes were yielded (a single pass, no repetition). ``files``: these modules only
    (default: :func:`stdlib_files`).
    """
    total = 0
    for path in stdlib_files() if files is None else files:
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if kind == "prose":
            pieces = _prose(source)
        elif kind == "definitions":
            pieces = _definitions(source, chunk_chars)
        else:
            pieces = [source]
        for piece in pieces:
            buf: list[str] = []
            size = 0
            for line in piece.splitlines(keepends=True):
                if size + len(line) > chunk_chars and buf:
                    doc = "".join(buf)
                    yield doc
                    total += len(doc.encode("utf-8"))
                    if max_bytes is not None and total >= max_bytes:
                        return
                    buf, size = [], 0
                buf.append(line)
                size += len(line)
            if buf:
                doc = "".join(buf)
                yield doc
                total += len(doc.encode("utf-8"))
                if max_bytes is not None and total >= max_bytes:
                    return
