"""Recording storage: local files, S3-compatible object storage or Azure Blob Storage, behind one interface.

The S3 and Azure backends live in ``.s3`` and ``.azure`` and are imported only when configured.
"""

from .base import MAX_HEAD, READ_CHUNK, BlobNotFound, BlobStore, BlobWriter, check_key
from .factory import open_blob_store
from .local import LocalBlobStore

__all__ = [
    "MAX_HEAD",
    "READ_CHUNK",
    "BlobNotFound",
    "BlobStore",
    "BlobWriter",
    "LocalBlobStore",
    "check_key",
    "open_blob_store",
]
