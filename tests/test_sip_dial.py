"""An in-process ``SipEndpoint``: outbound calls through a trunk (SIPp as UAS) that asks for digest auth.

The trunk challenges the first INVITE with 401; Parley must send it again with a valid Authorization
(SIPp's ``verifyauth`` checks it), ACK the 200, let the agent speak, and end the record when the far
end hangs up. A busy callee (486) and a wrong password (403) end the record as failed with the SIP code.
Also here, because it needs a shortened T1: a 200 that is never ACKed ends the call with BYE.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from parley.config import Settings
from parley.sip.agent.endpoint import SipEndpoint
from parley.store.agents import AgentRepo
from parley.store.blobs import open_blob_store
from parley.store.calls import CallRepo
from parley.store.db import Database
from parley.store.tenants import TenantRepo
from parley.telephony.routing import resolve_target

from .support.sip import RECEPTIONIST, check_sipp, free_udp_port, rtp_range, sipp_command

#: an agent with no models to load, so the 200 goes out at once however loaded the machine is
CANNED = {
    "name": "canned",
    "system_prompt": "Canned replies.",
    "greeting": "Hello.",
    "vad": {"provider": "energy"},
    "stt": {"provider": "canned", "options": {"text": "hello"}},
    "llm": {"provider": "canned", "options": {"default": "Hi."}},
    "tts": {"provider": "tone", "fallback": None},
}


@pytest_asyncio.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}")
    await database.migrate()
    yield database
    await database.close()


async def dial_through_sipp(db: Database, tmp_path: Path, scenario: str, password: str, **subst: str) -> tuple:
    trunk_port = free_udp_port()
    settings = Settings(
        data_dir=tmp_path, sip_port=free_udp_port(), sip_host="127.0.0.1", sip_rtp_ports=rtp_range(),
        sip_trunk_uri=f"sip:127.0.0.1:{trunk_port}", sip_trunk_username="parley", sip_trunk_password=password,
    )  # fmt: skip
    async with db.session() as s:
        tenant = await TenantRepo(s).get_or_create(f"dial-{uuid.uuid4().hex[:6]}")
        agent = await AgentRepo(s).create(tenant.id, f"caller-{uuid.uuid4().hex[:6]}", RECEPTIONIST)
    target = await resolve_target(db, agent_ref=str(agent.id))
    workdir = tmp_path / "sipp"
    cmd = sipp_command(scenario, workdir, None, "trunk", subst=subst, local_port=trunk_port)
    sipp = await asyncio.create_subprocess_exec(
        *cmd, cwd=workdir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    endpoint = SipEndpoint(settings, db, open_blob_store(settings))
    await endpoint.start()
    try:
        await asyncio.sleep(0.3)  # SIPp binds its port (or stops at once on a bad scenario)
        if sipp.returncode is not None:
            output, _ = await sipp.communicate()
            check_sipp(scenario, workdir, sipp.returncode, output.decode(errors="replace"))
        call_id = await endpoint.dial("+15550001111", target)
        async with db.session() as s:
            assert (await CallRepo(s).get(target.tenant_id, call_id)).status == "dialing"
        reason = await asyncio.wait_for(endpoint.wait(call_id), 90)
        output, _ = await asyncio.wait_for(sipp.communicate(), 30)
    finally:
        if sipp.returncode is None:
            sipp.kill()
        await endpoint.stop()
    async with db.session() as s:
        call = await CallRepo(s).get(target.tenant_id, call_id)
        turns = await CallRepo(s).turns(target.tenant_id, call_id)
    return reason, call, turns, (sipp.returncode, output.decode(errors="replace"), workdir)


async def test_dial_answers_a_digest_challenge_and_talks(db: Database, tmp_path: Path) -> None:
    reason, call, turns, (rc, output, workdir) = await dial_through_sipp(
        db, tmp_path, "trunk_auth", "s3cret", LISTEN_MS="6000"
    )
    check_sipp("trunk_auth", workdir, rc, output)
    assert reason == "caller-hangup"
    assert call.status == "ended" and call.direction == "outbound" and call.transport == "sip"
    assert call.called == "+15550001111" and call.caller == "parley" and call.provider_call_id
    assert call.recording_key and call.duration_s > 4
    assert turns and turns[0].agent_text.startswith("Hello")  # the agent greeted the callee


async def test_a_wrong_password_fails_the_dial_with_403(db: Database, tmp_path: Path) -> None:
    reason, call, _, (rc, output, workdir) = await dial_through_sipp(
        db, tmp_path, "trunk_auth", "wrong", LISTEN_MS="10"
    )
    check_sipp("trunk_auth", workdir, rc, output)  # SIPp's own part went as scripted: 401, then 403
    assert reason == "sip-403 Forbidden"
    assert call.status == "failed" and call.end_reason == "sip-403 Forbidden"


async def test_a_busy_callee_fails_the_dial_with_486(db: Database, tmp_path: Path) -> None:
    reason, call, _, (rc, output, workdir) = await dial_through_sipp(db, tmp_path, "trunk_busy", "s3cret")
    check_sipp("trunk_busy", workdir, rc, output)
    assert reason == "sip-486 Busy Here"
    assert call.status == "failed" and call.end_reason == "sip-486 Busy Here"


async def test_a_200_never_acked_ends_the_call_with_bye(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 3261 section 13.3.1.4: the 200 is resent until 64*T1, then the session ends with BYE (T1 shortened)."""
    monkeypatch.setattr("parley.sip.agent.reliable_2xx.T1", 0.02)
    settings = Settings(data_dir=tmp_path, sip_port=free_udp_port(), sip_host="127.0.0.1", sip_rtp_ports=rtp_range())
    async with db.session() as s:
        tenant = await TenantRepo(s).get_or_create("no-ack")
        await AgentRepo(s).create(tenant.id, "silent-caller-test", CANNED)  # SIP timers, not models: no load wait
    endpoint = SipEndpoint(settings, db, open_blob_store(settings))
    await endpoint.start()
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    local = sock.getsockname()[1]
    sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"
    invite = (
        f"INVITE sip:silent-caller-test@127.0.0.1:{endpoint.port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bKnoack;rport\r\nFrom: <sip:x@127.0.0.1>;tag=n1\r\n"
        f"To: <sip:silent-caller-test@127.0.0.1>\r\nCall-ID: noack-{uuid.uuid4()}\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:x@127.0.0.1:{local}>\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
    )
    try:
        await loop.sock_sendto(sock, invite.encode(), ("127.0.0.1", endpoint.port))
        oks = 0
        while True:
            data = (await asyncio.wait_for(loop.sock_recv(sock, 65535), 60)).decode()
            if data.startswith("SIP/2.0 200"):
                oks += 1
            elif data.startswith("BYE "):
                break
            elif data.startswith("SIP/2.0 ") and data[8:9] in "3456":
                raise AssertionError(f"the INVITE was refused: {data.splitlines()[0]} {data[:600]!r}")
        assert oks >= 5  # sent, then resent on T1, 2*T1, 4*T1, ... until 64*T1
        bye_lines = data.split("\r\n")
        ok = [line for line in bye_lines if line.split(":")[0] in ("Via", "From", "To", "Call-ID", "CSeq")]
        answer = "SIP/2.0 200 OK\r\n" + "\r\n".join(ok) + "\r\nContent-Length: 0\r\n\r\n"
        await loop.sock_sendto(sock, answer.encode(), ("127.0.0.1", endpoint.port))
        for _ in range(100):
            if not endpoint.calls:
                break
            await asyncio.sleep(0.05)
        assert not endpoint.calls
    finally:
        sock.close()
        await endpoint.stop()


