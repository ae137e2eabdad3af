"""No import cycle in ``parley/``: every import counts, at module level, inside a function or under TYPE_CHECKING.

A cycle hidden by a function-level import still ties two modules into one; this walks the source with
``ast`` (nothing is imported), builds the graph of imports between ``parley`` modules and fails, naming
each cycle as a path, on any strongly connected group of modules that is not listed in ``KNOWN``.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "parley"

#: cycles that exist and belong to someone else's module; each with why it is tolerated for now.
#: A new cycle, or a new module joining one of these, fails the test; a fixed one must leave the list.
KNOWN: dict[frozenset[str], str] = {}


def modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``), for every ``.py`` under ``root``."""
    found: dict[str, tuple[Path, bool]] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _targets(node: ast.Import | ast.ImportFrom, package: str, known: dict[str, tuple[Path, bool]]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        module = ".".join([*base, node.module] if node.module else base)
    else:
        module = node.module or ""
    # ``from pkg import name``: the submodule pkg.name when there is one, else pkg itself
    return [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the ``parley`` modules it imports anywhere in its source."""
    known = modules(root)
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, (path, is_package) in known.items():
        package = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _targets(node, package, known):
                while target and target not in known:  # ``import parley.a.b`` of an attribute: its module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected groups of more than one module (Tarjan, without recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[frozenset[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(frozenset(group))
    return groups


def describe(graph: dict[str, set[str]], group: frozenset[str]) -> str:
    """One cycle through ``group``, as ``a -> b -> a``: the shortest from its first module."""
    start = min(group)
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph[node] & group):
            if nxt == start:
                back = [node]
                while back[-1] != start:
                    back.append(came_from[back[-1]])
                return " -> ".join([*reversed(back), start])
            if nxt not in came_from:
                came_from[nxt] = node
                queue.append(nxt)
    return ", ".join(sorted(group))


def test_parley_has_no_new_import_cycle() -> None:
    graph = import_graph(ROOT)
    new = [describe(graph, group) for group in cycles(graph) if group not in KNOWN]
    assert not new, "import cycles in parley/ (function-level and TYPE_CHECKING imports count):\n" + "\n".join(new)


def test_known_cycles_still_exist() -> None:
    """A cycle that was fixed leaves ``KNOWN``, so it cannot come back unnoticed."""
    found = set(cycles(import_graph(ROOT)))
    stale = [", ".join(sorted(group)) for group in KNOWN if group not in found]
    assert not stale, f"no longer a cycle, remove from KNOWN: {stale}"


def test_a_cycle_hidden_in_a_function_is_found(tmp_path: Path) -> None:
    """The walker itself: a function-level import and a TYPE_CHECKING import each close a cycle."""
    pkg = tmp_path / "parley"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from parley.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import a\n")
    (pkg / "c.py").write_text("from .sub.d import X\n")
    (pkg / "sub" / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import parley.c\n")
    (pkg / "e.py").write_text("import parley.a\n")  # imports into a cycle, is not part of one
    graph = import_graph(pkg)
    assert sorted(sorted(g) for g in cycles(graph)) == [
        ["parley.a", "parley.sub.b"],
        ["parley.c", "parley.sub.d"],
    ]
    assert describe(graph, frozenset({"parley.a", "parley.sub.b"})) == "parley.a -> parley.sub.b -> parley.a"


def test_sip_protocol_knows_nothing_of_calls() -> None:
    """``parley.sip.protocol`` builds only on itself and ``parley.audio``: no agent, call, store or config."""
    graph = import_graph(ROOT)
    allowed = ("parley.sip.protocol", "parley.audio")
    wrong = {
        f"{name} -> {target}"
        for name, targets in graph.items()
        if name.startswith("parley.sip.protocol")
        for target in targets
        if not target.startswith(allowed) and target not in ("parley", "parley.sip")
    }
    assert not wrong, sorted(wrong)
