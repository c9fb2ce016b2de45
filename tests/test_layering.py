"""The import layering of docs/architecture.md, checked over the source (ast, no imports run).

Imports point down only: a module may import a module of a lower layer, or of its own
top-level package; never a higher layer, never a sibling package of its own layer. No
private module or name crosses out of the package that owns it. No import cycles between
modules (module-level and function-level imports both count: a cycle deferred into a
function body is still a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent / "python" / "kdmem"

# Top to bottom. "kdmem" is the package root (kdmem/__init__.py).
LAYERS: list[set[str]] = [
    {"__main__"},  # entry points (kdmem/__main__.py, kdmem/train/__main__.py)
    {"cli"},
    {"kdmem"},  # the package root: re-exports the public API (kdmem.Index lazily)
    {"demo"},
    {"study", "doctor"},
    {"train", "analysis", "launch"},
    {"measure"},
    {"corpus"},
    {"models", "pipeline"},
    {"rundir", "config", "distributed", "identity", "progress", "extras", "lock", "stdlib_corpus"},
    {"atomic"},
    {"zlib", "_version"},
    {"errors"},
    {"_core"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = ("kdmem", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}
MODULES["kdmem._core"] = ROOT / "_core.pyi"


def _top(module: str) -> str:
    """The layering unit of a module: its first component under kdmem (or the root)."""
    parts = module.split(".")
    if parts[-1] == "__main__":
        return "__main__"
    return parts[1] if len(parts) > 1 else "kdmem"


def _imports(module: str) -> list[tuple[str, int, str | None]]:
    """``(imported module, line, imported name or None)`` of every kdmem import of a module."""
    tree = ast.parse(MODULES[module].read_text("utf-8"))
    pkg = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[str, int, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, None) for a in node.names if a.name.startswith("kdmem")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if not base.startswith("kdmem"):
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                # `from kdmem.x import y` imports module kdmem.x.y when that is a module.
                out.append(
                    (sub, node.lineno, None) if sub in MODULES else (base, node.lineno, a.name)
                )
    return out


def _private(module: str) -> str | None:
    """The package that owns ``module`` if it (or a package on its path) is private."""
    parts = module.split(".")
    for i, p in enumerate(parts):
        if p.startswith("_") and not p.startswith("__"):
            return ".".join(parts[:i])
    return None


def test_every_module_is_in_a_layer() -> None:
    missing = sorted({_top(m) for m in MODULES} - set(LAYER))
    assert not missing, f"add {missing} to LAYERS in tests/test_layering.py and the docs"


def violations(module: str, imports: list[tuple[str, int, str | None]]) -> list[str]:
    """What breaks the rules in ``module``'s ``imports`` (see the module docstring)."""
    me = _top(module)
    bad = []
    for target, line, name in imports:
        them = _top(target)
        if them != me and LAYER[them] <= LAYER[me]:
            bad.append(f"line {line}: {target} (layer {LAYER[them]}) from layer {LAYER[me]}")
        owner = _private(target)
        if owner is not None and not (module + ".").startswith(owner + "."):
            bad.append(f"line {line}: private module {target} used outside {owner}")
        if name and name.startswith("_") and not name.startswith("__") and them != me:
            bad.append(f"line {line}: private name {target}.{name}")
    return bad


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_and_stay_public(module: str) -> None:
    if module == "kdmem._core":
        return
    bad = violations(module, _imports(module))
    assert not bad, f"{module}: " + "; ".join(bad)


def test_no_import_cycles() -> None:
    graph = {m: sorted({t for t, _, _ in _imports(m) if t in MODULES}) for m in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in graph.get(m, []):
            # A package's __init__ re-exporting its own submodules is not a cycle of design.
            if t.startswith(m + "."):
                continue
            if state.get(t) == 1:
                cycle = [*stack[stack.index(t) :], t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if state.get(t) is None:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_checker_catches_each_kind_of_violation() -> None:
    ok = [
        ("kdmem.corpus.examples", 1, None),
        ("kdmem._core", 2, None),
        ("kdmem.train.losses", 3, None),
    ]
    assert violations("kdmem.train.finetune", ok) == []
    assert violations("kdmem.corpus.index", [("kdmem.train.finetune", 7, None)])  # upward
    assert violations("kdmem.train.finetune", [("kdmem.analysis.sets", 7, None)])  # sibling
    assert violations("kdmem.cli.corpus", [("kdmem.measure._x", 7, None)])  # private module
    assert violations("kdmem.cli.corpus", [("kdmem.corpus.shard", 7, "_result")])  # private name
    assert violations("kdmem.corpus.importers", [("kdmem.corpus.shard", 7, "_result")]) == []


def unsafe_loads(source: str) -> list[str]:
    """Calls that would unpickle: ``import pickle``/``dill``/``cloudpickle``, ``torch.load``,
    ``np.load(..., allow_pickle=True)``, ``trust_remote_code=True``."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            out += [f"import {n}" for n in names if n in ("pickle", "dill", "cloudpickle")]
        elif isinstance(node, ast.Call):
            f = node.func
            if (
                isinstance(f, ast.Attribute)
                and isinstance(f.value, ast.Name)
                and (f.value.id, f.attr) == ("torch", "load")
            ):
                out.append("torch.load")
            for kw in node.keywords:
                if kw.arg in ("allow_pickle", "trust_remote_code") and (
                    isinstance(kw.value, ast.Constant) and kw.value.value is True
                ):
                    out.append(f"{kw.arg}=True")
    return out


def test_nothing_unpickles() -> None:
    """Untrusted files are never unpickled: safetensors, JSON, Parquet and kdmem's formats."""
    found = {m: bad for m, p in MODULES.items() if (bad := unsafe_loads(p.read_text("utf-8")))}
    assert found == {}


def test_the_unpickling_check_catches_each_kind() -> None:
    src = (
        "import pickle\nimport torch\nimport numpy as np\n"
        "torch.load('x')\nnp.load('y', allow_pickle=True)\n"
        "f(trust_remote_code=True)\nnp.load('z', allow_pickle=False)\n"
    )
    assert unsafe_loads(src) == [
        "import pickle",
        "torch.load",
        "allow_pickle=True",
        "trust_remote_code=True",
    ]
