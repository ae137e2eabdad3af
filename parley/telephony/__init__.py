"""Phone calls: carriers' media streams (Twilio, Vonage, Plivo, Exotel), PBX sockets (Asterisk, FreeSWITCH).

One module per provider maps its wire format onto :class:`parley.calls.live.LiveCall`;
``stream.py`` holds what they share. Native SIP lives in :mod:`parley.sip`.
"""
