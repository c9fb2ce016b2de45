"""A real-text corpus present on every machine: the running Python's standard library.

Used by ``kdmem demo`` and the benchmarks, so neither downloads anything. Documents are the
``.py`` sources (or their docstrings and comments, which read more like prose), split into
chunks; the order is deterministic (sorted paths), so the corpus is the same on every run of
the same Python.
"""

from __future__ import annotations

import ast
import io
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


def stdlib_documents(
    kind: str = "prose", chunk_chars: int = 2000, max_bytes: int | None = None
) -> Iterator[str]:
    """Yield documents of at most ``chunk_chars`` characters (split at line ends).

    ``kind="prose"``: docstrings and comments; ``kind="source"``: whole source files.
    Stops once ``max_bytes`` UTF-8 bytes were yielded (a single pass, no repetition).
    """
    total = 0
    for path in stdlib_files():
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        pieces = _prose(source) if kind == "prose" else [source]
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
