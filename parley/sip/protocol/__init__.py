"""The SIP protocol layer: one RFC concept per module, knowing nothing of calls, agents or the database.

``syntax`` (lexical pieces) < ``uri`` < ``message`` < ``transactions``, ``dialog``; ``sdp`` and ``digest`` stand
alone; ``rtp`` < ``jitter``, ``dtmf`` < ``media`` (an RTP session on its UDP port). The user agent above
(``parley.sip.agent``) receives requests through ``transactions.TransactionUser``.
"""
