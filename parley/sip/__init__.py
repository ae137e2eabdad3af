"""Native SIP, in two layers: ``protocol`` (wire formats and state machines, no calls) and ``agent`` (the user agent).

``agent`` builds on ``protocol``, never the reverse; ``protocol`` imports nothing of Parley but ``parley.audio``.
"""
