"""Parley: a self-hosted voice agent orchestrator."""

__version__ = "0.1.0"
