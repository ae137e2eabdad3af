"""Importing a campaign's contacts: CSV streamed from the request body, or a JSON list.

The body is decoded incrementally (UTF-8, a BOM tolerated), cut into whole CSV records (quote parity: a record
ends at a newline outside quotes) and parsed by the csv module one record at a time; rows go to the database in
batches of :data:`BATCH`, each committed on its own, so a 100k-row file never sits in memory. Every bad row is
reported (row, phone, why) instead of the file being refused; duplicates (within the file or already in the
campaign) are counted, not inserted; numbers on the tenant's do-not-call list are imported in state ``dnc``.
"""

from __future__ import annotations

import codecs
import csv
import re
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError

from parley.campaigns import phones
from parley.campaigns.schedule import is_timezone
from parley.store.campaigns import CampaignRepo
from parley.store.db import Database
from parley.store.dnc import DncRepo

BATCH = 1000
MAX_REPORTED = 1000
MAX_COLUMNS = 100
MAX_VALUE = 2000
MAX_RECORD_CHARS = 1 << 20
PHONE_COLUMNS = ("phone", "number", "to")
SPECIAL = ("timezone", "language", "greeting")
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,3}")


class ImportError_(ValueError):
    """The upload as a whole cannot be read (no phone column, not UTF-8, a quote never closed)."""


@dataclass
class ImportReport:
    accepted: int = 0
    dnc: int = 0
    duplicates: int = 0
    rejected_count: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    duplicate_rows: list[dict[str, Any]] = field(default_factory=list)
    #: why the import stopped early (rows before it are imported), None when the whole body was read
    error: str | None = None

    def reject(self, row: int, phone: str, error: str) -> None:
        self.rejected_count += 1
        if len(self.rejected) < MAX_REPORTED:
            self.rejected.append({"row": row, "phone": phone[:64], "error": error})

    def duplicate(self, row: int, phone: str, of_row: int | None) -> None:
        self.duplicates += 1
        if len(self.duplicate_rows) < MAX_REPORTED:
            self.duplicate_rows.append({"row": row, "phone": phone, "of_row": of_row})


@dataclass(frozen=True)
class Defaults:
    """What a row without its own values gets: the region for numbers without ``+``, the fallback zone."""

    region: str | None
    timezone: str


#: writes one batch of contact rows (without ``id``/``state`` defaults) and returns the phones it found on the
#: do-not-call list and those already in the campaign, before inserting the rest
Sink = Callable[[list[dict[str, Any]]], Awaitable[tuple[set[str], set[str]]]]


class _Records:
    """Lines of whole CSV records, handed to ``csv.reader`` as they arrive (it pulls from this iterator)."""

    def __init__(self) -> None:
        self.ready: deque[str] = deque()
        self._partial: list[str] = []
        self._size = 0
        self._odd = False  # inside a quoted field

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self.ready:
            return self.ready.popleft()
        raise StopIteration

    def feed(self, text: str) -> None:
        start = 0
        while (end := text.find("\n", start)) >= 0:
            self._add(text[start : end + 1], complete=True)
            start = end + 1
        if start < len(text):
            self._add(text[start:], complete=False)

    def _add(self, piece: str, complete: bool) -> None:
        self._partial.append(piece)
        self._size += len(piece)
        self._odd ^= piece.count('"') % 2 == 1
        if self._size > MAX_RECORD_CHARS:
            raise ImportError_(f"a record is longer than {MAX_RECORD_CHARS} characters (a quote never closed?)")
        if complete and not self._odd:
            self.ready.append("".join(self._partial))
            self._partial, self._size = [], 0

    def finish(self) -> None:
        if self._partial:
            self.ready.append("".join(self._partial))
            self._partial, self._size = [], 0


