"""Outbound campaigns: many calls from a contact list, paced, scheduled in the contacts' local windows, retried.

The database is the durable queue for both backends (contacts and attempts are rows anyway: progress, export
and the link to each call record live there), so no second source of truth can double-dial a contact.
"""
