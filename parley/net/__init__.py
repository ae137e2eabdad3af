"""Outbound network access: every request to a tenant-chosen URL goes through :mod:`parley.net.ssrf`."""
