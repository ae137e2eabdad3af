"""The /v1 routers: one module per REST resource, each exposing ``router``; the app mounts every one of them.

Adding a resource is one module here (its routes, and its request/response models if no other module shares
them) plus its test; :func:`resource_routers` finds it, so ``api/app.py`` does not change.
"""

from __future__ import annotations

import importlib
import pkgutil

from fastapi import APIRouter


def resource_routers() -> list[APIRouter]:
    """Every ``router`` of this package's modules, in name order (their prefixes do not overlap)."""
    routers = []
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        router = getattr(importlib.import_module(f"{__name__}.{module}"), "router", None)
        if isinstance(router, APIRouter):
            routers.append(router)
    return routers
