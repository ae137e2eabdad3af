"""The recording store's contract, and the part buffering that the S3 and Azure writers share.

A call recording is written as it happens, for as long as the call lasts, so a writer must never hold
the whole object: it appends, uploads in parts as they fill, and at the end may patch the first bytes
(a streaming WAV writer only learns its RIFF and data sizes when the call ends). Reads stream byte
ranges so the API can answer HTTP Range requests without loading a recording.

A writer whose process dies (``kill -9``, a lost node) leaves what reached storage behind, unfinished;
``recover`` turns it into the object at start-up, so a crash loses at most the unsent tail.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime

from .spool import Spool

__all__ = [
    "MAX_HEAD",
    "READ_CHUNK",
    "BlobNotFound",
    "BlobStore",
    "BlobWriter",
    "FixHead",
    "PartedWriter",
    "Recovered",
    "check_key",
]

MAX_HEAD = 4096  # the most ``close(head)`` may patch: a WAV header with room for extra chunks
READ_CHUNK = 256 * 1024  # the largest chunk ``read`` yields


class BlobNotFound(Exception):
    """The key names no stored object."""


#: ``fix(first_bytes, size)`` → the bytes to write over the start of a recovered object of ``size`` bytes
#: (at most MAX_HEAD; empty: leave it as it is). It gets the object's first MAX_HEAD bytes or fewer.
FixHead = Callable[[bytes, int], bytes]


@dataclass(frozen=True)
class Recovered:
    """An object finished by ``recover``: its size, and when its last bytes reached storage, where known."""

    size: int
    modified: datetime | None = None


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative name; reject what could escape the store's root or prefix."""
    if not key or len(key) > 1024:
        raise ValueError(f"blob key must be 1 to 1024 characters, got {len(key)}")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"blob key {key!r} must be a relative path using '/' separators")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"blob key {key!r} must not contain empty, '.' or '..' segments")
    return key


def check_range(start: int, end: int | None) -> None:
    if start < 0 or (end is not None and end < 0):
        raise ValueError(f"byte range must not be negative, got [{start}, {end})")


class BlobWriter(ABC):
    """Appends to one new object; nothing is visible under the key until ``close`` succeeds."""

    @abstractmethod
    async def write(self, data: bytes) -> None:
        """Append ``data``; memory stays bounded however long the object grows."""

    @abstractmethod
    async def close(self, head: bytes = b"") -> int:
        """Finish the object, first overwriting its first ``len(head)`` bytes with ``head``; return its size."""

    @abstractmethod
    async def abort(self) -> None:
        """Discard everything written; the key is left as it was."""


class BlobStore(ABC):
    """Recordings by key: local files, S3-compatible object storage or Azure Blob Storage."""

    @abstractmethod
    async def writer(self, key: str, content_type: str = "audio/wav") -> BlobWriter: ...

    @abstractmethod
    async def size(self, key: str) -> int | None:
        """The object's size in bytes, or None when there is none."""

    @abstractmethod
    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Stream bytes [start, end) (to the end when ``end`` is None) in chunks of at most READ_CHUNK.

        An async generator: BlobNotFound is raised on first iteration. A range past the end yields nothing.
        """

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections."""

    async def recover(self, key: str, fix: FixHead) -> Recovered | None:
        """Finish the object a dead writer left under ``key`` from what reached storage, its head patched by
        ``fix``; the object itself when it was finished; None when nothing of it is stored.

        Only for keys whose writer is known to be dead: a live writer's parts would be taken from it.
        """
        size = await self.size(key)
        return None if size is None else Recovered(size)


class PartedWriter(BlobWriter):
    """Fills fixed-size parts, keeping the first in memory until ``close`` so the head can be patched into it.

    Every part, the first included, is handed to ``_upload_part`` as it fills, so memory stays about two parts
    and a crash loses only the part being filled (``recover`` assembles the rest); the first goes up once more
    at close with the head patched in. An object that never fills a part goes up in one ``_put_whole`` call.
    With a ``spool``, the part being filled is mirrored on local disk too, so a crash loses about a second.
    Subclasses supply the four transport calls.
    """

    def __init__(self, part_size: int, spool: Spool | None = None) -> None:
        self._part_size = part_size
        self._spool = spool
        self._offset = 0  # where the part being filled starts in the object
        self._first: bytearray | None = None
        self._buf = bytearray()
        self._parts = 0  # parts handed to _upload_part after the first, numbered from 2
        self._size = 0
        self._done = False

    @abstractmethod
    async def _upload_part(self, number: int, data: bytearray) -> None:
        """Upload part ``number`` (numbered from 1; the first again, patched, at close: the later one counts)."""

    @abstractmethod
    async def _complete(self, count: int) -> None:
        """Assemble parts 1..count into the object."""

    @abstractmethod
    async def _put_whole(self, data: bytearray) -> None:
        """Store a small object in one request."""

    @abstractmethod
    async def _discard(self) -> None:
        """Drop uploaded parts."""

    async def write(self, data: bytes) -> None:
        if self._done:
            raise RuntimeError("write after close or abort")
        view = memoryview(data)
        while view:
            room = self._part_size - len(self._buf)
            self._buf += view[:room]
            view = view[room:]
            if len(self._buf) == self._part_size:
                await self._flush()
        self._size += len(data)
        if self._spool is not None:
            await self._spool.sync(self._buf, self._offset)

    async def _flush(self) -> None:
        full, self._buf = self._buf, bytearray()
        if self._first is None:
            self._first = full
            await self._upload_part(1, full)  # as written (the head unpatched): what a crash leaves is complete
        else:
            self._parts += 1
            await self._upload_part(self._parts + 1, full)
        self._offset += len(full)
        if self._spool is not None:
            await self._spool.sync(self._buf, self._offset, force=True)

    async def close(self, head: bytes = b"") -> int:
        if self._done:
            raise RuntimeError("close after close or abort")
        if len(head) > MAX_HEAD:
            raise ValueError(f"head is {len(head)} bytes; at most {MAX_HEAD} can be patched")
        self._done = True
        try:
            if self._first is None:  # smaller than one part
                self._buf[: len(head)] = head
                self._size = len(self._buf)
                await self._put_whole(self._buf)
            else:
                if self._buf:
                    self._parts += 1
                    await self._upload_part(self._parts + 1, self._buf)
                self._first[: len(head)] = head
                await self._upload_part(1, self._first)
                await self._complete(self._parts + 1)
        except BaseException:
            await self._discard()
            raise
        finally:
            self._first, self._buf = None, bytearray()
            if self._spool is not None:
                await self._spool.remove()
        return self._size

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._first, self._buf = None, bytearray()
        if self._spool is not None:
            await self._spool.remove()
        await self._discard()
