"""How large, and which characters, an agent document may hold.

Documents come from tenants' editors and are read by the server at every save and call start, so each
field has a size far above what a real agent needs, the whole document has one too, and stored text has
no control characters (a NUL cannot be stored in PostgreSQL; a line break or bidi override in a name
makes it display as another one). Provider options get generic bounds before the provider's own model
sees them, so no provider's list (stop words, extra headers) can grow without limit.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator
from pydantic_core import InitErrorDetails, PydanticCustomError

# Sizes a document may reach: each is far above what a real agent needs, and together they keep one
# document (and so one save, one call start, one version in the history) small for the server.
MAX_DOCUMENT_CHARS = 256_000  # the whole document as JSON
MAX_SYSTEM_PROMPT_CHARS = 32_000
MAX_GREETING_CHARS = 2_000  # spoken at call start: about two minutes of speech
MAX_DESCRIPTION_CHARS = 2_000
MAX_LINE_CHARS = 200  # one-line labels: provider names, reasons, transfer target names
MAX_TRANSFER_TARGETS = 50
MAX_OPTION_STRING_CHARS = 32_000  # any string inside a provider's options
MAX_OPTION_ITEMS = 200  # any list or mapping inside a provider's options
MAX_OPTION_DEPTH = 8

# C0/C1 controls (NUL…), lone surrogates (not storable as UTF-8), line/paragraph separators; a one-line
# field also refuses tabs, line breaks and bidi overrides (which make a name display as another one)
_BAD_IN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")
_BAD_IN_LINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _bad_char(text: str, multiline: bool) -> str | None:
    """The first character a stored text must not hold, if any."""
    m = (_BAD_IN_TEXT if multiline else _BAD_IN_LINE).search(text)
    return m.group() if m else None


def _line(v: str) -> str:
    if (ch := _bad_char(v, multiline=False)) is not None:
        raise ValueError(f"must be one line of text without control characters (found {ch!r})")
    return v


def _text(v: str) -> str:
    if (ch := _bad_char(v, multiline=True)) is not None:
        raise ValueError(f"must not contain control characters (found {ch!r})")
    return v


#: one line of text (a name, a label, a reason): no control characters, no line breaks
Line = Annotated[str, AfterValidator(_line)]
#: free text (a prompt, a greeting): line breaks and tabs allowed, other control characters not
Text = Annotated[str, AfterValidator(_text)]


def size_of(value: Any, limit: int) -> int:
    """About how many characters ``value`` takes as JSON, counted without recursion and only up to
    just past ``limit`` (so a huge or deeply nested input costs no more than a small one)."""
    total, stack = 0, [value]
    while stack and total <= limit:
        v = stack.pop()
        if isinstance(v, str):
            total += len(v) + 3
        elif isinstance(v, dict):
            total += 2 + len(v)
            for k, item in v.items():
                stack.append(k)
                stack.append(item)
        elif isinstance(v, list | tuple):
            total += 2 + len(v)
            stack.extend(v)
        else:
            total += 8
    return total


def bounded_options(value: Any, loc: tuple[str | int, ...], depth: int = 0) -> list[InitErrorDetails]:
    """Generic bounds on any provider's options (strings, lists, mappings, nesting), before the provider's
    own model sees them: a provider's option list (stop words, extra headers) cannot grow without limit."""
    if depth > MAX_OPTION_DEPTH:
        return [error_detail(loc, f"nested deeper than {MAX_OPTION_DEPTH} levels", None)]
    if isinstance(value, str):
        if len(value) > MAX_OPTION_STRING_CHARS:
            return [error_detail(loc, f"at most {MAX_OPTION_STRING_CHARS} characters, not {len(value)}", value[:40])]
        return []
    items: list[tuple[str | int, Any]]
    if isinstance(value, dict):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return []
    if len(items) > MAX_OPTION_ITEMS:
        return [error_detail(loc, f"at most {MAX_OPTION_ITEMS} items, not {len(items)}", None)]
    errors: list[InitErrorDetails] = []
    for key, item in items:
        if isinstance(key, str) and len(key) > MAX_LINE_CHARS:
            errors.append(error_detail(loc, f"option names are at most {MAX_LINE_CHARS} characters", key[:40]))
        errors += bounded_options(item, (*loc, key), depth + 1)
    return errors


def error_detail(loc: tuple[str | int, ...], msg: str, value: Any) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError("provider", msg), loc=loc, input=value)
