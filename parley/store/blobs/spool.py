"""A local copy of the part a remote writer is still filling, so that a crash loses about a second of it.

S3 and Azure writers upload a part only when it is full (S3 wants 5 MiB: over a minute of a call), so a
process killed mid-call would lose everything since the last full part, often the whole call. The spool
mirrors that unsent part in a file under the data directory; a worker restarting on the same disk appends
it to the parts in storage (``recover``). Writes are batched (every second, or 256 KiB) and run in a thread.

File layout: the object offset its data starts at (8 bytes, little-endian), then the data.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from ...offload import off_loop

__all__ = ["Spool", "SpoolTail", "spool_path"]

_SYNC_EVERY_S = 1.0
_SYNC_BYTES = 256 * 1024
_OFFSET = struct.Struct("<Q")


def spool_path(root: Path, name: str) -> Path:
    """Where the spool of object ``name`` lives (hashed: keys can be longer than a file name)."""
    return root / f"{hashlib.sha256(name.encode()).hexdigest()}.tail"


class Spool:
    """The writer's side: mirrors its part buffer, which starts at ``offset`` in the object."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._offset = 0
        self._len = 0  # bytes of the buffer already in the file
        self._synced_at = time.monotonic()

    async def sync(self, buf: bytearray, offset: int, force: bool = False) -> None:
        """Bring the file up to ``buf`` (the part being filled, from ``offset``): at once when ``force`` or the
        part moved on, else only when a second or 256 KiB has passed."""
        moved = offset != self._offset
        due = time.monotonic() - self._synced_at >= _SYNC_EVERY_S or len(buf) - self._len >= _SYNC_BYTES
        if not (force or moved or due):
            return
        self._synced_at = time.monotonic()
        data = bytes(buf) if moved or self._file is None else bytes(buf[self._len :])
        await off_loop(self._write, data, offset, moved or self._file is None)
        self._offset, self._len = offset, len(buf)

    def _write(self, data: bytes, offset: int, rewrite: bool) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w+b")  # noqa: SIM115 (held open for the writer's life)
        if rewrite:
            self._file.seek(0)
            self._file.truncate()
            self._file.write(_OFFSET.pack(offset))
        self._file.write(data)
        self._file.flush()  # to the OS: a killed process loses nothing written so far

    async def remove(self) -> None:
        await off_loop(self._remove)

    def _remove(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.path.unlink(missing_ok=True)


class SpoolTail:
    """The recovering side: what a dead writer's spool holds beyond what reached storage."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def after(self, stored: int) -> tuple[bytes, datetime | None]:
        """The spooled bytes past the object's first ``stored`` bytes, and when they were written."""
        if self.path is None or not self.path.is_file():
            return b"", None
        raw = self.path.read_bytes()
        modified = datetime.fromtimestamp(os.stat(self.path).st_mtime, UTC)
        if len(raw) < _OFFSET.size:
            return b"", None
        (offset,) = _OFFSET.unpack_from(raw)
        data = raw[_OFFSET.size :]
        if offset > stored:  # a gap between storage and the spool: what follows cannot be placed
            return b"", None
        return data[stored - offset :], modified

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
