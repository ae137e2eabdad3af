"""What an agent document stored through the API may not hold (checked when it is saved, so the API says 422).

A stored document is readable by every viewer of its tenant and runs in the server's process, so it may not
carry a secret inline, may not name a server environment variable, and may not point a provider at an address
the outbound guard refuses outright (a literal loopback/private/metadata address, a non-HTTP scheme). Names are
judged again when a call connects: the connect-time guard is the real defence.
"""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError

from parley.agent.document import AgentDocument
from parley.config import Settings
from parley.net.ssrf import OutboundPolicy
from parley.services.llm.base import registry as llm_registry
from parley.services.registry import Registry, UnknownProvider
from parley.services.secrets import Problem, stored_document_problems
from parley.services.stt.base import registry as stt_registry
from parley.services.tts.base import registry as tts_registry
from parley.services.vad.base import registry as vad_registry


def storable_problems(doc: AgentDocument, outbound: OutboundPolicy) -> list[Problem]:
    stages: list[tuple[str, type[Any], dict[str, Any]]] = []
    choices: list[tuple[str, Registry[Any], str, dict[str, Any]]] = [
        ("stt", stt_registry, doc.stt.provider, doc.stt.options),
        ("llm", llm_registry, doc.llm.provider, doc.llm.options),
        ("tts", tts_registry, doc.tts.provider, doc.tts.options),
        ("vad", vad_registry, doc.vad.provider, doc.vad.options),
    ]
    # every provider a call may reach: fallback links and flow nodes' own LLMs are held to the same rules
    for stage, registry, choice in (("stt", stt_registry, doc.stt), ("llm", llm_registry, doc.llm),
                                    ("tts", tts_registry, doc.tts)):  # fmt: skip
        for i, link in enumerate(choice.chain()[1:]):
            choices.append((f"{stage}.fallback.{i}", registry, link.provider, link.options))
    for name, node in doc.flow.nodes.items() if doc.flow is not None else ():
        if node.llm is not None:
            choices.append((f"flow.nodes.{name}.llm", llm_registry, node.llm.provider, node.llm.options))
    if doc.analysis is not None and doc.analysis.llm is not None:
        choices.append(("analysis.llm", llm_registry, doc.analysis.llm.provider, doc.analysis.llm.options))
    for stage, registry, provider, options in choices:
        try:
            options_cls = getattr(registry.get(provider), "Options", None)
        except UnknownProvider:
            continue  # the document's own validation reported it
        if options_cls is not None:
            stages.append((stage, options_cls, options))
    return stored_document_problems(stages, outbound.url_problem) + _tool_problems(doc, outbound)


def _tool_problems(doc: AgentDocument, outbound: OutboundPolicy) -> list[Problem]:
    """A stored document's tools may call URLs the guard allows; they may not run code in the server's process:
    a Python tool imports a module, a stdio MCP server is a command. Those are for documents the operator runs
    (``parley call``, ``parley test``)."""
    problems: list[Problem] = []
    for i, tool in enumerate(doc.tools):
        where = ("tools", str(i))
        kind = getattr(tool, "type", "")
        server = getattr(tool, "server", None)
        if kind == "python":
            problems.append(Problem((*where, "type"), "Python tools run code in the server: only local documents"))
        elif server is not None and getattr(server, "command", None):
            problems.append(Problem((*where, "server", "command"), "a stdio MCP server is a command: use a url"))
        for loc, url in (
            ((*where, "url"), getattr(tool, "url", None)),
            ((*where, "server", "url"), getattr(server, "url", None)),
        ):
            if isinstance(url, str) and (problem := outbound.url_problem(url)):
                problems.append(Problem(loc, f"the URL {problem}"))
    return problems


def check_storable(doc: AgentDocument, settings: Settings) -> None:
    """RequestValidationError (422, each field named, no value quoted) for what a stored document may not hold."""
    problems = storable_problems(doc, OutboundPolicy.parse(settings.outbound_allow))
    if problems:
        raise RequestValidationError([{"loc": ("body", *p.loc), "msg": p.msg, "type": "value_error"} for p in problems])
