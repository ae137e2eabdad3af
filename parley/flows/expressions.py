"""Edge conditions and value templates over a call's variables, without Python's ``eval``.

simpleeval (MIT) walks a whitelisted AST: no imports, no lambdas, no dunder access. We narrow it further: no
attribute access at all (``x.__class__`` and ``"".format`` are both refused at load), no comprehensions, a bounded
source size and node count, exponents capped, and a missing variable or key reads as ``null`` instead of raising, so
``booking_id != null`` works before the booking exists. It was chosen over cel-python for being one small pure-Python
module with no dependencies, whose syntax (``and``, ``in [...]``, ``==``) reads the way agent authors write it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping
from typing import Any

import simpleeval

MAX_SOURCE = 500
MAX_NODES = 200
MAX_EXPONENT = 64
MAX_BASE = 10**6
#: the literals an author writes; ``null`` is JSON's spelling of None
LITERALS: dict[str, Any] = {"null": None, "none": None, "None": None, "true": True, "True": True,
                            "false": False, "False": False}  # fmt: skip
TEMPLATE = re.compile(r"\{\{(.*?)\}\}")


class ExpressionError(ValueError):
    """An expression that cannot be parsed or uses a refused feature (raised at load, names the source)."""


def _find(text: Any, choices: Any) -> Any:
    """The first of ``choices`` that ``text`` names as a whole word, any case (``find(text, ['monday', ...])``:
    a slot taken from the caller's words), else null."""
    if text is None or not isinstance(choices, list | tuple):
        return None
    words = set(re.findall(r"\w+", str(text).lower()))
    return next((c for c in choices if str(c).lower() in words), None)


def _pow(a: Any, b: Any) -> Any:
    if abs(b) > MAX_EXPONENT or abs(a) > MAX_BASE:
        raise simpleeval.NumberTooHigh(f"{a} ** {b} is too large")
    return a**b


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": lambda v: 0 if v is None else len(v),
    "lower": lambda v: "" if v is None else str(v).lower(),
    "upper": lambda v: "" if v is None else str(v).upper(),
    "str": lambda v: "" if v is None else str(v),
    "int": int,
    "float": float,
    "find": lambda text, choices: _find(text, choices),
}
OPERATORS = dict(simpleeval.DEFAULT_OPERATORS)
OPERATORS[ast.Pow] = _pow
OPERATORS.pop(ast.Is, None)
OPERATORS.pop(ast.IsNot, None)
_REFUSED = (ast.Attribute, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Lambda, ast.NamedExpr,
            ast.JoinedStr, ast.Starred, ast.Await, ast.Yield)  # fmt: skip
_ALLOWED = (ast.Expression, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.IfExp, ast.Call, ast.Constant,
            ast.Name, ast.Load, ast.Subscript, ast.Slice, ast.List, ast.Tuple, ast.Set, ast.Dict, ast.boolop,
            ast.operator, ast.unaryop, ast.cmpop)  # fmt: skip


class _Evaluator(simpleeval.EvalWithCompoundTypes):
    """simpleeval with null-on-missing subscripts and no attribute access."""

    def __init__(self, names: Callable[[ast.Name], Any]) -> None:
        super().__init__(operators=OPERATORS, functions=FUNCTIONS, names=names)
        for node in _REFUSED:
            self.nodes.pop(node, None)

    def _eval_subscript(self, node: ast.Subscript) -> Any:
        container = self._eval(node.value)
        key = self._eval(node.slice)
        try:
            return container[key]
        except (KeyError, IndexError, TypeError):
            return None


class Expression:
    """One parsed expression; :meth:`evaluate` never raises for bad data, only :meth:`__init__` for bad source."""

    def __init__(self, source: str) -> None:
        self.source = source
        if not source.strip():
            raise ExpressionError("an expression is empty")
        if len(source) > MAX_SOURCE:
            raise ExpressionError(f"expression longer than {MAX_SOURCE} characters: {source[:40]!r}...")
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"cannot parse {source!r}: {exc.msg}") from None
        nodes = list(ast.walk(tree))
        if len(nodes) > MAX_NODES:
            raise ExpressionError(f"expression too complex ({len(nodes)} nodes > {MAX_NODES}): {source!r}")
        for node in nodes:
            if not isinstance(node, _ALLOWED):
                raise ExpressionError(f"{type(node).__name__} is not allowed in {source!r}")
            if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS):
                raise ExpressionError(f"only the functions {sorted(FUNCTIONS)} may be called in {source!r}")
            if isinstance(node, ast.Name) and node.id.startswith("_"):
                raise ExpressionError(f"names starting with '_' are refused in {source!r}")
        self._tree = tree.body

    def evaluate(self, variables: Mapping[str, Any]) -> tuple[Any, str | None]:
        """``(value, None)``, or ``(None, reason)`` when evaluation failed (a type mismatch, a number too high)."""

        def names(node: ast.Name) -> Any:
            if node.id in variables:
                return variables[node.id]
            if node.id in LITERALS:
                return LITERALS[node.id]
            if node.id in FUNCTIONS:
                raise simpleeval.NameNotDefined(node.id, self.source)
            return None

        try:
            return _Evaluator(names).eval(self.source, previously_parsed=self._tree), None
        except Exception as exc:  # any failure of the caller's data is "condition not met"
            return None, f"{type(exc).__name__}: {exc}"

    def truthy(self, variables: Mapping[str, Any]) -> bool:
        """Whether the condition holds; a failed evaluation counts as false."""
        value, _error = self.evaluate(variables)
        return bool(value)


class Template:
    """A value with ``{{ expression }}`` parts: ``"{{ result['id'] }}"`` keeps the value's type, else a string."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._parts = [Expression(m.group(1)) for m in TEMPLATE.finditer(source)]
        match = TEMPLATE.fullmatch(source.strip())
        self._whole = self._parts[0] if match and len(self._parts) == 1 else None

    def render(self, variables: Mapping[str, Any]) -> Any:
        """The value: the expression's own value when the template is one ``{{ }}``, else text."""
        if self._whole is not None:
            return self._whole.evaluate(variables)[0]
        parts = iter(self._parts)

        def one(_m: re.Match[str]) -> str:
            value = next(parts).evaluate(variables)[0]
            return "" if value is None else str(value)

        return TEMPLATE.sub(one, self.source)


__all__ = ["Expression", "ExpressionError", "Template"]
