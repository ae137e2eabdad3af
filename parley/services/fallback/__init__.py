"""Provider chains: a stage (STT, LLM, TTS) served by the first healthy provider of a list, switching mid-turn.

See :mod:`.breaker` (health shared by every call in the process), :mod:`.chain` (deadlines, classification,
events) and one module per stage kind.
"""
