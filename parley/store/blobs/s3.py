"""Recordings in S3-compatible object storage: AWS S3, MinIO, SeaweedFS, Ceph, R2.

boto3 is synchronous, so each call runs in a worker thread; its clients are thread-safe and pool
connections. Recordings go up as multipart uploads whose first part waits in memory until the end,
because that is where the WAV header is patched (S3 objects cannot be modified once written); it is
uploaded as soon as it fills too, so a crash leaves every full part in the upload for ``recover``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import structlog
from botocore.config import Config
from botocore.exceptions import ClientError

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

__all__ = ["PART_SIZE", "S3BlobStore", "S3BlobWriter"]

PART_SIZE = 5 * 1024 * 1024  # S3's minimum size for every part but the last
_MISSING = {"404", "NoSuchKey", "NotFound"}
log = structlog.get_logger(__name__)


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class S3BlobWriter(PartedWriter):
    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        content_type: str,
        part_size: int = PART_SIZE,
        spool: Spool | None = None,
    ) -> None:
        super().__init__(part_size, spool)
        self._client, self._bucket, self._key, self._content_type = client, bucket, key, content_type
        self._upload_id: str | None = None
        self._etags: dict[int, str] = {}

    async def _upload_part(self, number: int, data: bytearray) -> None:
        if self._upload_id is None:  # only objects bigger than one part need a multipart upload
            created = await off_loop(
                self._client.create_multipart_upload,
                Bucket=self._bucket,
                Key=self._key,
                ContentType=self._content_type,
            )
            self._upload_id = str(created["UploadId"])
        part = await off_loop(
            self._client.upload_part,
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=data,
        )
        self._etags[number] = str(part["ETag"])

    async def _complete(self, count: int) -> None:
        parts = [{"PartNumber": n, "ETag": self._etags[n]} for n in range(1, count + 1)]
        await off_loop(
            self._client.complete_multipart_upload,
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": parts},
        )
        self._upload_id = None

    async def _put_whole(self, data: bytearray) -> None:
        await off_loop(
            self._client.put_object, Bucket=self._bucket, Key=self._key, Body=data, ContentType=self._content_type
        )

    async def _discard(self) -> None:
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            await off_loop(self._client.abort_multipart_upload, Bucket=self._bucket, Key=self._key, UploadId=upload_id)


class S3BlobStore(BlobStore):
    """Objects in ``bucket``, under ``prefix/`` when a prefix is given.

    Set ``endpoint_url`` for anything but AWS itself; path-style addressing is then used, since
    self-hosted servers rarely have a DNS name per bucket. Without keys, boto3's usual credential
    chain (environment, instance role) applies.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        part_size: int = PART_SIZE,
        spool_dir: Path | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._part_size = part_size
        self._spool_dir = spool_dir  # where writers mirror their unsent part (see .spool); None: not at all
        config = Config(
            signature_version="s3v4",
            retries={"mode": "standard", "max_attempts": 5},
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            # Non-AWS servers differ in their support for the newer default CRC checksums; MD5-era behaviour is safe.
            request_checksum_calculation="when_required" if endpoint_url else "when_supported",
            response_checksum_validation="when_required" if endpoint_url else "when_supported",
        )
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    async def writer(self, key: str, content_type: str = "audio/wav") -> BlobWriter:
        name = self._name(key)
        spool = Spool(spool_path(self._spool_dir, name)) if self._spool_dir else None
        return S3BlobWriter(self._client, self.bucket, name, content_type, self._part_size, spool)

    async def size(self, key: str) -> int | None:
        try:
            head = await off_loop(self._client.head_object, Bucket=self.bucket, Key=self._name(key))
        except ClientError as e:
            if _code(e) in _MISSING:
                return None
            raise
        return int(head["ContentLength"])

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        name = self._name(key)
        check_range(start, end)
        if end is not None and end <= start:
            if await self.size(key) is None:
                raise BlobNotFound(key)
            return
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": name}
        if start or end is not None:
            args["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            response = await off_loop(self._client.get_object, **args)
        except ClientError as e:
            if _code(e) in _MISSING:
                raise BlobNotFound(key) from None
            if _code(e) in ("InvalidRange", "416"):  # start is past the end
                return
            raise
        body = response["Body"]
        try:
            chunks = body.iter_chunks(READ_CHUNK)
            while chunk := await off_loop(next, chunks, b""):
                yield chunk
        finally:
            body.close()

    async def delete(self, key: str) -> None:
        await off_loop(self._client.delete_object, Bucket=self.bucket, Key=self._name(key))

    async def aclose(self) -> None:
        await off_loop(self._client.close)

    async def recover(self, key: str, fix: FixHead) -> Recovered | None:
        """Complete the dead writer's multipart upload from its parts 1…n in a row and the spooled tail, then
        patch the head."""
        name = self._name(key)
        tail = SpoolTail(spool_path(self._spool_dir, name) if self._spool_dir else None)
        found = await super().recover(key, fix)
        if found is not None:
            tail.remove()
            return found
        upload_id, parts = await self._newest_upload(name)
        sizes = [int(p["Size"]) for p in parts]
        extra, spooled_at = await off_loop(tail.after, sum(sizes))
        times = [t for t in [*(p["LastModified"] for p in parts), spooled_at] if t is not None]
        if not sizes and not extra:
            tail.remove()
            return None
        if not sizes:  # the first part never filled: the spool holds the whole object
            data = bytearray(extra)
            head = fix(bytes(data[:MAX_HEAD]), len(data))
            data[: len(head)] = head
            await S3BlobWriter(self._client, self.bucket, name, "audio/wav")._put_whole(data)
            sizes = [len(data)]
        else:
            writer = S3BlobWriter(self._client, self.bucket, name, "audio/wav", self._part_size)
            writer._upload_id, writer._etags = upload_id, {int(p["PartNumber"]): str(p["ETag"]) for p in parts}
            if extra:
                await writer._upload_part(len(sizes) + 1, bytearray(extra))
                sizes.append(len(extra))
            await writer._complete(len(sizes))
            try:
                await self._patch_head(name, sizes, sum(sizes), fix)
            except ClientError as exc:  # the object stands as uploaded (a WAV that says "to the end")
                log.warning("blob_recovery_head_not_patched", key=name, error=str(exc))
        tail.remove()
        return Recovered(sum(sizes), max(times) if times else None)

    async def _newest_upload(self, name: str) -> tuple[str | None, list[dict[str, Any]]]:
        """The newest upload of ``name`` with a first part, and its parts in a row; the others are aborted."""
        listed = await off_loop(self._client.list_multipart_uploads, Bucket=self.bucket, Prefix=name)
        uploads = sorted((u for u in listed.get("Uploads", []) if u["Key"] == name), key=lambda u: u["Initiated"])
        chosen: tuple[str | None, list[dict[str, Any]]] = (None, [])
        for upload in reversed(uploads):
            parts = [] if chosen[1] else await self._parts_in_a_row(name, upload["UploadId"])
            if parts:
                chosen = (str(upload["UploadId"]), parts)
                continue
            await off_loop(
                self._client.abort_multipart_upload, Bucket=self.bucket, Key=name, UploadId=upload["UploadId"]
            )
        return chosen

    async def _parts_in_a_row(self, name: str, upload_id: str) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        marker = 0
        while True:
            page = await off_loop(
                self._client.list_parts, Bucket=self.bucket, Key=name, UploadId=upload_id, PartNumberMarker=marker
            )
            parts += page.get("Parts", [])
            if not page.get("IsTruncated"):
                break
            marker = int(page["NextPartNumberMarker"])
        in_a_row: list[dict[str, Any]] = []
        for part in sorted(parts, key=lambda p: int(p["PartNumber"])):
            if int(part["PartNumber"]) != len(in_a_row) + 1:
                break  # a gap: what follows it cannot be placed
            in_a_row.append(part)
        return in_a_row

    async def _patch_head(self, name: str, sizes: list[int], total: int, fix: FixHead) -> None:
        """Rewrite the object with a patched head: the first part uploaded again, the others copied server-side."""
        got = await off_loop(self._client.get_object, Bucket=self.bucket, Key=name, Range=f"bytes=0-{sizes[0] - 1}")
        first = bytearray(await off_loop(got["Body"].read))
        head = fix(bytes(first[:MAX_HEAD]), total)
        if not head or first.startswith(head):
            return
        first[: len(head)] = head
        writer = S3BlobWriter(self._client, self.bucket, name, "audio/wav", self._part_size)
        try:
            await writer._upload_part(1, first)  # starts the new upload
            start = sizes[0]
            for number, size in enumerate(sizes[1:], 2):
                copied = await off_loop(
                    self._client.upload_part_copy,
                    Bucket=self.bucket,
                    Key=name,
                    UploadId=writer._upload_id,
                    PartNumber=number,
                    CopySource={"Bucket": self.bucket, "Key": name},
                    CopySourceRange=f"bytes={start}-{start + size - 1}",
                )
                writer._etags[number] = str(copied["CopyPartResult"]["ETag"])
                start += size
            await writer._complete(len(sizes))
        except BaseException:
            await writer._discard()
            raise
