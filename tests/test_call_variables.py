"""Call variables reach the agent, and answering-machine detection leaves a voicemail (parley.calls.variables,
parley.telephony.amd).

Real calls: a SIP dial through SIPp as the trunk (in-process endpoint, SQLite), and Twilio calls through a
running `parley serve` with the local Twilio REST fake and a Media Streams peer, one of them dialled by the
campaign scheduler (a machine answers: the voicemail is left, the contact's outcome is ``voicemail``). The agent
is model-free (canned STT and replies, a tone for speech): what the callee heard is the turn's ``agent_text``.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from websockets.exceptions import ConnectionClosed

from parley.agent.document import AgentDocument
from parley.calls.variables import ANSWERED_BY, GREETING, LANGUAGE, VOICEMAIL, campaign_variables, plan_call
from parley.campaigns.schedule import CampaignSchedule, RetryPolicy
from parley.config import Settings
from parley.sip.agent.endpoint import SipEndpoint
from parley.store.agents import AgentRepo
from parley.store.blobs import open_blob_store
from parley.store.calls import CallRepo
from parley.store.db import Database
from parley.store.models import Tenant, utcnow
from parley.store.models_campaigns import Campaign, CampaignContact
from parley.store.tenants import TenantRepo
from parley.telephony.routing import resolve_target

from .support.service import Service
from .support.sip import check_sipp, free_udp_port, rtp_range, sipp_command
from .support.twilio import PUBLIC, SID, TOKEN, signed_post, stream_of, stream_url, voice_form
from .support.twilio_peer import FakeTwilioRest, TwilioPeer

#: a reminder agent with placeholders, model-free: canned hearing and replies, a tone for a voice
REMINDER: dict[str, Any] = {
    "kind": "agent",
    "name": "reminder",
    "system_prompt": "You remind {{ first_name }} of the visit at {{ appointment_time }}.",
    "greeting": "Hello {{ first_name }}{{ nickname }}, about your visit at {{ appointment_time }}.",
    "vad": {"provider": "energy"},
    "stt": {"provider": "canned", "options": {"text": "thanks"}},
    "llm": {"provider": "canned", "options": {"default": "See you then."}},
    "tts": {"provider": "tone", "fallback": None},
}
DOC = AgentDocument.model_validate({k: v for k, v in REMINDER.items() if k != "kind"})


# --- the plan: placeholders, overrides, voicemail ------------------------------------------


def test_placeholders_render_over_the_call_variables_and_missing_ones_are_empty() -> None:
    stored = {"first_name": "Ada", "appointment_time": "3 pm"}
    plan = plan_call(DOC, stored, stored, uuid.uuid4())
    assert plan.document.greeting == "Hello Ada, about your visit at 3 pm."
    assert plan.document.system_prompt == "You remind Ada of the visit at 3 pm."
    assert not plan.voicemail


def test_per_contact_overrides_and_a_bad_language_is_ignored() -> None:
    stored = campaign_variables({"first_name": "Bo"}, language="de", greeting="Hallo {{ first_name }}!")
    assert stored == {"first_name": "Bo", LANGUAGE: "de", GREETING: "Hallo {{ first_name }}!"}
    plan = plan_call(DOC, stored, {"first_name": "Bo"}, uuid.uuid4())
    assert plan.document.greeting == "Hallo Bo!" and plan.document.language == "de"
    odd = plan_call(DOC, {LANGUAGE: "not a language"}, {}, uuid.uuid4())
    assert odd.document.language == DOC.language


def test_a_machine_gets_the_voicemail_message_uninterruptible() -> None:
    stored = {"first_name": "Ada", VOICEMAIL: "Hi {{ first_name }}, please call back.", ANSWERED_BY: "machine"}
    plan = plan_call(DOC, stored, {"first_name": "Ada"}, uuid.uuid4())
    assert plan.voicemail and plan.document.greeting == "Hi Ada, please call back."
    assert plan.document.interruptions.during_greeting is False
    human = plan_call(DOC, {**stored, ANSWERED_BY: "human"}, {"first_name": "Ada"}, uuid.uuid4())
    assert not human.voicemail and human.document.greeting.startswith("Hello Ada")


def test_a_value_is_never_rendered_again() -> None:
    stored = {"first_name": "{{ appointment_time }}", "appointment_time": "secret"}
    assert plan_call(DOC, stored, stored, uuid.uuid4()).document.greeting.startswith("Hello {{ appointment_time }},")


# --- a SIP dial: the record's variables reach the greeting ---------------------------------


async def test_a_sip_dial_greets_with_the_contacts_variables(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}")
    await db.migrate()
    trunk_port = free_udp_port()
    settings = Settings(
        data_dir=tmp_path, sip_port=free_udp_port(), sip_host="127.0.0.1", sip_rtp_ports=rtp_range(),
        sip_trunk_uri=f"sip:127.0.0.1:{trunk_port}", sip_trunk_username="parley", sip_trunk_password="s3cret",
    )  # fmt: skip
    async with db.session() as s:
        tenant = await TenantRepo(s).get_or_create("vars")
        agent = await AgentRepo(s).create(tenant.id, "reminder", {k: v for k, v in REMINDER.items() if k != "kind"})
    target = await resolve_target(db, agent_ref=str(agent.id))
    workdir = tmp_path / "sipp"
    cmd = sipp_command("trunk_auth", workdir, None, "trunk", subst={"LISTEN_MS": "3000"}, local_port=trunk_port)
    sipp = await asyncio.create_subprocess_exec(
        *cmd, cwd=workdir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    endpoint = SipEndpoint(settings, db, open_blob_store(settings))
    await endpoint.start()
    given = uuid.uuid4()
    try:
        call_id = await endpoint.dial(
            "+15550002222", target, call_id=given, variables={"first_name": "Ada", "appointment_time": "3 pm"}
        )
        assert call_id == given  # a campaign attempt's pre-generated id is the record's
        reason = await asyncio.wait_for(endpoint.wait(call_id), 90)
        output, _ = await asyncio.wait_for(sipp.communicate(), 30)
    finally:
        if sipp.returncode is None:
            sipp.kill()
        await endpoint.stop()
    check_sipp("trunk_auth", workdir, sipp.returncode, output.decode(errors="replace"))
    async with db.session() as s:
        call = await CallRepo(s).get(target.tenant_id, given)
        turns = await CallRepo(s).turns(target.tenant_id, given)
    await db.close()
    assert reason == "caller-hangup" and call is not None and call.variables["first_name"] == "Ada"
    assert turns[0].agent_text == "Hello Ada, about your visit at 3 pm."


# --- Twilio: machine detection on the dial, AnsweredBy on the voice webhook ----------------


@pytest.fixture(scope="module")
def rest() -> Iterator[FakeTwilioRest]:
    with FakeTwilioRest() as server:
        yield server


@pytest.fixture(scope="module")
def service_env(rest: FakeTwilioRest) -> dict[str, str]:
    return {"PARLEY_TWILIO_ACCOUNT_SID": SID, "PARLEY_TWILIO_AUTH_TOKEN": TOKEN, "PARLEY_PUBLIC_URL": PUBLIC,
            "PARLEY_TWILIO_API_BASE_URL": rest.url, "PARLEY_CAMPAIGN_TICK_S": "0.2"}  # fmt: skip


@pytest.fixture(scope="module")
def agent_doc() -> dict[str, Any]:
    return REMINDER


def dial_and_answer(
    service: Service, key: str, rest: FakeTwilioRest, variables: dict[str, str], answered_by: str
) -> tuple[dict[str, Any], dict[str, str], TwilioPeer]:
    """POST /v1/calls with machine detection; Twilio answers: the voice webhook (with AnsweredBy), the stream."""
    to = f"+1555010{int(time.time() * 1000) % 10000:04d}"
    with service.client(key) as c:
        r = c.post("/v1/calls", json={"agent_id": "reminder", "to": to, "from": "+15550100200", "provider": "twilio",
                                      "variables": variables, "machine_detection": True})  # fmt: skip
        assert r.status_code == 201, r.text
    call, created = r.json(), rest.requests[-1]["form"]
    path = created["Url"].removeprefix(PUBLIC)
    form = {**voice_form(to=to, sid=call["provider_call_id"]), "From": "+15550100200", "Direction": "outbound-api",
            "AnsweredBy": answered_by}  # fmt: skip
    _, params = stream_of(signed_post(service, path, form).text)
    url, headers = stream_url(service)
    return call, created, TwilioPeer(url, params, headers, call_sid=call["provider_call_id"])


def finished(service: Service, key: str, call_id: str) -> dict[str, Any]:
    with service.client(key) as c:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            call = c.get(f"/v1/calls/{call_id}").json()
            if call["status"] not in ("dialing", "active"):
                return dict(call)
            time.sleep(0.2)
    raise AssertionError(f"call {call_id} did not end: {call['status']}")


def test_a_human_hears_the_greeting_with_their_name(service: Service, key: str, agent: dict[str, Any],
                                                    rest: FakeTwilioRest) -> None:  # fmt: skip
    call, created, peer = dial_and_answer(service, key, rest, {"first_name": "Ada", "appointment_time": "3 pm"},
                                          "human")  # fmt: skip
    assert created["MachineDetection"] == "Enable"

    async def script(p: TwilioPeer) -> None:
        await p.wait_for("media", within=60)
        await p.wait_quiet(1.0)

    asyncio.run(peer.run(script))
    after = finished(service, key, call["id"])
    assert after["turns"][0]["agent_text"] == "Hello Ada, about your visit at 3 pm."
    detections = [e["data"] for e in after["events"] if e["kind"] == "machine_detection"]
    assert [d["answered_by"] for d in detections] == ["human"]
    assert service.log.read_text().count("call_variables_missing") >= 1  # {{ nickname }}: logged, rendered empty


def test_a_machine_gets_the_voicemail_message_and_the_call_hangs_up(service: Service, key: str,
                                                                   agent: dict[str, Any],
                                                                   rest: FakeTwilioRest) -> None:  # fmt: skip
    variables = {"first_name": "Ada", "appointment_time": "3 pm", "_voicemail": "Hi {{ first_name }}, call us back."}
    call, created, peer = dial_and_answer(service, key, rest, variables, "machine_end_beep")
    assert created["MachineDetection"] == "DetectMessageEnd"  # a message to leave: Twilio waits for the beep

    async def script(p: TwilioPeer) -> None:
        await p.wait_for("media", within=60)
        await asyncio.wait_for(p._closed.wait(), 60)  # Parley hangs up: the stream closes

    try:
        asyncio.run(peer.run(script))
    except ConnectionClosed:
        pass  # the stop after Parley closed the stream
    after = finished(service, key, call["id"])
    assert after["end_reason"] == "agent-hangup"
    assert [t["agent_text"] for t in after["turns"]] == ["Hi Ada, call us back."]
    kinds = {e["kind"]: e["data"] for e in after["events"]}
    assert kinds["machine_detection"]["answered_by"] == "machine"
    assert kinds["action"]["reason"] == "voicemail" and kinds["action"]["result"] == "done"


# --- a campaign's call: the scheduler dials with detection, a machine gets the message, outcome voicemail ---


async def _campaign_with_voicemail(service: Service, agent_id: str) -> uuid.UUID:
    db = Database(f"sqlite+aiosqlite:///{service.env['PARLEY_DATA_DIR']}/parley.db")
    try:
        async with db.session() as s:
            tenant = await s.scalar(select(Tenant.id).where(Tenant.name == "call-variables-tenant"))
            campaign = Campaign(
                tenant_id=tenant, name="voicemail", agent_id=uuid.UUID(agent_id), provider="twilio",
                caller_id="+15550100200", status="running", started_at=utcnow(),
                schedule=CampaignSchedule(windows=[]).model_dump(mode="json"),
                retry=RetryPolicy().model_dump(mode="json"),
                voicemail={"detect": True, "message": "Hi {{ first_name }}, please call us back."},
            )  # fmt: skip
            s.add(campaign)
            await s.flush()
            s.add(CampaignContact(tenant_id=tenant, campaign_id=campaign.id, row=1, phone="+12025551777",
                                  variables={"first_name": "Ada"}, timezone="UTC"))  # fmt: skip
            return campaign.id
    finally:
        await db.close()


async def _contact(service: Service, campaign_id: uuid.UUID) -> CampaignContact:
    db = Database(f"sqlite+aiosqlite:///{service.env['PARLEY_DATA_DIR']}/parley.db")
    try:
        async with db.session() as s:
            found = await s.scalar(select(CampaignContact).where(CampaignContact.campaign_id == campaign_id))
            assert found is not None
            return found
    finally:
        await db.close()


def test_a_campaign_call_answered_by_a_machine_leaves_the_voicemail(service: Service, key: str,
                                                                   agent: dict[str, Any],
                                                                   rest: FakeTwilioRest) -> None:  # fmt: skip
    campaign_id = asyncio.run(_campaign_with_voicemail(service, agent["id"]))
    deadline = time.monotonic() + 60
    while not (dialled := [r for r in rest.requests if r["form"].get("To") == "+12025551777"]):
        assert time.monotonic() < deadline, "the scheduler did not dial"
        time.sleep(0.2)
    created = dialled[0]["form"]
    assert created["MachineDetection"] == "DetectMessageEnd"  # the campaign has a message to leave
    call_id = dict(urllib.parse.parse_qsl(created["Url"].split("?", 1)[1]))["call"]
    with service.client(key) as c:
        sid = c.get(f"/v1/calls/{call_id}").json()["provider_call_id"]
    form = {**voice_form(to="+12025551777", sid=sid), "From": "+15550100200", "Direction": "outbound-api",
            "AnsweredBy": "machine_end_silence"}  # fmt: skip
    _, params = stream_of(signed_post(service, created["Url"].removeprefix(PUBLIC), form).text)
    url, headers = stream_url(service)

    async def script(p: TwilioPeer) -> None:
        await p.wait_for("media", within=60)
        await asyncio.wait_for(p._closed.wait(), 60)

    try:
        asyncio.run(TwilioPeer(url, params, headers, call_sid=sid).run(script))
    except ConnectionClosed:
        pass
    after = finished(service, key, call_id)
    assert [t["agent_text"] for t in after["turns"]] == ["Hi Ada, please call us back."]
    while (contact := asyncio.run(_contact(service, campaign_id))).state != "done":
        assert time.monotonic() < deadline + 60, contact.state
        time.sleep(0.2)
    assert contact.outcome == "voicemail" and contact.attempts == 1
