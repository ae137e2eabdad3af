"""Flows: an agent document's optional graph of nodes and typed edges, and the per-call engine that walks it.

``config`` is the ``flow:`` section (validated whole at load), ``expressions`` the eval-free conditions and
templates, ``intents`` the local embedding classifier, ``engine`` one call's :class:`FlowState`.
"""

from parley.flows.config import FlowConfig, NodeConfig
from parley.flows.engine import FlowState, Routing
from parley.flows.expressions import Expression, ExpressionError
from parley.flows.intents import IntentClassifier, IntentResult


def classifier_for(flow: FlowConfig) -> IntentClassifier | None:
    """The classifier for a flow's intents (None when the flow has none); call ``await .prepare()`` at load."""
    intents = flow.all_intents()
    if not intents:
        return None
    return IntentClassifier(intents, threshold=flow.intents.threshold, margin=flow.intents.margin)


__all__ = [
    "Expression", "ExpressionError", "FlowConfig", "FlowState", "IntentClassifier", "IntentResult", "NodeConfig",
    "Routing", "classifier_for",
]  # fmt: skip
