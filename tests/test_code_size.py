"""House rule: no file in parley/ over ~400 lines and no function over ~60 lines, unless its docstring says why.

A reason is a docstring sentence starting "Long because" (the module's for a file, the function's for a function):
the size is then a choice someone made and wrote down, not drift.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PARLEY = Path(__file__).resolve().parents[1] / "parley"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
REASON = "long because"


def _sources() -> list[Path]:
    return sorted(PARLEY.rglob("*.py"))


def _has_reason(node: ast.AST) -> bool:
    doc = ast.get_docstring(node) if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef) else None
    return doc is not None and REASON in doc.lower()


def test_no_file_is_long_without_a_reason() -> None:
    long = []
    for path in _sources():
        source = path.read_text()
        lines = source.count("\n")
        if lines > MAX_FILE_LINES and not _has_reason(ast.parse(source)):
            long.append(f"{path.relative_to(PARLEY.parent)} ({lines} lines)")
    assert not long, f"split these by concept, or say why in the module docstring ('Long because …'): {long}"


def test_no_function_is_long_without_a_reason() -> None:
    long = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_FUNCTION_LINES and not _has_reason(node):
                    long.append(f"{path.relative_to(PARLEY.parent)}:{node.lineno} {node.name} ({size} lines)")
    assert not long, f"split these, or say why in the docstring ('Long because …'): {long}"


@pytest.mark.parametrize("limit", [MAX_FILE_LINES])
def test_the_rule_itself_finds_a_long_file(tmp_path: Path, limit: int) -> None:
    source = '"""A module."""\n' + "x = 1\n" * (limit + 1)
    assert source.count("\n") > limit and not _has_reason(ast.parse(source))
    assert _has_reason(ast.parse('"""A table. Long because it is one list."""\n'))
