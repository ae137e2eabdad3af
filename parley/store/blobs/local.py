"""Recordings as files under a directory: the default when no ``PARLEY_STORAGE_URL`` is set.

File I/O runs in worker threads so a slow disk never stalls the event loop that carries live audio.
Writes go to a hidden temporary file renamed into place at close, so a reader never sees half a
recording and an aborted one leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from .base import MAX_HEAD, READ_CHUNK, BlobNotFound, BlobStore, BlobWriter, check_key, check_range

__all__ = ["LocalBlobStore", "LocalBlobWriter"]

_WRITE_BUFFER = 256 * 1024  # batch small audio frames into one thread hop and one write(2)


class LocalBlobWriter(BlobWriter):
    def __init__(self, path: Path, file: BinaryIO, tmp: Path) -> None:
        self._path, self._file, self._tmp = path, file, tmp
        self._buf = bytearray()
        self._size = 0
        self._done = False

    async def write(self, data: bytes) -> None:
        if self._done:
            raise RuntimeError("write after close or abort")
        self._buf += data
        self._size += len(data)
        if len(self._buf) >= _WRITE_BUFFER:
            await self._flush()

    async def _flush(self) -> None:
        if self._buf:
            data, self._buf = self._buf, bytearray()
            await asyncio.to_thread(self._file.write, data)

    async def close(self, head: bytes = b"") -> int:
        if self._done:
            raise RuntimeError("close after close or abort")
        if len(head) > MAX_HEAD:
            raise ValueError(f"head is {len(head)} bytes; at most {MAX_HEAD} can be patched")
        try:
            await self._flush()
            await asyncio.to_thread(self._finish, head)
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
        await asyncio.to_thread(self._discard)

    def _discard(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)


class LocalBlobStore(BlobStore):
    """Files under ``root``, one per key; key segments become subdirectories."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def writer(self, key: str, content_type: str = "audio/wav") -> BlobWriter:
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")

        def _open() -> BinaryIO:
            path.parent.mkdir(parents=True, exist_ok=True)
            return open(tmp, "w+b")

        return LocalBlobWriter(path, await asyncio.to_thread(_open), tmp)

    async def size(self, key: str) -> int | None:
        path = self._path(key)
        try:
            stat = await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            return None
        return stat.st_size

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(key)
        check_range(start, end)
        try:
            file = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        try:
            await asyncio.to_thread(file.seek, start)
            left = None if end is None else end - start
            while left is None or left > 0:
                chunk = await asyncio.to_thread(file.read, READ_CHUNK if left is None else min(left, READ_CHUNK))
                if not chunk:
                    break
                if left is not None:
                    left -= len(chunk)
                yield chunk
        finally:
            file.close()

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, True)

    async def aclose(self) -> None:
        return None
