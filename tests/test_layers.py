"""The dependency rule of docs/ARCHITECTURE.md, read from the code: every import (module-level or
inside a function) of every module of the project's packages is parsed with ``ast`` and checked.

    hwnas                      pipelines, Table 3, reports, CLIs, public API
      ├── nas                  the search loop, rewards, searchers
      └── netadapt             channel groups, proposals, the refinement loop
            evaluation         data, training, candidate evaluation, Ray execution, run directories
              latency          measurement, lookup table, latency models
                search_spaces  specs, walk, costs, builder, export (imports nothing of ours)

A package may import only the packages below it (``nas`` and ``netadapt`` are siblings: neither
imports the other), and no module imports a private name (``_x``) from another module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "search_spaces": set(),
    "latency": {"search_spaces"},
    "evaluation": {"latency", "search_spaces"},
    "nas": {"evaluation", "latency", "search_spaces"},
    "netadapt": {"evaluation", "latency", "search_spaces"},
    "hwnas": {"nas", "netadapt", "evaluation", "latency", "search_spaces"},
}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for package in ALLOWED:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out.append((name, path))
    return out


def _imports(name: str, path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, imported names) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([module] if module else []))
            found.append((node.lineno, module, [a.name for a in node.names]))
    return found


def _edges():
    for name, path in _modules():
        for line, module, names in _imports(name, path):
            yield name, path, line, module, names


def test_the_packages_exist():
    # a renamed package would make the rule below vacuous
    assert {n.split(".")[0] for n, _ in _modules()} == set(ALLOWED)
    assert len(_modules()) > 40


def test_imports_go_down_the_layers_only():
    bad = []
    for name, path, line, module, _ in _edges():
        src, dst = name.split(".")[0], module.split(".")[0]
        if dst in ALLOWED and dst != src and dst not in ALLOWED[src]:
            bad.append(f"{path.relative_to(ROOT)}:{line}: {src} imports {module}")
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_no_cycle_between_packages():
    graph = {p: set() for p in ALLOWED}
    for name, _, _, module, _ in _edges():
        src, dst = name.split(".")[0], module.split(".")[0]
        if dst in graph and dst != src:
            graph[src].add(dst)
    seen, stack = set(), []

    def visit(p):
        if p in stack:
            pytest.fail("import cycle: " + " → ".join(stack[stack.index(p):] + [p]))
        if p in seen:
            return
        stack.append(p)
        for q in graph[p]:
            visit(q)
        stack.pop()
        seen.add(p)

    for p in graph:
        visit(p)


def test_no_private_name_is_imported_from_another_module():
    bad = []
    for name, path, line, module, names in _edges():
        if module.split(".")[0] not in ALLOWED or module == name:
            continue
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        if private or any(part.startswith("_") and not part.startswith("__") for part in module.split(".")):
            bad.append(f"{path.relative_to(ROOT)}:{line}: from {module} import {', '.join(names)}")
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def test_the_checker_sees_a_violation(tmp_path):
    # the parser resolves what the rule is about: a relative import and a function-level import
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from ..hwnas import cli\n    import nas.search\n")
    found = _imports("latency.sub.m", f)
    assert [(m, n) for _, m, n in found] == [("latency.hwnas", ["cli"]), ("nas.search", [])] or \
        sorted(m for _, m, _ in found) == ["latency.hwnas", "nas.search"]
