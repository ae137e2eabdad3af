"""Processors that put the services (VAD, STT, LLM, TTS) and the agent on the pipeline."""
