"""End-of-turn detection beyond silence: the Smart Turn model and transcript cues."""
