"""The old path of :class:`SipEndpoint`, kept while ``parley.api.app`` (another engineer's file) still imports it.

The endpoint lives in :mod:`parley.sip.agent.endpoint`; this module goes once that import line moves.
"""

from parley.sip.agent.endpoint import SipEndpoint

__all__ = ["SipEndpoint"]
