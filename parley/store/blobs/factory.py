"""Choose the recording store from settings alone, so deployments switch backends without code changes."""

from __future__ import annotations

from urllib.parse import urlsplit

from ...config import Settings
from ...extras import require
from .base import BlobStore
from .local import LocalBlobStore

__all__ = ["open_blob_store"]


def open_blob_store(settings: Settings) -> BlobStore:
    """``storage_url`` unset: files under ``recordings_dir``; ``s3://bucket[/prefix]``; ``az://container[/prefix]``.

    Remote stores spool the part being filled under ``data_dir/spool``, so a restart on the same disk recovers it.
    """
    url = settings.storage_url
    if not url:
        return LocalBlobStore(settings.recordings_dir)
    parts = urlsplit(url)
    scheme, name, prefix = parts.scheme.lower(), parts.netloc, parts.path.strip("/")
    if scheme not in ("s3", "az"):
        raise ValueError(
            f"PARLEY_STORAGE_URL {url!r} is not supported: use s3://bucket[/prefix] or az://container[/prefix], "
            "or leave it unset to keep recordings under PARLEY_DATA_DIR"
        )
    if not name:
        raise ValueError(f"PARLEY_STORAGE_URL {url!r} names no {'bucket' if scheme == 's3' else 'container'}")
    if scheme == "s3":
        require("s3", "PARLEY_STORAGE_URL=s3://…", "boto3")
        from .s3 import S3BlobStore  # boto3 is only imported when S3 is configured

        secret = settings.s3_secret_access_key
        return S3BlobStore(
            name,
            prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret else None,
            spool_dir=settings.data_dir / "spool",
        )
    if settings.azure_storage_connection_string is None:
        raise ValueError(f"PARLEY_STORAGE_URL {url!r} needs PARLEY_AZURE_STORAGE_CONNECTION_STRING to be set")
    require("azure", "PARLEY_STORAGE_URL=az://…", "azure.storage.blob", "aiohttp")
    from .azure import AzureBlobStore

    return AzureBlobStore(
        settings.azure_storage_connection_string.get_secret_value(), name, prefix, spool_dir=settings.data_dir / "spool"
    )
