"""A whole phone call over SIP with SIPp as the caller, then the call record read back through the API.

SIPp INVITEs the agent by name, streams a spoken question as G.711 RTP (``rtp_stream``), moves its media
by re-INVITE, presses a key with the RFC 2833 pcap SIPp ships, and hangs up. The record must show the
SIP transport, the caller's words, the agent's reply, the key press and a recording.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from parley.audio import read_wav
from parley.calls.synthetic_caller import speak

from .support.sip import SIPP_PCAPS, SipService, run_sipp, sip_service, write_ulaw_wav


@pytest.fixture(scope="module")
def sip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SipService]:
    with sip_service(tmp_path_factory.mktemp("sip-call")) as svc:
        yield svc


def test_sipp_call_speech_dtmf_and_recording(sip: SipService, tmp_path: Path) -> None:
    question = asyncio.run(speak("What are your opening hours on Saturday?", "joe-quick", rate=8000))
    # the greeting plays first (the caller listens), then the question, then time for the answer
    pcm = np.concatenate([np.zeros(8000 * 6, np.int16), question, np.zeros(8000 * 7, np.int16)])
    wav = tmp_path / "caller.wav"
    write_ulaw_wav(wav, pcm)
    subst = {"WAV": str(wav), "SPEECH_MS": str(len(pcm) // 8 + 300), "DTMF": str(SIPP_PCAPS / "dtmf_2833_1.pcap")}
    run_sipp("call", sip.sip_port, tmp_path, user=sip.agent["name"], subst=subst)

    with sip.service.client(sip.key) as c:
        for _ in range(100):
            calls = c.get("/v1/calls", params={"transport": "sip"}).json()
            if calls and calls[0]["status"] != "active":
                break
            time.sleep(0.2)
        call = c.get(f"/v1/calls/{calls[0]['id']}").json()
        assert call["transport"] == "sip" and call["direction"] == "inbound" and call["status"] == "ended"
        assert call["end_reason"] == "caller-hangup"
        assert call["caller"] == "+15551230000" and call["called"] == sip.agent["name"]
        assert call["provider_call_id"]
        turns = {t["turn"]: t for t in call["turns"]}
        assert turns[0]["agent_text"].startswith("Hello")  # the greeting
        asked = " ".join(t["caller_text"].lower() for t in call["turns"])
        assert "opening hours" in asked or "saturday" in asked, asked
        assert any(t["turn"] > 0 and t["agent_text"] for t in call["turns"]), call["turns"]
        assert [e["data"]["digit"] for e in call["events"] if e["kind"] == "dtmf"] == ["1"]
        text = c.get(f"/v1/calls/{call['id']}/transcript", params={"format": "text"}).text
        assert "caller:" in text and "agent:" in text
        rec = c.get(f"/v1/calls/{call['id']}/recording")
        assert rec.status_code == 200
    wav_rec = read_wav(rec.content)
    assert wav_rec.channels == 2 and wav_rec.sample_rate == 8000
    assert wav_rec.duration == pytest.approx(call["duration_s"], abs=0.2)
    assert wav_rec.duration > len(pcm) / 8000 - 1
    log = Path(sip.service.log).read_text()
    assert "Traceback" not in log
