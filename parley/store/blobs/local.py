"""Recordings as files under a directory: the default when no ``PARLEY_STORAGE_URL`` is set.

File I/O runs in worker threads so a slow disk never stalls the event loop that carries live audio.
Writes go to a hidden temporary file renamed into place at close, so a reader never sees half a
recording and an aborted one leaves nothing behind. What is written reaches the file at least every
second, so a process killed mid-call leaves all but that last second there for ``recover``.
"""

from __future__ import annotations

import glob
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from ...offload import off_loop
from .base import MAX_HEAD, READ_CHUNK, BlobNotFound, BlobStore, BlobWriter, FixHead, Recovered, check_key, check_range

__all__ = ["LocalBlobStore", "LocalBlobWriter"]

_WRITE_BUFFER = 256 * 1024  # batch small audio frames into one thread hop and one write(2)
_WRITE_EVERY_S = 1.0  # …but hand them to the OS at least this often: a crash loses no more than this


class LocalBlobWriter(BlobWriter):
    def __init__(self, path: Path, file: BinaryIO, tmp: Path) -> None:
        self._path, self._file, self._tmp = path, file, tmp
        self._buf = bytearray()
        self._size = 0
        self._done = False
        self._flushed_at = time.monotonic()

    async def write(self, data: bytes) -> None:
        if self._done:
            raise RuntimeError("write after close or abort")
        self._buf += data
        self._size += len(data)
        if len(self._buf) >= _WRITE_BUFFER or time.monotonic() - self._flushed_at >= _WRITE_EVERY_S:
            await self._flush()

    async def _flush(self) -> None:
        self._flushed_at = time.monotonic()
        if self._buf:
            data, self._buf = self._buf, bytearray()
            await off_loop(self._file.write, data)

    async def close(self, head: bytes = b"") -> int:
        if self._done:
            raise RuntimeError("close after close or abort")
        if len(head) > MAX_HEAD:
            raise ValueError(f"head is {len(head)} bytes; at most {MAX_HEAD} can be patched")
        try:
            await self._flush()
            await off_loop(self._finish, head)
        except BaseException:
            await self.abort()
            raise
        self._done = True
        return max(self._size, len(head))

    def _finish(self, head: bytes) -> None:
        if head:
            self._file.seek(0)
            self._file.write(head)
        self._file.flush()
        os.fsync(self._file.fileno())  # a finished recording must survive a crash right after the call
        self._file.close()
        os.replace(self._tmp, self._path)

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._buf = bytearray()
        await off_loop(self._discard)

    def _discard(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)


class LocalBlobStore(BlobStore):
    """Files under ``root``, one per key; key segments become subdirectories."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    @staticmethod
    def _parts(path: Path) -> list[Path]:
        """The temporary files of writers of ``path`` (one per writer that never closed)."""
        return list(path.parent.glob(f".{glob.escape(path.name)}.*.part")) if path.parent.is_dir() else []

    async def writer(self, key: str, content_type: str = "audio/wav") -> BlobWriter:
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")

        def _open() -> BinaryIO:
            path.parent.mkdir(parents=True, exist_ok=True)
            return open(tmp, "w+b")

        return LocalBlobWriter(path, await off_loop(_open), tmp)

    async def size(self, key: str) -> int | None:
        path = self._path(key)
        try:
            stat = await off_loop(path.stat)
        except FileNotFoundError:
            return None
        return stat.st_size

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(key)
        check_range(start, end)
        try:
            file = await off_loop(open, path, "rb")
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        try:
            await off_loop(file.seek, start)
            left = None if end is None else end - start
            while left is None or left > 0:
                chunk = await off_loop(file.read, READ_CHUNK if left is None else min(left, READ_CHUNK))
                if not chunk:
                    break
                if left is not None:
                    left -= len(chunk)
                yield chunk
        finally:
            file.close()

    async def delete(self, key: str) -> None:
        await off_loop(self._path(key).unlink, True)

    async def aclose(self) -> None:
        return None

    async def recover(self, key: str, fix: FixHead) -> Recovered | None:
        """Rename the dead writer's temporary file into place (the largest, if several), its head patched."""
        return await off_loop(self._recover, self._path(key), fix)

    def _recover(self, path: Path, fix: FixHead) -> Recovered | None:
        parts = sorted(self._parts(path), key=lambda p: p.stat().st_size)
        if path.exists():
            for stale in parts:
                stale.unlink(missing_ok=True)
            return Recovered(path.stat().st_size)
        if not parts:
            return None
        best = parts.pop()
        for stale in parts:
            stale.unlink(missing_ok=True)
        if best.stat().st_size == 0:  # the writer died before its first write reached the file
            best.unlink()
            return None
        modified = datetime.fromtimestamp(best.stat().st_mtime, UTC)
        with open(best, "r+b") as file:
            size = os.fstat(file.fileno()).st_size
            head = fix(file.read(MAX_HEAD), size)
            if head:
                file.seek(0)
                file.write(head)
            file.flush()
            os.fsync(file.fileno())
        os.replace(best, path)
        return Recovered(max(size, len(head)), modified)
