"""A Parley with no carrier configured (only the API and the talk socket in use) takes no calls from strangers.

Found while building the WebSocket fuzzer (tests/support/ws_fuzz.py): with none of the carrier
secrets set, five of the six carrier stream sockets start a call to any tenant's agent
named in the query or the start message (by id, or by name when the name is unique),
with no credentials at all; only Twilio's refused ("Twilio is not configured"). Now a
carrier whose credential is not set is off: every handshake is refused (HTTP 403) and
every webhook answered 403 (parley/telephony/webhooks.py, CARRIER_CREDENTIALS).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
import websockets

from .support.live_call import talker
from .support.service import Service, running_service

START = {
    "plivo": ("/telephony/plivo/stream?agent={agent}", {"event": "start", "sequenceNumber": 0, "start": {
        "streamId": "s1", "callId": "c1", "mediaFormat": {"encoding": "audio/x-mulaw"}}}),
    "vonage": ("/telephony/vonage/stream", {"event": "websocket:connected", "content-type": "audio/l16;rate=16000",
                                            "agent": "{agent}"}),
    "exotel": ("/telephony/exotel/stream?agent={agent}", {"event": "start", "sequence_number": 1, "start": {
        "stream_sid": "s1", "media_format": {"sample_rate": "8000"}}}),
    "asterisk": ("/telephony/asterisk/media?agent={agent}",
                 "MEDIA_START connection_id:c1 channel:x format:ulaw optimal_frame_size:160"),
    "freeswitch": ("/telephony/freeswitch/stream?agent={agent}", {"uuid": "u1"}),
    "twilio": ("/telephony/twilio/stream", {"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1",
                                                                        "customParameters": {"agent": "{agent}"}}}),
}  # fmt: skip


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, str]]:
    """A service with no carrier secret set, and one tenant's agent (its name is unique: it names it alone)."""
    with running_service(tmp_path_factory.mktemp("bare")) as svc:
        key = svc.create_key("victim")
        with svc.client(key) as c:
            created = c.post("/v1/agents", json={**talker(5), "name": "victim-agent"})
        assert created.status_code == 201, created.text
        yield svc, key


async def _agent_frames(url: str, start: str) -> int:
    """Agent audio frames a stranger hears within 2 s of starting a stream (0: refused or closed)."""
    try:
        async with websockets.connect(url) as ws:
            await ws.send(start)
            frames = 0
            try:
                async with asyncio.timeout(2):
                    async for _ in ws:
                        frames += 1
            except TimeoutError:
                pass
            return frames
    except (websockets.InvalidStatus, websockets.ConnectionClosed):
        return 0


@pytest.mark.parametrize("carrier", sorted(START))
def test_an_unconfigured_carrier_takes_no_call(bare: tuple[Service, str], carrier: str) -> None:
    """No credentials, a guessable agent name: no audio, and no call record in the victim's tenant."""
    svc, key = bare
    path, start = START[carrier]
    message = start if isinstance(start, str) else json.dumps(start)
    url = svc.url.replace("http", "ws", 1) + path.format(agent="victim-agent")
    frames = asyncio.run(_agent_frames(url, message.replace("{agent}", "victim-agent")))
    with svc.client(key) as c:
        calls = c.get("/v1/calls", params={"transport": carrier}).json()
    assert frames == 0 and not calls, (
        f"a stranger reached tenant 'victim''s agent by name over {path}: {frames} audio frames, calls {calls}"
    )


SETTING = {"plivo": "PARLEY_PLIVO_AUTH_TOKEN", "vonage": "PARLEY_VONAGE_SIGNATURE_SECRET",
           "exotel": "PARLEY_EXOTEL_API_KEY and PARLEY_EXOTEL_API_TOKEN", "asterisk": "PARLEY_ASTERISK_PASSWORD",
           "freeswitch": "PARLEY_FREESWITCH_TOKEN", "twilio": "PARLEY_TWILIO_AUTH_TOKEN"}  # fmt: skip
WEBHOOKS = ["/telephony/plivo/answer?agent=victim-agent", "/telephony/plivo/status",
            "/telephony/plivo/transfer?to=1234", "/telephony/vonage/answer?agent=victim-agent",
            "/telephony/vonage/event", "/telephony/exotel/status", "/telephony/twilio/voice?agent=victim-agent",
            "/telephony/twilio/status"]  # fmt: skip


@pytest.mark.parametrize("carrier", sorted(START))
def test_an_unconfigured_carriers_handshake_is_http_403_and_logged(bare: tuple[Service, str], carrier: str) -> None:
    """Refused before the socket opens, as a bad credential is, with a log line naming the setting to set."""
    svc, _ = bare
    url = svc.url.replace("http", "ws", 1) + START[carrier][0].format(agent="victim-agent")

    async def handshake() -> None:
        async with websockets.connect(url):
            pass

    with pytest.raises(websockets.InvalidStatus) as refused:
        asyncio.run(handshake())
    assert refused.value.response.status_code == 403
    log = svc.log.read_text(errors="replace")
    assert "carrier_not_configured" in log and SETTING[carrier] in log, log[-2000:]


@pytest.mark.parametrize("path", WEBHOOKS)
def test_an_unconfigured_carriers_webhooks_are_403(bare: tuple[Service, str], path: str) -> None:
    """No webhook of a carrier without its credential is believed: not an answer, not a status, not a transfer."""
    svc, _ = bare
    with svc.client() as c:
        for method in ("GET", "POST"):
            r = c.request(method, path, data={"CallUUID": "x", "CallSid": "x", "uuid": "x", "status": "completed"})
            assert r.status_code in (403, 405), f"{method} {path}: {r.status_code} {r.text[:200]}"
            if r.status_code == 403:
                assert "not configured" in r.text, r.text[:200]


def test_an_empty_secret_is_no_secret() -> None:
    """``PARLEY_FREESWITCH_TOKEN=`` would otherwise let ``?token=`` in: empty counts as unset, for every carrier."""
    from parley.config import Settings
    from parley.telephony.webhooks import CARRIER_CREDENTIALS, missing_credentials

    empty = Settings.model_validate({name: "" for names in CARRIER_CREDENTIALS.values() for name in names})
    assert {c: missing_credentials(empty, c) for c in CARRIER_CREDENTIALS} == {
        c: [f"PARLEY_{n.upper()}" for n in names] for c, names in CARRIER_CREDENTIALS.items()
    }
    assert set(CARRIER_CREDENTIALS) == set(START)  # every carrier socket has its rule
    configured = Settings.model_validate({n: "s3cret-value" for names in CARRIER_CREDENTIALS.values() for n in names})
    assert not any(missing_credentials(configured, c) for c in CARRIER_CREDENTIALS)
