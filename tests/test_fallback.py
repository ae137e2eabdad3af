"""Fallback chains, end to end: an LLM that fails before or after speaking, a voice that fails mid-sentence, a
recognizer that fails mid-utterance; breakers shared across calls, synthetic probes, failback at a turn boundary.

The cloud LLM is the real ``openai`` provider (the official SDK) against a local server that speaks OpenAI's
documented chat-completions streaming format (tests/support/fakes/openai_chat.py) with a fault switch per request;
the last link is a local provider, as the embedded stack would be.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from parley.agent.document import AgentDocumentError, parse_agent
from parley.agent.storable import storable_problems
from parley.net.ssrf import OutboundPolicy
from parley.services.fallback import breaker as breakers
from parley.services.fallback.build import chain_provider
from parley.services.fallback.config import FallbackLink
from parley.services.fallback.llm import CONTINUE_NOTE, PROBE_MESSAGES, FallbackLLM
from parley.services.llm.base import registry as llm_registry
from parley.services.secrets import NoSecrets
from parley.services.stt.base import registry as stt_registry
from parley.services.tts.base import registry as tts_registry
from parley.testing import run_text

from .support.fakes import flaky_speech
from .support.fakes.openai_chat import REPLY, FakeChat, serve_chat


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "127.0.0.1")  # the fake cloud is local
    breakers.reset_breakers()
    flaky_speech.ASKED_TTS.clear()
    flaky_speech.ASKED_STT.clear()
    yield
    breakers.reset_breakers()


@pytest.fixture(scope="module")
def chat() -> Iterator[FakeChat]:
    yield from serve_chat()


def _cloud(chat: FakeChat, model: str, **deadlines: float) -> dict[str, Any]:
    link: dict[str, Any] = {"provider": "openai", "options": {"base_url": chat.url, "model": model,
                            "api_key": "sk-test-secret-key", "max_retries": 0, "preconnect": False}}  # fmt: skip
    if deadlines:
        link["deadlines"] = deadlines
    return link


def _llm_chain(chat: FakeChat, *models: str, **deadlines: float) -> list[FallbackLink]:
    links = [FallbackLink.model_validate(_cloud(chat, m, **deadlines)) for m in models]
    return [*links, FallbackLink(provider="canned", options={"default": "Local model here."})]


async def _reply(llm: FallbackLLM) -> str:
    return "".join(
        [p async for p in llm.stream([{"role": "user", "content": "When do you open?"}]) if isinstance(p, str)]
    )


async def _chain_llm(chat: FakeChat, *models: str, **deadlines: float) -> FallbackLLM:
    llm = await chain_provider("llm", llm_registry, _llm_chain(chat, *models, **deadlines), NoSecrets())
    assert isinstance(llm, FallbackLLM)
    return llm


def _kinds(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e.get("kind") or e.get("state") or e.get("provider", "")) for e in events]


async def test_a_reply_cut_mid_stream_is_continued_by_the_next_provider_from_what_was_said(chat: FakeChat) -> None:
    llm = await _chain_llm(chat, "die-after-3", "ok")
    text = await _reply(llm)
    said = " ".join(REPLY.split()[:3]) + " "
    assert text.startswith(said) and text[len(said) :] == REPLY + " "  # the fake repeats; the prefix is kept
    follow_up = chat.asked("ok")[-1]["messages"]
    assert follow_up[-2] == {"role": "assistant", "content": said}
    assert follow_up[-1] == {"role": "system", "content": CONTINUE_NOTE}
    events = llm.chain.drain()
    error = next(e for e in events if e["type"] == "provider_error")
    assert error["mid_output"] is True and error["kind"] in ("connection", "server")
    assert ("provider_switch", "openai") in _kinds(events) and events[-1]["type"] == "served"
    await llm.aclose()


async def test_keep_alives_are_not_progress_the_first_output_deadline_switches(chat: FakeChat) -> None:
    llm = await _chain_llm(chat, "keepalive-hang", first_s=0.5, stall_s=0.5)
    started = time.perf_counter()
    assert await _reply(llm) == "Local model here."
    assert time.perf_counter() - started < 2.0
    assert ("provider_error", "timeout") in _kinds(llm.chain.drain())
    await llm.aclose()


@pytest.mark.parametrize(("mode", "kind"), [("500-html", "server"), ("garbage", None), ("slow-first", "timeout")])
async def test_broken_answers_fall_back_within_the_deadline(chat: FakeChat, mode: str, kind: str | None) -> None:
    llm = await _chain_llm(chat, mode, first_s=1.0)
    assert await _reply(llm) == "Local model here."
    errors = [e for e in llm.chain.drain() if e["type"] == "provider_error"]
    assert len(errors) == 1 and (kind is None or errors[0]["kind"] == kind)
    await llm.aclose()


async def test_a_rate_limit_opens_the_breaker_for_retry_after_and_later_calls_skip_it(chat: FakeChat) -> None:
    llm = await _chain_llm(chat, "429")
    assert await _reply(llm) == "Local model here."
    primary = llm.chain.links[0].breaker
    assert primary.state == "open" and primary.reopen_at - time.monotonic() > 5  # Retry-After: 7
    asked = len(chat.asked("429"))
    other_call = await _chain_llm(chat, "429")  # a second call of the process: the same breaker
    assert await _reply(other_call) == "Local model here." and len(chat.asked("429")) == asked
    await llm.aclose()
    await other_call.aclose()


async def test_a_rejected_key_takes_the_provider_out_and_no_probe_retries_it(chat: FakeChat) -> None:
    llm = await _chain_llm(chat, "401")
    assert await _reply(llm) == "Local model here."
    primary = llm.chain.links[0].breaker
    assert primary.state == "disabled"
    primary.reopen_at = 0
    assert await _reply(llm) == "Local model here." and len(chat.asked("401")) == 1


async def test_a_recovered_primary_is_probed_synthetically_and_serves_from_the_next_turn(chat: FakeChat) -> None:
    chat.modes["flappy"] = "500-html"
    llm = await _chain_llm(chat, "flappy")
    assert await _reply(llm) == "Local model here."
    chat.modes["flappy"] = "ok"  # the outage ends
    llm.chain.links[0].breaker.reopen_at = 0  # its cool-down is over
    assert await _reply(llm) == "Local model here."  # this turn: still elsewhere while the probe runs
    for _ in range(50):
        await asyncio.sleep(0.02)
        if llm.chain.links[0].breaker.state == "closed":
            break
    probe = chat.asked("flappy")[-1]["messages"]
    assert probe == PROBE_MESSAGES  # never a copy of the caller's words
    assert await _reply(llm) == REPLY + " "  # the next turn: back on the primary
    assert ("probe", "openai") in [(e["type"], e["provider"]) for e in llm.chain.drain()]
    await llm.aclose()


async def test_a_call_hears_the_whole_reply_and_the_turn_record_names_the_switch(chat: FakeChat) -> None:
    local = {"provider": "canned", "options": {"default": "we open at eight."}}
    llm = {**_cloud(chat, "die-after-4"), "fallback": [local]}
    doc = parse_agent({"name": "chain", "system_prompt": "You answer the phone.", "llm": llm})
    result = await run_text(doc, ["When do you open?"])
    turn = result.turns[0]
    assert turn.reply.startswith("The clinic opens at") and turn.reply.endswith("we open at eight.")
    kinds = [e["type"] for e in turn.events]
    assert "provider_error" in kinds and "provider_switch" in kinds and {"type": "served", "stage": "llm",
           "provider": "canned"} in turn.events  # fmt: skip


async def test_a_voice_that_fails_mid_sentence_is_resumed_by_the_next_from_the_unspoken_words() -> None:
    sentence = "Your appointment is on Monday at ten in the morning with doctor Rao."
    links = [FallbackLink(provider="flaky-tts", options={"name": "a", "fail_after_chunks": 30}),
             FallbackLink(provider="flaky-tts", options={"name": "b", "rate": 24000})]  # fmt: skip
    tts = await chain_provider("tts", tts_registry, links, NoSecrets())
    audio = b"".join([c async for c in tts.synthesize(sentence)])
    (rest,) = flaky_speech.ASKED_TTS["b"]
    assert sentence.endswith(rest) and 0 < len(rest) < len(sentence) - 30  # resumed (3 s said), not restarted
    assert rest.split()[0] in sentence.split()  # from a word boundary
    spoken_secs = len(audio) / 2 / tts.sample_rate
    assert spoken_secs > 3.0  # a's first 3 s, then b's remainder (resampled to a's rate)
    assert [e["type"] for e in tts.chain.drain()][:3] == ["provider_error", "breaker", "provider_switch"]


async def test_a_hung_voice_is_left_within_its_first_audio_deadline() -> None:
    links = [FallbackLink(provider="flaky-tts", options={"name": "a", "hang": True}, deadlines={"first_s": 0.3}),
             FallbackLink(provider="flaky-tts", options={"name": "b"})]  # fmt: skip
    tts = await chain_provider("tts", tts_registry, links, NoSecrets())
    started = time.perf_counter()
    assert [c async for c in tts.synthesize("Hello there.")]
    assert time.perf_counter() - started < 1.5 and flaky_speech.ASKED_TTS["b"] == ["Hello there."]


async def test_a_recognizer_that_fails_mid_utterance_hands_the_same_audio_to_the_next() -> None:
    links = [FallbackLink(provider="flaky-stt", options={"name": "a", "fail": True}),
             FallbackLink(provider="flaky-stt", options={"name": "b", "text": "book me in", "rate": 8000})]  # fmt: skip
    stt = await chain_provider("stt", stt_registry, links, NoSecrets())
    pcm = bytes(16000 * 2)  # one second at the chain's 16 kHz
    assert await stt.transcribe(pcm) == "book me in"
    assert flaky_speech.ASKED_STT == {"a": [32000], "b": [16000]}  # the same second, at b's 8 kHz


async def test_a_link_that_cannot_be_made_is_left_out_with_an_event() -> None:
    links = [FallbackLink(provider="openai", options={"model": "x", "api_key_env": "NOT_ALLOWED_VAR"}),
             FallbackLink(provider="canned", options={"default": "Here."})]  # fmt: skip
    llm = await chain_provider("llm", llm_registry, links, NoSecrets())
    assert [link.name for link in llm.chain.links] == ["canned"]
    assert llm.chain.drain()[0]["before_call"] is True


def test_fallback_links_are_validated_and_held_to_the_stored_document_rules() -> None:
    with pytest.raises(AgentDocumentError, match=r"llm\.fallback\.0\.provider: unknown llm provider"):
        parse_agent(
            {"name": "x", "system_prompt": "y", "llm": {"provider": "canned", "fallback": [{"provider": "nope"}]}}
        )
    inline = {"model": "m", "api_key": "sk-inline", "base_url": "http://10.0.0.1/v1"}
    llm = {"provider": "canned", "fallback": [{"provider": "openai", "options": inline}]}
    doc = parse_agent({"name": "x", "system_prompt": "y", "llm": llm})
    problems = {p.loc for p in storable_problems(doc, OutboundPolicy.parse(""))}
    assert ("llm.fallback.0", "options", "api_key") in problems
    assert ("llm.fallback.0", "options", "base_url") in problems


async def test_azure_primary_openai_fallback_local_last(chat: FakeChat) -> None:
    """The documented Azure shape (deployment in the path, ``api-key`` header, ``api-version``) on the fake."""
    azure = {"provider": "azure", "options": {"azure_endpoint": chat.url.removesuffix("/v1"), "azure_deployment":
             "die-after-2", "api_key": "azure-secret", "max_retries": 0, "preconnect": False}}  # fmt: skip
    links = [FallbackLink.model_validate(azure), *_llm_chain(chat, "ok")]
    llm = await chain_provider("llm", llm_registry, links, NoSecrets())
    text = await _reply(llm)
    assert text.startswith("The clinic ") and text.endswith(REPLY + " ")
    (asked,) = chat.asked("die-after-2")
    assert asked["api_key_header"] == "azure-secret"
    assert [e["provider"] for e in llm.chain.drain() if e["type"] == "provider_switch"] == ["openai"]
    await llm.aclose()
