"""A call's recording: the WAV itself (Range requests, headers or a recording token), its waveform peaks, and the
token that lets an ``<audio src>`` (which cannot send headers) fetch it."""

from __future__ import annotations

import re
import struct
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from parley.api import recording_tokens
from parley.api.auth import AuthError, Role
from parley.api.deps import ReadCalls, State, access, client_address, principal, rate_limit
from parley.api.state import AppState
from parley.audio.peaks import Peaks
from parley.store.blobs import BlobNotFound
from parley.store.calls import CallRepo
from parley.store.keys import ApiKeyRepo
from parley.store.models import Call

router = APIRouter(prefix="/v1/calls", tags=["calls"])
_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")
_MAX_DIGITS = 18  # any byte offset with more is past every recording (and int() refuses 4,300+ digits)
_HEADER_BYTES = 44  # the PCM16 header parley.calls.recorder writes
CHANNELS = ("caller", "agent")  # the recording's left and right channels


class Waveform(BaseModel):
    duration_s: float = Field(description="the recording's length in seconds")
    sample_rate: int
    channels: list[str] = Field(description='what each row of ``peaks`` is: ["caller", "agent"]')
    peaks: list[list[float]] = Field(description="per channel, ``points`` values 0..1: max |sample| per bucket")


class RecordingToken(BaseModel):
    token: str = Field(description="signed, bound to this call; reusable until it expires (Range requests)")
    expires_in: int = Field(description="seconds")
    url: str = Field(description="GET it without headers: the WAV, as GET /v1/calls/{id}/recording streams it")


async def _call(state: AppState, tenant_id: uuid.UUID, call_id: uuid.UUID) -> Call:
    async with state.db.session() as s:
        call = await CallRepo(s).get(tenant_id, call_id)
    if call is None:
        raise HTTPException(status_code=404, detail="call not found")
    return call


async def _recording_size(state: AppState, call: Call) -> int:
    size = await state.blobs.size(call.recording_key) if call.recording_key else None
    if size is None:
        raise HTTPException(status_code=404, detail="this call has no recording")
    return size


@router.post("/{call_id}/recording-token", response_model=RecordingToken)
async def recording_token(call_id: uuid.UUID, who: ReadCalls, state: State) -> RecordingToken:
    """A token for ``GET /v1/calls/{id}/recording?token=…``: for players that cannot send headers. It lives
    10 minutes, opens this call's recording only, and stops working when the key that asked for it is revoked."""
    call = await _call(state, who.tenant_id, call_id)
    await _recording_size(state, call)
    token = recording_tokens.issue(state.auth, who, call.id)
    url = f"/v1/calls/{call.id}/recording?token={token}"
    return RecordingToken(token=token, expires_in=recording_tokens.TTL_S, url=url)


async def _reader(
    request: Request,
    state: State,
    call_id: uuid.UUID,
    token: Annotated[
        str | None, Query(max_length=2000, description="a recording token, instead of the usual headers")
    ] = None,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> uuid.UUID:
    """The tenant whose recording may be read: from ``?token=`` when given, else from the headers (calls:read)."""
    if token is None:
        who = await principal(request, state, authorization, x_api_key)
        return (await access(Role.viewer, "calls:read")(who)).tenant_id
    await rate_limit(state, f"addr:{client_address(request)}", state.settings.rate_limit_per_address)

    async def key_is_live(tenant_id: uuid.UUID, key_id: uuid.UUID) -> bool:
        async with state.db.session() as s:
            return await ApiKeyRepo(s).is_live(tenant_id, key_id)

    try:
        grant = await recording_tokens.redeem(state.auth, token, call_id, key_is_live)
    except AuthError as exc:  # the message never holds the token
        challenge = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        raise HTTPException(exc.status, exc.message, challenge) from None
    await rate_limit(state, f"who:{grant.tenant_id}:{grant.subject}", state.settings.rate_limit_per_key)
    return grant.tenant_id


RecordingReader = Annotated[uuid.UUID, Depends(_reader)]


@router.get("/{call_id}/recording", response_class=StreamingResponse, responses={206: {}, 416: {}})
async def recording(
    call_id: uuid.UUID, tenant_id: RecordingReader, state: State, range: Annotated[str | None, Header()] = None
) -> Response:
    """The call as a stereo WAV (caller left, agent right); honours HTTP Range requests. Authenticated by the
    usual headers or by ``?token=`` (``POST /v1/calls/{id}/recording-token``)."""
    call = await _call(state, tenant_id, call_id)
    size = await _recording_size(state, call)
    start, end = _byte_range(range, size) if range else (0, size)
    status = 206 if range else 200
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(end - start),
        "Content-Disposition": f'attachment; filename="call-{call.id}.wav"',
        "Cache-Control": "private, no-store",
    }
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    key = call.recording_key
    assert key is not None  # _recording_size found it

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in state.blobs.read(key, start, end):
                yield chunk
        except BlobNotFound:
            return

    return StreamingResponse(body(), status_code=status, media_type="audio/wav", headers=headers)


