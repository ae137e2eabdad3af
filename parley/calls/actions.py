"""An agent's action (hang up, transfer, send DTMF) carried out through the transport's :class:`CallControl`.

The outcome is an event for the call's record; an action that ends the call also names the end reason.
"""

from __future__ import annotations

from typing import Any

import structlog

from parley.calls.control import ActionUnsupported, CallControl
from parley.pipeline.frames import AgentAction

log = structlog.get_logger(__name__)


async def carry_out(action: AgentAction, control: CallControl, t: float) -> tuple[dict[str, Any], str | None]:
    """Do ``action`` at call time ``t``: returns the event to record and, when the call is over, why."""
    event: dict[str, Any] = {"type": "action", "action": action.action, "turn": action.turn_id, "t": round(t, 3)}
    if action.target:
        event["target"] = action.target
    if action.reason:
        event["reason"] = action.reason
    if action.refused:
        event["result"] = f"not allowed: {action.refused}"
        return event, None
    try:
        if action.action == "hang_up":
            await control.hang_up(action.reason or "agent-hangup")
            event["result"] = "done"
            return event, "agent-hangup"
        if action.action == "transfer":
            await control.transfer(action.target)
            event["result"] = "done"
            return event, "transferred"
        if action.action == "send_dtmf":
            await control.send_dtmf(action.target)
            event["result"] = "done"
            return event, None
        event["result"] = "unknown action"
    except ActionUnsupported as exc:
        event["result"] = f"unsupported: {exc}"
    except Exception as exc:
        log.exception("call_action_failed", action=action.action)
        event["result"] = f"failed: {exc}"
    return event, None
