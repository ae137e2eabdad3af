"""What the knowledge routes need beside the state: the process's knowledge base, bounded uploads, the ingestor."""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import Depends, HTTPException, UploadFile

from parley.api.deps import State
from parley.api.state import AppState
from parley.knowledge.service import KnowledgeBase

READ_CHUNK = 1 << 16


def knowledge_base(state: State) -> KnowledgeBase:
    if state.knowledge is None:
        raise HTTPException(503, detail="the knowledge base is not available in this process")
    return state.knowledge


Knowledge = Annotated[KnowledgeBase, Depends(knowledge_base)]


class UploadReader:
    """Reads uploaded files whole, each bounded by the upload limit (the request's size is bounded already)."""

    def __init__(self, state: State) -> None:
        self.limit = state.settings.knowledge_max_upload_bytes

    async def read(self, f: UploadFile) -> tuple[str, bytes, str | None]:
        name = os.path.basename((f.filename or "").replace("\\", "/")).strip()[:200] or "upload"
        parts: list[bytes] = []
        size = 0
        while chunk := await f.read(READ_CHUNK):
            size += len(chunk)
            if size > self.limit:
                raise HTTPException(413, detail=f"{name} is larger than {self.limit} bytes")
            parts.append(chunk)
        if not size:
            raise HTTPException(
                422, detail=[{"loc": ["body", "files"], "msg": f"{name} is empty", "type": "value_error"}]
            )
        return name, b"".join(parts), f.content_type


Uploads = Annotated[UploadReader, Depends(UploadReader)]


def wake_ingestor(state: AppState) -> None:
    if state.ingestor is not None:
        state.ingestor.wake()
