"""The direction of imports (DESIGN.md): nothing imports ``parley.api``; telephony, which the API mounts, least of all.

Read from the source with ``ast``, so an import inside a function or under TYPE_CHECKING counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import parley.telephony

TELEPHONY = Path(parley.telephony.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute (relative imports resolved against its package)."""
    package = "parley.telephony" if path.name == "__init__.py" else f"parley.telephony.{path.stem}"
    parts = package.split(".")[:-1] if path.name != "__init__.py" else package.split(".")
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_the_scan_sees_imports() -> None:
    """The walk finds what a carrier module imports (else the rule below would pass on nothing)."""
    imports = imported_modules(TELEPHONY / "twilio.py")
    assert "parley.telephony.carrier" in imports and "twilio.rest" in imports, sorted(imports)


def test_nothing_in_telephony_imports_the_api() -> None:
    modules = sorted(TELEPHONY.glob("*.py"))
    assert len(modules) > 6, modules  # every carrier and the shared modules
    offenders = {
        path.name: sorted(m for m in imported_modules(path) if m == "parley.api" or m.startswith("parley.api."))
        for path in modules
    }
    assert not {name: found for name, found in offenders.items() if found}, offenders


def test_an_api_import_would_be_caught(tmp_path: Path) -> None:
    """The check fails on each form an import of the API can take."""
    for line in ("from parley.api.deps import State", "import parley.api.state", "from parley import api"):
        probe = tmp_path / "probe.py"
        probe.write_text(f"def f() -> None:\n    {line}\n")
        found = imported_modules(probe)
        assert any(m == "parley.api" or m.startswith("parley.api.") for m in found), (line, found)