async def csv_rows(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, list[str]]]:
    """(line number, fields) for each CSV record of a byte stream, the header first; blank lines skipped."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
    records = _Records()
    reader = csv.reader(records, strict=True)
    done = False
    while not done:
        try:
            chunk = await anext(chunks)
        except StopAsyncIteration:
            chunk, done = b"", True
        try:
            records.feed(decoder.decode(chunk, final=done))
        except UnicodeDecodeError:
            raise ImportError_("the file is not UTF-8 text") from None
        if done:
            records.finish()
        try:
            for fields in reader:
                if fields:
                    yield reader.line_num, fields
        except csv.Error as exc:
            raise ImportError_(f"line {reader.line_num}: {exc}") from None


def _header(fields: list[str]) -> tuple[int, list[str]]:
    names = [f.strip() for f in fields]
    lowered = [n.lower() for n in names]
    if len(names) > MAX_COLUMNS:
        raise ImportError_(f"more than {MAX_COLUMNS} columns")
    if len(set(lowered) - {""}) != len([n for n in lowered if n]):
        raise ImportError_("two columns have the same name")
    for alias in PHONE_COLUMNS:
        if alias in lowered:
            return lowered.index(alias), names
    raise ImportError_("no phone column (name it phone, number or to)")


def parse_contact(values: Mapping[str, Any], row: int, defaults: Defaults) -> dict[str, Any]:
    """One contact's columns from a row's named values (names as given); ``ValueError`` says why it is bad."""
    raw: dict[str, str] = {}
    for name, value in values.items():
        text = "" if value is None else str(value)
        if "\x00" in text or "\x00" in name:
            raise ValueError("a value holds a NUL character")
        if len(text) > MAX_VALUE:
            raise ValueError(f"{name} is longer than {MAX_VALUE} characters")
        raw[name.strip()] = text.strip()
    lower = {k.lower(): k for k in raw}
    phone_key = next((lower[a] for a in PHONE_COLUMNS if a in lower), None)
    if phone_key is None:
        raise ValueError("no phone number")
    number = phones.parse(raw[phone_key], defaults.region)
    zone = raw.get(lower.get("timezone", ""), "")
    if zone and not is_timezone(zone):
        raise ValueError(f"unknown time zone {zone!r}")
    language = raw.get(lower.get("language", ""), "") or None
    if language is not None and (len(language) > 16 or not _LANGUAGE.fullmatch(language)):
        raise ValueError(f"not a language tag: {language!r}")
    greeting = raw.get(lower.get("greeting", ""), "") or None
    if greeting is not None and len(greeting) > 1000:
        raise ValueError("greeting is longer than 1000 characters")
    skip = {phone_key} | {lower[s] for s in SPECIAL if s in lower}
    return {
        "row": row,
        "phone": phones.to_e164(number),
        "timezone": zone or phones.timezone_of(number, defaults.timezone),
        "language": language,
        "greeting": greeting,
        # names starting with "_" are Parley's own call variables (_voicemail, _answered_by …): never a column's
        "variables": {k: v for k, v in raw.items() if k and k not in skip and not k.startswith("_")},
    }


class Importer:
    """Feeds rows through validation, duplicate removal and the sink, a batch at a time."""

    def __init__(self, tenant_id: uuid.UUID, campaign_id: uuid.UUID, defaults: Defaults, sink: Sink) -> None:
        self.ids = {"tenant_id": tenant_id, "campaign_id": campaign_id}
        self.defaults = defaults
        self.sink = sink
        self.report = ImportReport()
        self._seen: dict[str, int] = {}
        self._batch: list[dict[str, Any]] = []

    async def add(self, row: int, values: Mapping[str, Any]) -> None:
        phone_text = next((str(v) for k, v in values.items() if k.strip().lower() in PHONE_COLUMNS), "")
        try:
            contact = parse_contact(values, row, self.defaults)
        except ValueError as exc:
            self.report.reject(row, phone_text, str(exc))
            return
        first = self._seen.get(contact["phone"])
        if first is not None:
            self.report.duplicate(row, contact["phone"], first)
            return
        self._seen[contact["phone"]] = row
        self._batch.append({**self.ids, **contact})
        if len(self._batch) >= BATCH:
            await self.flush()

    async def flush(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        dnc, existing = await self.sink(batch)
        for contact in batch:
            if contact["phone"] in existing:
                self.report.duplicate(contact["row"], contact["phone"], None)
            elif contact["phone"] in dnc:
                self.report.dnc += 1
                self.report.accepted += 1
            else:
                self.report.accepted += 1


async def import_csv(chunks: AsyncIterator[bytes], importer: Importer) -> ImportReport:
    """Imports a CSV byte stream; a file-level problem stops it with ``report.error`` (rows before it stay)."""
    names: list[str] | None = None
    try:
        async for line, fields in csv_rows(chunks):
            if names is None:
                _, names = _header(fields)
                continue
            if len(fields) != len(names):
                importer.report.reject(line, "", f"expected {len(names)} fields, found {len(fields)}")
                continue
            await importer.add(line, {n: v for n, v in zip(names, fields, strict=True) if n})
    except ImportError_ as exc:
        if names is None:
            raise
        importer.report.error = str(exc)
    await importer.flush()
    return importer.report


async def import_list(items: Iterable[Mapping[str, Any]], importer: Importer) -> ImportReport:
    """Imports contacts given as JSON objects; ``row`` is the 1-based position in the list."""
    for i, item in enumerate(items, start=1):
        await importer.add(i, item)
    await importer.flush()
    return importer.report


def store_sink(db: Database, tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> Sink:
    """The sink that writes each batch in its own transaction (a long upload never holds the database)."""

    async def write(batch: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
        numbers = [c["phone"] for c in batch]
        async with db.session() as s:
            dnc = await DncRepo(s).listed(tenant_id, numbers)
            repo = CampaignRepo(s)
            existing = await repo.existing_phones(campaign_id, numbers)
            rows = [
                {**c, "state": "dnc", "outcome": "dnc"} if c["phone"] in dnc else c
                for c in batch
                if c["phone"] not in existing
            ]
            await repo.add_contacts(rows)
        return dnc, existing

    async def sink(batch: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
        try:
            return await write(batch)
        except IntegrityError:  # another upload to the campaign inserted one of these numbers meanwhile
            return await write(batch)

    return sink
