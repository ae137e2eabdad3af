"""Simulated callers: an LLM plays a persona with a goal against the agent (in text), another judges the call.

Any OpenAI-compatible endpoint serves (a local llama.cpp or vLLM server, a hosted API); its key comes from the
environment variable the scenario names, never from the tests file. Deterministic scenarios never get here.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from openai import AsyncOpenAI

from parley.agent.document import AgentDocument
from parley.calls.session import Services
from parley.net.ssrf import guarded_client
from parley.testing.expect import CallResult, Failure
from parley.testing.results import ScenarioResult, ScenarioRun
from parley.testing.scenarios import Endpoint, Simulated
from parley.testing.text_call import MindOptions, TextCall, with_tools

DONE = "[DONE]"  # the caller model says this when its goal is reached or it gives up

CALLER_PROMPT = """You are a person phoning a business; you are talking to its voice agent.
Who you are: {persona}
What you want: {goal}
Say one short sentence per turn, as a caller would speak it. When your goal is reached, or the call cannot \
help you, reply only {done}."""

JUDGE_PROMPT = """You judge a phone call between a caller and a voice agent against success criteria.
Answer with JSON only: {{"criteria": [{{"criterion": "...", "met": true|false, "why": "..."}}]}}, one entry per \
criterion, in order."""


def _client(endpoint: Endpoint) -> AsyncOpenAI:
    key = os.environ.get(endpoint.api_key_env, "") if endpoint.api_key_env else ""
    # through the SSRF guard like every user-given URL: a local server needs PARLEY_OUTBOUND_ALLOW
    return AsyncOpenAI(
        base_url=endpoint.base_url,
        api_key=key or "not-needed",
        max_retries=0,
        timeout=60,
        http_client=guarded_client(),  # type: ignore[arg-type]
    )


async def _complete(client: AsyncOpenAI, endpoint: Endpoint, messages: list[dict[str, str]]) -> str:
    response = await client.chat.completions.create(
        model=endpoint.model,
        messages=messages,  # type: ignore[arg-type]
        temperature=endpoint.temperature,
    )
    return (response.choices[0].message.content or "").strip()


async def _converse(sim: Simulated, call: TextCall, caller: AsyncOpenAI) -> None:
    """The caller model talks to the agent until it is done, the agent ends the call, or turns run out."""
    system = CALLER_PROMPT.format(persona=sim.persona, goal=sim.goal, done=DONE)
    # the caller model's view: the agent speaks as "user", the caller's own lines are "assistant"
    history = [{"role": "system", "content": system}, {"role": "user", "content": await call.start() or "(silence)"}]
    for _ in range(sim.max_turns):
        line = await _complete(caller, sim.caller_llm, history)
        if not line or DONE in line:
            return
        turn = await call.say(line)
        history += [{"role": "assistant", "content": line}, {"role": "user", "content": turn.reply or "(silence)"}]
        if call.ended:
            return


def transcript(result: CallResult) -> str:
    lines = [f"agent: {result.greeting}"] if result.greeting else []
    for t in result.turns:
        lines += [f"caller: {t.heard}", f"agent: {t.reply}"]
        lines += [f"(agent action: {a['action']} {a['target']})".rstrip() for a in t.actions]
    return "\n".join(lines)


async def judge(endpoint: Endpoint, criteria: list[str], result: CallResult) -> list[Failure]:
    """One failure (kind ``judge``) per criterion the judge says was not met, or one if its verdict is unreadable."""
    client = _client(endpoint)
    try:
        listed = "\n".join(f"{i + 1}. {c}" for i, c in enumerate(criteria))
        messages = [
            {"role": "system", "content": JUDGE_PROMPT},
            {"role": "user", "content": f"Criteria:\n{listed}\n\nCall:\n{transcript(result)}"},
        ]
        answer = await _complete(client, endpoint, messages)
    finally:
        await client.close()
    return verdict_failures(answer, criteria)


def verdict_failures(answer: str, criteria: list[str]) -> list[Failure]:
    start, end = answer.find("{"), answer.rfind("}")
    try:
        verdicts: list[dict[str, Any]] = json.loads(answer[start : end + 1])["criteria"]
    except (ValueError, KeyError, TypeError):
        return [Failure("judge", f"the judge's answer is not the JSON asked for: {answer[:200]!r}")]
    if len(verdicts) != len(criteria):
        return [Failure("judge", f"the judge rated {len(verdicts)} criteria, not {len(criteria)}")]
    return [
        Failure("judge", f"not met: {c} ({v.get('why', '')})".strip())
        for c, v in zip(criteria, verdicts, strict=True)
        if v.get("met") is not True
    ]


async def _one(sim: Simulated, agent: AgentDocument, services: Services, index: int) -> ScenarioRun:
    run = ScenarioRun(index, None, tool_mocks=dict(sim.tool_mocks))
    started = time.perf_counter()
    mind = MindOptions(dict(sim.variables), run.tool_mocks)
    caller = _client(sim.caller_llm)
    try:
        own, box = await with_tools(agent, services, mind)
        call = TextCall(agent, own, mind)
        try:
            await _converse(sim, call, caller)
        finally:
            run.result = await call.close()
            await caller.close()
            if box is not None:
                await box.aclose()
        run.failures = [Failure("error", e) for e in run.result.errors]
        run.failures += await judge(sim.judge or sim.caller_llm, sim.success, run.result)
    except Exception as exc:  # an endpoint down, a timeout: this run failed, the others may not
        run.failures = [Failure("crash", f"{type(exc).__name__}: {exc}")]
    run.duration_s = time.perf_counter() - started
    return run


async def run_simulated(
    sim: Simulated, agent: AgentDocument, services: Services, repeat: int | None = None
) -> ScenarioResult:
    out = ScenarioResult(sim.name, "simulated")
    for i in range(repeat or sim.repeat):
        out.runs.append(await _one(sim, agent, services, i))
    return out
