"""The import graph is a stack (pyproject.toml's import-linter contract checks the layers); these
tests add what a layers contract cannot see: no import cycles between modules inside a package,
and no absolute path of one machine in the project."""
from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "ingest", "teacher", "student", "eval", "registry", "serving", "distill", "flows")


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in sorted(graph.modules):
        if m not in index:
            visit(m)
    return out


def test_no_import_cycles_between_modules():
    import grimp

    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True)
    # A package's __init__ re-exporting its own modules is not a cycle a reader trips over.
    for pkg in list(graph.modules):
        if pkg in PACKAGES or graph.find_children(pkg):
            for child in graph.find_children(pkg):
                if graph.direct_import_exists(importer=pkg, imported=child):
                    graph.remove_import(importer=pkg, imported=child)
    assert _cycles(graph) == []


def test_no_machine_specific_absolute_paths():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    bad = []
    for f in files:
        p = ROOT / f
        if p.suffix not in (".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".json") or not p.is_file():
            continue
        text = p.read_text(errors="replace")
        for needle in ("/work/main", "/work/shared", "/home/", "/Users/"):
            if needle in text and f != "tests/test_architecture.py":
                bad.append(f"{f}: {needle}")
    assert bad == []
