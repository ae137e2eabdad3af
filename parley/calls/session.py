"""A call session: an agent document turned into services and a pipeline for one transport.

The transport supplies how audio leaves (a playout sink); the session supplies
everything between the caller's audio and that sink. Models are loaded before the
call's clock starts, so a caller never waits for a cold model.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from parley.agent.context import Conversation
from parley.agent.document import AgentDocument, ServiceChoice, TTSChoice
from parley.agent.grounding import grounded
from parley.calls.knowledge import CallKnowledge, inline_document, mind_knowledge
from parley.calls.turnlog import TurnLog
from parley.flows import FlowState, IntentClassifier, classifier_for
from parley.offload import off_loop
from parley.pipeline.pipeline import Observer, Pipeline
from parley.processors.chunker import SentenceChunker
from parley.processors.flow_steps import FlowDriver, llm_router
from parley.processors.responder import Responder
from parley.processors.synthesizer import Synthesizer
from parley.processors.tool_use import ToolUse
from parley.processors.transcriber import Transcriber
from parley.processors.turns import TurnTaker
from parley.services.fallback.build import chain_provider
from parley.services.llm.base import LLM
from parley.services.llm.base import registry as llm_registry
from parley.services.registry import Registry
from parley.services.secrets import NoSecrets, SecretSource, resolve_provider_options
from parley.services.stt.base import STT
from parley.services.stt.base import registry as stt_registry
from parley.services.tts.base import TTS
from parley.services.tts.base import registry as tts_registry
from parley.services.tts.fallback import create_tts
from parley.services.turn.judge import EndOfTurnJudge
from parley.services.vad.base import VAD
from parley.services.vad.base import registry as vad_registry
from parley.tools.base import ToolContext
from parley.tools.runner import ToolRunner
from parley.tools.toolbox import Toolbox
from parley.transports.playout import FrameSink, PlayedFrames, Playout

log = structlog.get_logger(__name__)


@dataclass
class Services:
    """The providers one call uses."""

    vad: VAD
    stt: STT
    llm: LLM
    tts: TTS
    #: the agent's tools for this call (MCP sessions are per call); entries that failed are in ``tools.problems``
    tools: Toolbox = field(default_factory=Toolbox)
    #: the flow's intent classifier (examples embedded at load; None: no flow or no intent edges)
    intents: IntentClassifier | None = None
    #: flow node → that node's own LLM (its ``llm:`` override)
    node_llms: dict[str, LLM] = field(default_factory=dict)
    #: the tenant's knowledge base for this call (set at a live call's set-up; None: none was opened)
    knowledge: CallKnowledge | None = None

    @classmethod
    async def create(
        cls, agent: AgentDocument, secrets: SecretSource | None = None, tool_mocks: Mapping[str, Any] | None = None
    ) -> Services:
        """Create providers, load their models off the event loop, and prepare them.

        ``secrets`` supplies the credentials the document names: the call's tenant's in ``parley serve``, the
        allow-listed environment in the local CLI; without one, a document that names a secret cannot start."""
        services = await cls.load(agent, secrets, tool_mocks)
        try:
            await services.prepare(agent)
        except BaseException:
            await asyncio.shield(services.aclose())
            raise
        return services

    @classmethod
    async def load(
        cls, agent: AgentDocument, secrets: SecretSource | None = None, tool_mocks: Mapping[str, Any] | None = None
    ) -> Services:
        """:meth:`create` without the preparation step (for callers that make it cancellable); ``tool_mocks``
        replace the named tools by fixed results (``parley test``)."""
        source = secrets or NoSecrets()
        vad = vad_registry.create(agent.vad.provider, agent.vad.options)
        stt, llm, tts, tools = await asyncio.gather(
            _stage(agent.stt, "stt", stt_registry, source),
            _stage(agent.llm, "llm", llm_registry, source),
            _stage(agent.tts, "tts", tts_registry, source),
            Toolbox.open(agent.tools, source, tool_mocks),
        )
        intents = classifier_for(agent.flow) if agent.flow is not None else None
        if intents is not None:
            await intents.prepare()
        node_llms = await _node_llms(agent, source)
        return cls(vad=vad, stt=stt, llm=llm, tts=tts, tools=tools, intents=intents, node_llms=node_llms)

    async def prepare(self, agent: AgentDocument) -> None:
        llms = [self.llm, *self.node_llms.values()]
        await asyncio.gather(self.stt.prepare(), self.tts.prepare(), *(m.prepare() for m in llms))
        conversation = Conversation(agent.system_prompt, agent.max_history_turns, agent.greeting)
        await self.llm.warm(conversation.system_messages())

    async def aclose(self) -> None:
        closing = [self.stt.aclose(), self.llm.aclose(), self.tts.aclose(), self.tools.aclose()]
        await asyncio.gather(*closing, *(m.aclose() for m in self.node_llms.values()), return_exceptions=True)


async def _node_llms(agent: AgentDocument, source: SecretSource) -> dict[str, LLM]:
    """The flow nodes' own LLMs, with their secrets resolved like the agent's."""
    out: dict[str, LLM] = {}
    for name, node in agent.flow.nodes.items() if agent.flow is not None else ():
        if node.llm is not None:
            opts = await _resolved(llm_registry, node.llm.provider, node.llm.options, source, f"flow.nodes.{name}.llm")
            out[name] = await off_loop(llm_registry.create, node.llm.provider, opts)
    return out


async def _stage(choice: ServiceChoice, stage: str, registry: Registry[Any], source: SecretSource) -> Any:
    """A stage's provider: the one the document names, or a fallback chain when it lists ``fallback`` links."""
    if links := choice.chain():
        return await chain_provider(stage, registry, links, source)
    options = await _resolved(registry, choice.provider, choice.options, source, stage)
    if isinstance(choice, TTSChoice):
        return await off_loop(create_tts, choice.provider, options, choice.engine_fallback)
    return await off_loop(registry.create, choice.provider, options)


