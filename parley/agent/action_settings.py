"""What an agent may do to its call besides talking: hang up, transfer, act on keypad digits.

The LLM sees each allowed action as a tool; :meth:`ActionSettings.resolve` checks what it asks for, so a model
can never transfer a caller where the document does not allow.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from parley.agent.limits import MAX_LINE_CHARS, MAX_TRANSFER_TARGETS, Line
from parley.pipeline.frames import DTMF_DIGITS, is_dtmf_digit
from parley.services.llm.base import Tool, ToolCall


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: what the agent can do to the call besides talking
ActionName = Literal["hang_up", "transfer"]
DIGITS_PATTERN = f"^[{re.escape(DTMF_DIGITS)}]{{1,32}}$"  # keys the agent may press in one action
_TARGET = re.compile(r"[^\s\x00-\x1f]{1,256}")  # a phone number or SIP URI: one token, no control characters


def _target(v: str) -> str:
    if not _TARGET.fullmatch(v):
        raise ValueError(f"must be a phone number or SIP URI (one word, at most 256 characters), not {v!r}")
    return v


Target = Annotated[str, AfterValidator(_target)]


class KeypadAction(_Strict):
    """What a keypad digit does at once, without asking the LLM."""

    action: ActionName
    target: Target | None = Field(None, description="transfer: a number/URI or a transfer_targets name")
    reason: Line = Field("", max_length=MAX_LINE_CHARS)


class ResolvedAction(NamedTuple):
    """An LLM's tool call checked against the document; ``refused`` is empty when it may be carried out."""

    action: str  # an ActionName, or the unknown name the model asked for (refused)
    target: str
    reason: str
    refused: str = ""


class KeypadHit(NamedTuple):
    """What a mapped keypad digit does (always allowed: the document names it)."""

    action: ActionName
    target: str
    reason: str


class ActionSettings(_Strict):
    """What the agent may do to the call besides talking.

    The LLM gets a tool per allowed action (``hang_up``, ``transfer``); keypad digits in
    ``dtmf`` act at once (they need no ``hang_up``/``transfer_to`` permission: the
    document names them explicitly). Other digits are collected and answered as a turn.
    """

    hang_up: bool = Field(False, description="the agent may end the call (LLM tool / canned rule)")
    send_dtmf: bool = Field(
        False, description="the agent may press keys on the call (an IVR menu on an outbound call): LLM tool"
    )
    transfer_to: Target | None = Field(None, description="default transfer destination")
    transfer_targets: dict[Annotated[Line, Field(max_length=64)], Target] = Field(
        default_factory=dict, max_length=MAX_TRANSFER_TARGETS, description="name → number/URI"
    )
    dtmf: dict[str, KeypadAction] = Field(default_factory=dict, description="keypad digit → action")
    keypad_timeout_secs: float = Field(
        1.5, ge=0.2, le=10, description="pause after the last digit that ends a keypad entry ('#' ends it at once)"
    )

    @field_validator("transfer_targets")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        if any(not name.strip() for name in v):
            raise ValueError("transfer target names must not be blank")
        return v

    @field_validator("dtmf")
    @classmethod
    def _digits(cls, v: dict[str, KeypadAction]) -> dict[str, KeypadAction]:
        for digit in v:
            if not is_dtmf_digit(digit):
                raise ValueError(f"{digit!r} is not a keypad digit (one of {DTMF_DIGITS})")
        return v

    @model_validator(mode="after")
    def _keypad_targets(self) -> ActionSettings:
        for digit, k in self.dtmf.items():
            if k.action == "transfer" and k.target is None and not self.transfer_to:
                raise ValueError(f"dtmf {digit!r}: a transfer needs a target (or actions.transfer_to)")
        return self

    @property
    def can_transfer(self) -> bool:
        return bool(self.transfer_to or self.transfer_targets)

    def tools(self) -> list[Tool]:
        """The actions the LLM may take, described so it knows when to use them and where a transfer may go."""
        tools: list[Tool] = []
        if self.hang_up:
            reason = {"type": "string", "description": "why the call ends, in a few words"}
            tools.append(
                Tool(
                    "hang_up",
                    "End the call. Only after saying goodbye, when the conversation is over or the caller asks.",
                    {"type": "object", "properties": {"reason": reason}},
                )
            )
        if self.send_dtmf:
            digits = {"type": "string", "pattern": DIGITS_PATTERN, "description": "the keys, e.g. 1 or 1234#"}
            tools.append(
                Tool(
                    "send_dtmf",
                    "Press keys on the phone keypad, e.g. to choose from an automated menu.",
                    {"type": "object", "properties": {"digits": digits}, "required": ["digits"]},
                )
            )
        if self.can_transfer:
            names = list(self.transfer_targets)
            target: dict[str, Any] = {"type": "string"}
            params: dict[str, Any] = {"type": "object", "properties": {"target": target}}
            if names:
                target["enum"] = names
                target["description"] = "where to transfer the caller"
            if self.transfer_to:
                target["description"] = "where to transfer the caller; leave it out for the usual destination"
            else:
                params["required"] = ["target"]
            where = f"one of: {', '.join(names)}" if names else "a human colleague"
            tools.append(
                Tool(
                    "transfer",
                    f"Transfer the caller to {where}. Tell the caller you are transferring them first.",
                    params,
                )
            )
        return tools

    def resolve(self, call: ToolCall) -> ResolvedAction:
        """What an LLM's tool call comes to; ``refused`` says why not when it is not allowed."""
        args = call.arguments
        reason = str(args.get("reason") or "")[:200]
        if call.name == "hang_up":
            refused = "" if self.hang_up else "hang_up is not enabled for this agent"
            return ResolvedAction("hang_up", "", reason, refused)
        if call.name == "send_dtmf":
            digits = str(args.get("digits") or "").replace(" ", "")
            if not self.send_dtmf:
                return ResolvedAction("send_dtmf", digits[:32], reason, "send_dtmf is not enabled for this agent")
            if not re.fullmatch(DIGITS_PATTERN, digits):
                return ResolvedAction("send_dtmf", digits[:32], reason, f"digits must match {DIGITS_PATTERN}")
            return ResolvedAction("send_dtmf", digits, reason)
        if call.name == "transfer":
            asked = str(args.get("target") or "").strip()
            if not self.can_transfer:
                return ResolvedAction("transfer", asked, reason, "transfer is not enabled for this agent")
            if not asked:
                if self.transfer_to:
                    return ResolvedAction("transfer", self.transfer_to, reason)
                return ResolvedAction("transfer", "", reason, "transfer needs a target")
            if asked in self.transfer_targets:
                return ResolvedAction("transfer", self.transfer_targets[asked], reason)
            if asked == self.transfer_to or asked in self.transfer_targets.values():
                return ResolvedAction("transfer", asked, reason)
            refused = f"target {asked[:64]!r} is not an allowed transfer target"
            return ResolvedAction("transfer", asked[:256], reason, refused)
        return ResolvedAction(call.name[:64], "", reason, f"unknown action {call.name[:64]!r}")

    def keypad(self, digit: str) -> KeypadHit | None:
        """What a mapped keypad digit does, or None when the digit goes to the agent."""
        k = self.dtmf.get(digit)
        if k is None:
            return None
        target = ""
        if k.action == "transfer":
            target = self.transfer_targets.get(k.target, k.target) if k.target else (self.transfer_to or "")
        return KeypadHit(k.action, target, k.reason or f"keypad {digit}")
