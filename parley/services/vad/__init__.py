"""vad providers."""
