"""The package's import graph has no circles, counting imports made inside functions too (the README's code map
lists the modules in the order data flows, not as strict layers). A circle fails this test with the modules that
make it."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "convsynth"


def imports(path: Path) -> set[str]:
    """The convsynth modules (files directly in the package) that ``path`` imports anywhere in its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            absolute = node.level == 0 and (node.module or "").split(".")[0] == "convsynth"
            if node.level == 1 or absolute:
                parts = (node.module or "").split(".")[1 if absolute else 0:]
                found.update([parts[0]] if parts and parts[0] else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("convsynth."))
    return {m for m in found if (PACKAGE / f"{m}.py").is_file() and m != path.stem}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_in_the_package():
    graph = {p.stem: imports(p) for p in sorted(PACKAGE.glob("*.py"))}
    assert "session" in graph and "turns" in graph["session"]  # the graph is read, not empty
    found = circles(graph)
    assert not found, "import circles: " + "; ".join(
        " / ".join(f"{m} -> {', '.join(sorted(graph[m] & set(group)))}" for m in group) for group in found)