def _byte_range(header: str, size: int) -> tuple[int, int]:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` as [start, end); anything else, or nothing of the file, is a 416."""
    unsatisfiable = {"Content-Range": f"bytes */{size}"}
    m = _RANGE.match(header.strip())
    if not m or (m.group(1) == "" and m.group(2) == ""):
        raise HTTPException(status_code=416, detail="unsupported Range", headers=unsatisfiable)

    def number(digits: str) -> int:  # longer than _MAX_DIGITS: larger than any recording, as good as infinity
        return int(digits) if len(digits) <= _MAX_DIGITS else size + 1

    first, last = m.group(1), m.group(2)
    if first == "":  # suffix: the last N bytes
        start, end = max(0, size - number(last)), size
    else:
        start, end = number(first), min(size, number(last) + 1) if last else size
    if start >= size or start >= end:
        raise HTTPException(status_code=416, detail="range not satisfiable", headers=unsatisfiable)
    return start, end


@router.get("/{call_id}/waveform", response_model=Waveform, responses={404: {}, 422: {}})
async def waveform(
    call_id: uuid.UUID,
    who: ReadCalls,
    state: State,
    points: Annotated[int, Query(ge=100, le=4000, description="values per channel")] = 1000,
) -> Waveform:
    """Peaks of the recording for drawing its waveform: the loudest sample of each of ``points`` equal stretches,
    per channel (caller, agent). 404 when the call has no recording, 422 when it is not a PCM16 WAV."""
    call = await _call(state, who.tenant_id, call_id)
    size = await _recording_size(state, call)
    key = call.recording_key
    assert key is not None
    try:
        chunks = state.blobs.read(key)
        head = bytearray()
        peaks: Peaks | None = None
        rate = 0
        async for chunk in chunks:
            if peaks is None:
                head += chunk
                if len(head) < _HEADER_BYTES:
                    continue
                rate, channels = _pcm16_format(bytes(head[:_HEADER_BYTES]))
                frames = (size - _HEADER_BYTES) // (2 * channels)
                peaks = Peaks(frames, channels, points)
                chunk, head = bytes(head[_HEADER_BYTES:]), bytearray()
            peaks.feed(chunk)
    except BlobNotFound:
        raise HTTPException(status_code=404, detail="this call has no recording") from None
    if peaks is None:
        raise HTTPException(status_code=422, detail="the recording is shorter than a WAV header")
    return Waveform(
        duration_s=round(peaks.frames / rate, 3),
        sample_rate=rate,
        channels=list(CHANNELS[: peaks.channels]),
        peaks=peaks.result(),
    )


def _pcm16_format(head: bytes) -> tuple[int, int]:
    """(sample rate, channels) of a 44-byte PCM16 WAV header; a 422 for anything else."""
    if head[:4] != b"RIFF" or head[8:16] != b"WAVEfmt " or head[36:40] != b"data":
        raise HTTPException(status_code=422, detail="the recording is not a WAV file Parley wrote (PCM16)")
    code, channels, rate = struct.unpack_from("<HHI", head, 20)
    bits = struct.unpack_from("<H", head, 34)[0]
    if code != 1 or bits != 16 or not 1 <= channels <= len(CHANNELS) or not 1 <= rate <= 384_000:
        raise HTTPException(status_code=422, detail="the recording is not 16-bit PCM with one or two channels")
    return rate, channels
