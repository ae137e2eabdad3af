"""Recordings in Azure Blob Storage, through the SDK's native asyncio client.

A recording is a block blob built from staged blocks committed in order at close. The first block
stays in memory until then because that is where the WAV header is patched (it is staged as soon as it
fills too, and again at close); staged blocks are invisible until the commit, so an aborted recording
leaves no blob (Azure drops uncommitted blocks), and ``recover`` commits what a crashed writer staged.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, ContentSettings
from azure.storage.blob.aio import BlobClient, BlobServiceClient, ContainerClient

from ...offload import off_loop
from .base import (
    MAX_HEAD,
    READ_CHUNK,
    BlobNotFound,
    BlobStore,
    BlobWriter,
    FixHead,
    PartedWriter,
    Recovered,
    check_key,
    check_range,
)
from .spool import Spool, SpoolTail, spool_path

__all__ = ["BLOCK_SIZE", "AzureBlobStore", "AzureBlobWriter"]

BLOCK_SIZE = 4 * 1024 * 1024
_SEND_CHUNK = 64 * 1024


def _block_id(number: int) -> str:
    # Every block id in a blob must have the same length, hence the fixed width.
    return base64.b64encode(f"{number:08d}".encode()).decode()


def _block_number(block_id: str) -> int | None:
    """The number in one of our block ids, as the SDK hands it back (decoded or not); None for others."""
    texts = [block_id]
    try:
        texts.append(base64.b64decode(block_id).decode("latin-1"))
    except ValueError:  # not base64: the SDK decoded it already
        pass
    for text in texts:
        if len(text) == 8 and text.isdigit():
            return int(text)
    return None


class _Body:
    """A block as a re-iterable async stream of small pieces.

    Given one big buffer, aiohttp joins it with the request headers and asyncio then buffers what the socket
    did not take: two copies of every block. Pieces are copied only a piece at a time. Re-iterable so the
    SDK's retries resend from the start.
    """

    def __init__(self, data: bytearray) -> None:
        self._data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self._data), _SEND_CHUNK):
            yield bytes(self._data[i : i + _SEND_CHUNK])


class AzureBlobWriter(PartedWriter):
    def __init__(
        self, blob: BlobClient, content_type: str, block_size: int = BLOCK_SIZE, spool: Spool | None = None
    ) -> None:
        super().__init__(block_size, spool)
        self._blob = blob
        self._settings = ContentSettings(content_type=content_type)

    async def _upload_part(self, number: int, data: bytearray) -> None:
        await self._blob.stage_block(_block_id(number), _Body(data), length=len(data))  # type: ignore[arg-type]

    async def _complete(self, count: int) -> None:
        blocks = [BlobBlock(block_id=_block_id(n)) for n in range(1, count + 1)]
        await self._blob.commit_block_list(blocks, content_settings=self._settings)

    async def _put_whole(self, data: bytearray) -> None:
        if data:  # one staged block rather than upload_blob, which would hold copies of the whole buffer
            await self._upload_part(1, data)
            await self._complete(1)
        else:
            await self._blob.upload_blob(b"", overwrite=True, content_settings=self._settings)

    async def _discard(self) -> None:
        return None  # staged, uncommitted blocks are garbage-collected by the service


class AzureBlobStore(BlobStore):
    """Blobs in ``container``, under ``prefix/`` when a prefix is given."""

    def __init__(
        self,
        connection_string: str,
        container: str,
        prefix: str = "",
        block_size: int = BLOCK_SIZE,
        spool_dir: Path | None = None,
    ) -> None:
        self.container = container
        self.prefix = prefix.strip("/")
        self._block_size = block_size
        self._spool_dir = spool_dir  # where writers mirror their unsent block (see .spool); None: not at all
        # Downloads come back in READ_CHUNK pieces rather than the SDK's 32 MiB first read.
        self._service = BlobServiceClient.from_connection_string(
            connection_string, max_single_get_size=READ_CHUNK, max_chunk_get_size=READ_CHUNK
        )
        self._container: ContainerClient = self._service.get_container_client(container)

    def _blob(self, key: str) -> BlobClient:
        check_key(key)
        return self._container.get_blob_client(f"{self.prefix}/{key}" if self.prefix else key)

    async def writer(self, key: str, content_type: str = "audio/wav") -> BlobWriter:
        blob = self._blob(key)
        spool = Spool(spool_path(self._spool_dir, blob.blob_name)) if self._spool_dir else None
        return AzureBlobWriter(blob, content_type, self._block_size, spool)

    async def size(self, key: str) -> int | None:
        try:
            props = await self._blob(key).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return int(props.size)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        blob = self._blob(key)
        check_range(start, end)
        if end is not None and end <= start:
            if await self.size(key) is None:
                raise BlobNotFound(key)
            return
        try:
            stream: Any = await blob.download_blob(
                offset=start, length=None if end is None else end - start, max_concurrency=1
            )
        except ResourceNotFoundError:
            raise BlobNotFound(key) from None
        except HttpResponseError as e:
            if e.status_code == 416:  # start is past the end
                return
            raise
        async for chunk in stream.chunks():
            for i in range(0, len(chunk), READ_CHUNK):
                yield bytes(chunk[i : i + READ_CHUNK])

    async def delete(self, key: str) -> None:
        try:
            await self._blob(key).delete_blob()
        except ResourceNotFoundError:
            pass

    async def aclose(self) -> None:
        await self._service.close()

    async def recover(self, key: str, fix: FixHead) -> Recovered | None:
        """Commit the dead writer's staged blocks 1…n in a row and the spooled tail, then stage the first again
        with its head patched."""
        blob = self._blob(key)
        tail = SpoolTail(spool_path(self._spool_dir, blob.blob_name) if self._spool_dir else None)
        found = await super().recover(key, fix)
        if found is not None:
            tail.remove()
            return found
        sizes = await self._staged_in_a_row(blob)
        extra, spooled_at = await off_loop(tail.after, sum(sizes))
        if extra:
            await blob.stage_block(_block_id(len(sizes) + 1), _Body(bytearray(extra)), length=len(extra))  # type: ignore[arg-type]
            sizes.append(len(extra))
        if not sizes:
            tail.remove()
            return None
        blocks = [BlobBlock(block_id=_block_id(n)) for n in range(1, len(sizes) + 1)]
        settings = ContentSettings(content_type="audio/wav")
        await blob.commit_block_list(blocks, content_settings=settings)
        total = sum(sizes)
        first = bytearray(await (await blob.download_blob(offset=0, length=sizes[0])).readall())
        head = fix(bytes(first[:MAX_HEAD]), total)
        if head and not first.startswith(head):
            first[: len(head)] = head
            await blob.stage_block(_block_id(1), _Body(first), length=len(first))  # type: ignore[arg-type]
            await blob.commit_block_list(blocks, content_settings=settings)  # the newly staged first block wins
        tail.remove()
        return Recovered(total, spooled_at)

    async def _staged_in_a_row(self, blob: BlobClient) -> list[int]:
        """The sizes of the uncommitted blocks 1…n in a row (none: no such blob)."""
        try:
            _, staged = await blob.get_block_list("uncommitted")
        except ResourceNotFoundError:
            return []
        sizes_by_number = {_block_number(str(b.id)): int(b.size) for b in staged}
        sizes: list[int] = []
        while len(sizes) + 1 in sizes_by_number:
            sizes.append(sizes_by_number[len(sizes) + 1])
        return sizes
