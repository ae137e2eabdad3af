"""Phone calls: carriers' media streams (Twilio, Vonage, Plivo, Exotel), PBX sockets (Asterisk, FreeSWITCH).

A carrier is one module that registers one :class:`~parley.telephony.carrier.Carrier` (its settings, stream
protocol, routes, dial/transfer/hang-up); ``carrier.carriers`` finds them. What they share: ``wire`` (events and
wire helpers), ``stream`` (the bridge to a call), ``webhooks``, ``outbound``, ``routing``, ``state``. Native SIP
lives in :mod:`parley.sip`. See docs/carriers.md.
"""
