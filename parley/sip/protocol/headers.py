"""SIP header fields (RFC 3261 sections 7.3 and 20): names in their long canonical form, list headers split
into one value an entry, order kept. Pure: no parsing of whole messages, which is :mod:`.message`'s job.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .syntax import split_quoted

COMPACT = {
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type", "d": "Request-Disposition",
    "e": "Content-Encoding", "f": "From", "i": "Call-ID", "j": "Reject-Contact", "k": "Supported",
    "l": "Content-Length", "m": "Contact", "n": "Identity-Info", "o": "Event", "r": "Refer-To",
    "s": "Subject", "t": "To", "u": "Allow-Events", "v": "Via", "x": "Session-Expires", "y": "Identity",
}  # fmt: skip
_SPECIAL_CASE = {
    name.lower(): name
    for name in ("Call-ID", "CSeq", "WWW-Authenticate", "MIME-Version", "RAck", "RSeq", "SIP-ETag", "SIP-If-Match")
}
_ROUTING_LISTS = frozenset({"Via", "Route", "Record-Route", "Contact", "Path"})
_OPTION_LISTS = frozenset({"Allow", "Supported", "Require", "Proxy-Require", "Unsupported", "Allow-Events"})
_CONTENT_LISTS = frozenset({"Accept", "Accept-Encoding", "Accept-Language", "Content-Encoding"})
#: headers whose comma-separated values are separate entries (RFC 3261 section 7.3.1)
LIST_HEADERS = _ROUTING_LISTS | _OPTION_LISTS | _CONTENT_LISTS
#: list headers written as one line (routing lists stay one entry a line, as most stacks write them)
JOINED = _OPTION_LISTS | _CONTENT_LISTS


def canonical(name: str) -> str:
    """The long, conventionally capitalised form of a header name (``i`` and ``call-id`` -> ``Call-ID``)."""
    lower = name.lower()
    if lower in COMPACT:
        return COMPACT[lower]
    return _SPECIAL_CASE.get(lower) or "-".join(part[:1].upper() + part[1:] for part in lower.split("-"))


class Headers:
    """Ordered header fields, case-insensitive by long name; list headers hold one value per entry."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        for name, value in items:
            self.add(name, value)

    def add(self, name: str, value: str, first: bool = False) -> None:
        name = canonical(name)
        values = [v.strip() for v in split_quoted(value, ",")] if name in LIST_HEADERS else [value.strip()]
        entries = [(name, v) for v in values if v or len(values) == 1]  # "Supported:" may list nothing
        if first:
            self._items[0:0] = entries
        else:
            self._items.extend(entries)

    def get(self, name: str, default: str | None = None) -> str | None:
        name = canonical(name)
        return next((v for n, v in self._items if n == name), default)

    def get_all(self, name: str) -> list[str]:
        name = canonical(name)
        return [v for n, v in self._items if n == name]

    def set(self, name: str, value: str) -> None:
        """Replaces every ``name`` field with ``value``, where the first one was (or at the end)."""
        name = canonical(name)
        at = next((i for i, (n, _) in enumerate(self._items) if n == name), len(self._items))
        self.remove(name)
        self._items.insert(at, (name, value))

    def replace_first(self, name: str, value: str) -> None:
        name = canonical(name)
        for i, (n, _) in enumerate(self._items):
            if n == name:
                self._items[i] = (name, value)
                return
        self._items.append((name, value))

    def remove(self, name: str) -> None:
        name = canonical(name)
        self._items = [(n, v) for n, v in self._items if n != name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n == canonical(name) for n, _ in self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def truncate(self, count: int) -> None:
        """Keep the first ``count`` entries (a message that lists too many, answered 400 from what is kept)."""
        del self._items[count:]

    def copy(self) -> Headers:
        h = Headers()
        h._items = list(self._items)
        return h