async def _resolved(
    registry: Registry[Any], provider: str, options: dict[str, Any], source: SecretSource, where: str
) -> dict[str, Any]:
    """A stage's options with the secrets it references filled in (unchanged for providers without secrets)."""
    return await resolve_provider_options(registry, provider, options, source, where)


@dataclass
class CallPipeline:
    """The pieces of one call that its transport and its record need to reach."""

    pipeline: Pipeline
    turns: TurnTaker
    playout: Playout
    turn_log: TurnLog
    conversation: Conversation


def fallback_voice(agent: AgentDocument) -> Callable[[], TTS] | None:
    """How to make the voice that says the fallback line when the call's TTS fails (None: not configured)."""
    name = agent.tts.engine_fallback
    if not name or name == agent.tts.provider:
        return None
    return functools.partial(tts_registry.create, name)


def build_responder(
    agent: AgentDocument,
    services: Services,
    conversation: Conversation,
    variables: Mapping[str, Any] | None = None,
) -> Responder:
    """The agent's mind for one call: its LLM (grounded as the document says), actions, tools and flow.

    ``variables`` seed the call's variables (caller, called, call_id, a test's values) that tools read and set.
    The audio pipeline and the text-only runs of ``parley test`` both take it from here.
    """
    call_variables = {"agent": agent.name, **(variables or {})}  # one dict: tools and the flow read and set it
    flow = None
    if agent.flow is not None:
        state = FlowState(agent.flow, services.intents, llm_router(services.llm))
        providers = {name: node.llm.provider for name, node in agent.flow.nodes.items() if node.llm is not None}
        node_llms = {n: grounded(m, agent.grounding, providers[n]) for n, m in services.node_llms.items()}
        flow = FlowDriver(state, conversation, call_variables, node_llms)
    knowledge = mind_knowledge(agent.knowledge, services.knowledge, flow)
    tools = {**services.tools.tools, **({knowledge.tool.name: knowledge.tool} if knowledge.tool else {})}
    tool_use = None
    if tools:
        context = ToolContext(call_id=str(call_variables.get("call_id", "")), variables=call_variables)
        tool_use = ToolUse(ToolRunner(tools), conversation, context, agent.tool_use)
    return Responder(
        grounded(services.llm, agent.grounding, agent.llm.provider),
        conversation,
        agent.actions,
        fallback_line=agent.fallback_line,
        tool_use=tool_use,
        startup_events=[*services.tools.problems, *knowledge.events],
        flow=flow,
        knowledge=knowledge.lookup,
    )


async def warm_for_call(agent: AgentDocument, services: Services) -> None:
    """Start the LLM on the system prompt this call really has (what is remembered about the caller, a small
    collection's facts), while the greeting plays: :meth:`Services.prepare` warmed the saved document's, and a
    first turn would otherwise evaluate the difference. Pooled contexts keep it for the agent's next calls."""
    agent = inline_document(agent, services.knowledge)
    conversation = Conversation(agent.system_prompt, agent.max_history_turns, agent.greeting)
    try:
        await services.llm.warm(conversation.system_messages())
    except Exception as exc:  # the first turn evaluates the prompt itself
        log.warning("llm_warm_failed", error=type(exc).__name__)


def build_pipeline(
    agent: AgentDocument,
    services: Services,
    sink: FrameSink,
    sample_rate: int,
    observers: list[Observer] | None = None,
    played_frames: PlayedFrames | None = None,
    idle_silence: bool = True,
    variables: Mapping[str, Any] | None = None,
) -> CallPipeline:
    """The processors of a call, in order, ending in a paced playout to ``sink``."""
    agent = inline_document(agent, services.knowledge)  # small collections: their facts in the system prompt
    turn_log = TurnLog()
    # the transcriber sends every transcript up to the turn taker too: the judge reads it as a cue
    judge = EndOfTurnJudge(agent.turn, expect_transcripts=True)
    silence = agent.flow.silence_timeout_secs if agent.flow is not None and agent.flow.listens_to_silence() else None
    turns = TurnTaker(
        services.vad, agent.vad, agent.turn, agent.interruptions, agent.actions, judge=judge,
        silence_timeout_secs=silence,
    )  # fmt: skip
    playout = Playout(sample_rate, sink, played_frames=played_frames, idle_silence=idle_silence)
    conversation = Conversation(agent.system_prompt, agent.max_history_turns, agent.greeting)
    transcriber = Transcriber(services.stt, agent.language)
    turns.stream_audio = transcriber.streaming is not None  # a streaming recognizer hears the caller as they speak
    pipeline = Pipeline(
        [
            turns,
            transcriber,
            build_responder(agent, services, conversation, variables),
            SentenceChunker(first_max_words=agent.tts.first_piece_max_words),
            Synthesizer(services.tts, sample_rate, agent.fallback_line, fallback_voice(agent)),
            playout,
        ],
        observers=[turn_log, *(observers or [])],
    )
    return CallPipeline(pipeline, turns, playout, turn_log, conversation)
