"""The package's structure: no package imports another's private names, and no module imports another
that (through the chain of what it imports) imports it back, lazy imports included, so none is needed
to dodge a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MODULES = {".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): p
           for p in (SRC / "fastad").rglob("*.py")}


def _imports(name: str) -> list[tuple[str, list[str]]]:
    """(imported fastad module, names) for every import in a module, at any depth (lazy ones too)."""
    out = []
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fastad"):
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("fastad")]
    return out


def _edges(name: str) -> set[str]:
    """Modules whose code runs when ``name`` imports: each imported module, its parent packages, and
    submodules imported by name (``from fastad.x import y`` with y a module)."""
    out = set()
    for mod, names in _imports(name):
        parts = mod.split(".")
        out |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)}
        out |= {f"{mod}.{n}" for n in names if f"{mod}.{n}" in MODULES}
    return {m for m in out if m in MODULES and m != name}


def test_no_private_names_across_packages():
    bad = [(name, mod, n) for name in MODULES for mod, names in _imports(name) for n in names
           if n.startswith("_") and not n.endswith("__") and mod.split(".")[:2] != name.split(".")[:2]]
    assert not bad


def test_no_import_cycle():
    graph = {name: _edges(name) for name in MODULES}
    done: set[str] = set()
    stack: list[str] = []

    def visit(node: str) -> None:
        assert node not in stack, f"import cycle: {' -> '.join(stack[stack.index(node):] + [node])}"
        if node in done:
            return
        stack.append(node)
        for nxt in sorted(graph[node]):
            if not nxt.startswith(node + "."):  # a package's __init__ importing its own modules is no cycle
                visit(nxt)
        stack.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)
    assert "fastad.distill.build" in graph["fastad.distill.loop"]  # the walk sees real edges
