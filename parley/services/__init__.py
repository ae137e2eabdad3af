"""Providers behind small interfaces: vad, stt, llm, tts (one module each)."""
