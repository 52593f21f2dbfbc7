"""Routers (layer 2): the `Router` interface and its saved-model format (`base`), the registry of built-in routers,
imported lazily by name (`registry`; `register` adds your own), and one module per router.

A router module may import `radialrouter.core` and `radialrouter.data` (layers 0–1) and this package; never
`evaluation`, `policy`, `ledger`, `learning`, `batch`, `serve` or `cli`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from radialrouter.routers.base import Decision, LamRangeWarning, Outcomes, Router
from radialrouter.routers.errors import RouterError
from radialrouter.routers.registry import (
    BUILTIN_ROUTERS,
    available_routers,
    make_router,
    register,
    router_class,
)


def from_pretrained(directory: str | Path, **kwargs: Any) -> Router:
    """Load any saved router; its class is read from ``config.json``."""
    return Router.from_pretrained(directory, **kwargs)


__all__ = [
    "BUILTIN_ROUTERS",
    "Decision",
    "LamRangeWarning",
    "Outcomes",
    "Router",
    "RouterError",
    "available_routers",
    "from_pretrained",
    "make_router",
    "register",
    "router_class",
]