def test_post_calls_dials_through_the_sip_trunk(tmp_path: Path) -> None:
    """`POST /v1/calls {"provider": "sip"}` on `parley serve`: the endpoint dials the trunk (SIPp answering
    486 Busy Here), and the record the API returned ends as failed with that code."""
    import subprocess
    import time

    from .support.service import running_service

    trunk_port = free_udp_port()
    workdir = tmp_path / "sipp"
    cmd = sipp_command("trunk_busy", workdir, None, "trunk", local_port=trunk_port)
    sipp = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    env = {"PARLEY_SIP_PORT": str(free_udp_port()), "PARLEY_SIP_RTP_PORTS": rtp_range(),
           "PARLEY_SIP_TRUNK_URI": f"sip:127.0.0.1:{trunk_port}", "PARLEY_SIP_TRUNK_USERNAME": "parley",
           "PARLEY_SIP_TRUNK_PASSWORD": "s3cret"}  # fmt: skip
    try:
        with running_service(tmp_path / "svc", **env) as svc:
            key = svc.create_key("dialer")
            with svc.client(key) as c:
                assert c.post("/v1/agents", json={**RECEPTIONIST, "name": "outbound"}).status_code == 201
                r = c.post("/v1/calls", json={"agent_id": "outbound", "to": "+15550002222", "provider": "sip"})
                assert r.status_code == 201, r.text
                call = r.json()
                assert call["status"] == "dialing" and call["transport"] == "sip" and call["direction"] == "outbound"
                for _ in range(300):
                    after = c.get(f"/v1/calls/{call['id']}").json()
                    if after["status"] != "dialing":
                        break
                    time.sleep(0.2)
            assert after["status"] == "failed" and after["end_reason"] == "sip-486 Busy Here"
    finally:
        output = sipp.communicate(timeout=60)[0].decode(errors="replace")
    check_sipp("trunk_busy", workdir, sipp.returncode, output)
