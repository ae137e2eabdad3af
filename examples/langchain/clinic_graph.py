"""An example LangGraph agent for Parley's ``langchain`` LLM provider: a clinic receptionist with one tool.

Two nodes: ``agent`` (a chat model that may call ``opening_hours``) and ``tools`` (LangGraph's ToolNode, which runs
it); the agent speaks once the tool has answered. The model is any OpenAI-compatible server (a local llama.cpp or
vLLM, or OpenAI), from the environment: ``CLINIC_LLM_BASE_URL``, ``CLINIC_LLM_MODEL``, ``CLINIC_LLM_API_KEY``.
Its HTTP client is Parley's SSRF-guarded one, so a private address must be in ``PARLEY_OUTBOUND_ALLOW``.

Agent document::

    llm:
      provider: langchain
      options:
        runnable: examples.langchain.clinic_graph:build
        speak_nodes: [agent]

with ``PARLEY_LANGCHAIN_ALLOW=examples.langchain`` in the server's environment.
"""

from __future__ import annotations

import os
from typing import Any

from langchain_core.messages import SystemMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from pydantic import SecretStr

from parley.net.ssrf import guarded_client

PROMPT = (
    "You are the receptionist of the Riverside Clinic, on the phone. Answer in one or two short sentences, "
    "without lists or markup. Use the opening_hours tool for any question about when the clinic is open."
)
HOURS = {
    "monday": "8 am to 6 pm",
    "tuesday": "8 am to 6 pm",
    "wednesday": "8 am to 1 pm",
    "thursday": "8 am to 6 pm",
    "friday": "8 am to 4 pm",
}


@tool
def opening_hours(day: str) -> str:
    """The clinic's opening hours on a day of the week, e.g. "Monday"."""
    hours = HOURS.get(day.strip().lower())
    return f"Open {hours} on {day}." if hours else f"Closed on {day}."


def build() -> CompiledStateGraph[Any, Any, Any, Any]:
    """A fresh graph per call (Parley calls this zero-argument factory when it creates the provider)."""
    model = ChatOpenAI(
        base_url=os.environ.get("CLINIC_LLM_BASE_URL", "http://127.0.0.1:8080/v1"),
        model=os.environ.get("CLINIC_LLM_MODEL", "local"),
        api_key=SecretStr(os.environ.get("CLINIC_LLM_API_KEY", "sk-no-key-required")),
        streaming=True,  # tokens reach the caller as they are generated
        max_retries=0,  # a caller is listening: fail fast, Parley speaks its recovery line
        http_async_client=guarded_client(),
    ).bind_tools([opening_hours])

    async def agent(state: MessagesState) -> dict[str, Any]:
        reply = await model.ainvoke([SystemMessage(PROMPT), *state["messages"]])
        return {"messages": [reply]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([opening_hours]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)  # a tool call goes to "tools", an answer ends the turn
    graph.add_edge("tools", "agent")
    return graph.compile()
