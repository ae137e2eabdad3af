"""A softphone (baresip) calls an agent: what the caller hears is recorded and transcribed by Parley's Whisper.

baresip speaks from a WAV (the ``aufile`` source) and hangs up when the file ends. baresip 1.0 has no
file player, so the ``sndfile`` filter records the decoded far-end audio while ``aubridge`` plays it to
nowhere. The test then checks the greeting and the agent's answer are in that recording.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from parley.audio import read_wav, resample, write_wav
from parley.calls.synthetic_caller import speak
from parley.services.stt.base import registry as stt_registry

from .support.sip import SipService, free_udp_port, need, sip_service


@pytest.fixture(scope="module")
def sip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SipService]:
    with sip_service(tmp_path_factory.mktemp("sip-baresip")) as svc:
        yield svc


def baresip_config(conf: Path, source: Path, dumps: Path) -> None:
    conf.mkdir(parents=True)
    dumps.mkdir(parents=True)
    base = free_udp_port() // 2 * 2
    (conf / "config").write_text(
        f"poll_method epoll\nsip_listen 127.0.0.1:{free_udp_port()}\n"
        f"audio_source aufile,{source}\naudio_player aubridge,nowhere\naudio_alert aubridge,nowhere\n"
        f"module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\nmodule aubridge.so\n"
        f"module sndfile.so\nmodule_tmp account.so\nmodule_app menu.so\nsnd_path {dumps}\n"
        f"rtp_ports {base}-{base + 20}\n"
    )
    (conf / "accounts").write_text("<sip:softphone@127.0.0.1>;regint=0;audio_codecs=PCMU\n")
    (conf / "contacts").write_text("")


async def transcribe(pcm8k: np.ndarray) -> str:
    stt = stt_registry.create("whisper", {})
    await stt.prepare()
    try:
        return await stt.transcribe(resample(pcm8k, 8000, 16000).astype("<i2").tobytes())
    finally:
        await stt.aclose()


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_baresip_hears_the_greeting_and_an_answer(sip: SipService, tmp_path: Path) -> None:
    baresip = need("baresip")
    question = asyncio.run(speak("What are your opening hours on Saturday?", "joe-quick", rate=8000))
    pcm = np.concatenate([np.zeros(8000 * 6, np.int16), question, np.zeros(8000 * 8, np.int16)])
    write_wav(tmp_path / "in.wav", pcm, 8000)
    baresip_config(tmp_path / "conf", tmp_path / "in.wav", tmp_path / "heard")
    uri = f"sip:{sip.agent['name']}@127.0.0.1:{sip.sip_port}"
    # -n 127.0.0.1: the SDP names the address baresip really sends from (not eth0's)
    run = subprocess.run(
        [baresip, "-f", str(tmp_path / "conf"), "-n", "127.0.0.1", "-e", f"d {uri}", "-t", "40"],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert "Call established" in output, output[-3000:]
    heard_files = list((tmp_path / "heard").glob("*-dec.wav"))
    assert heard_files, output[-3000:]
    heard = read_wav(heard_files[0])
    assert heard.sample_rate == 8000 and heard.duration > 10

    with sip.service.client(sip.key) as c:
        for _ in range(100):
            calls = c.get("/v1/calls", params={"transport": "sip"}).json()
            if calls and calls[0]["status"] != "active":
                break
            time.sleep(0.2)
        call = c.get(f"/v1/calls/{calls[0]['id']}").json()
    assert call["end_reason"] == "caller-hangup" and call["caller"] == "softphone"
    answer = next(t["agent_text"] for t in call["turns"] if t["turn"] == 1)

    text = asyncio.run(transcribe(heard.mono()))
    assert "bright smile" in text.lower(), text  # the greeting
    common = words(answer) & words(text) - words("hello thank you for calling bright smile dental how can i help today")
    assert len(common) >= 3, f"answer {answer!r} not in what the caller heard: {text!r}"
