"""Optional packages (pyproject's extras) are imported only where a deployment configured what needs them.

boto3, azure-storage-blob and twilio are extras: most deployments use none of them, and an import at start-up
would make every one install them. Code that needs one calls :func:`require` first, so a missing SDK is a message
that names the extra to install rather than a bare ``ModuleNotFoundError`` deep in a request.
"""

from __future__ import annotations

import importlib.util


class MissingExtra(RuntimeError):
    """A configured feature's package is not installed."""

    def __init__(self, extra: str, what: str) -> None:
        super().__init__(f"{what} needs the {extra!r} extra, which is not installed: pip install 'parley[{extra}]'")
        self.extra = extra


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (found without importing it; a missing parent package counts as absent)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def require(extra: str, what: str, *modules: str) -> None:
    """Raise :class:`MissingExtra` unless every one of ``modules`` is installed."""
    if not all(installed(m) for m in modules):
        raise MissingExtra(extra, what)
