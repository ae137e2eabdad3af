"""Webhooks: tenants subscribe to call events; each is POSTed, signed, from a durable outbox in the database.

``store``: subscriptions and the outbox (rows claimed with a lease); ``events``: what the call code emits;
``signing``: the headers; ``worker``: the delivery loop that ``parley serve`` runs.
"""

EVENT_TYPES = ("call.started", "call.ended", "call.analyzed", "transcript.final", "campaign.completed")
