"""The SIP user agent: the endpoint that answers and places calls, and the calls that bind a dialog to a LiveCall.

``endpoint`` builds on ``inbound`` and ``outbound``, they on ``call``, and ``call`` on ``resources`` (models
and RTP port, and how they are freed). A call sees its endpoint only through ``call.UserAgent``, so nothing
here imports ``endpoint``; all of it builds on ``parley.sip.protocol``, which knows nothing of calls.
"""
