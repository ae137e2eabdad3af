"""Persistence for the multi-tenant service: tenants, API keys, agents, calls.

Every row belongs to a tenant and every repository method takes ``tenant_id``, so
one tenant can never read or change another's rows. Repositories run inside the
session they are given; ``Database.session()`` commits or rolls back.
"""
