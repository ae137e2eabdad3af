"""How audio gets in and out of a call: playout, simulated files, (later) phones and browsers."""
