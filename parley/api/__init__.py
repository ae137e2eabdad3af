"""The multi-tenant HTTP API: authentication (``auth``) and HTTP hardening (``security``) for the routers."""
