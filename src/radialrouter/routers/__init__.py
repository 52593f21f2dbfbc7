"""Router registry: built-in routers are imported lazily by name; `register` adds your own."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from radialrouter.routers.base import Decision, LamRangeWarning, Outcomes, Router, RouterError

#: name → "module:Class" for the built-in routers (imported on first use, so the CLI starts fast).
BUILTIN_ROUTERS: dict[str, str] = {
    "oracle": "radialrouter.routers.reference:OracleRouter",
    "random": "radialrouter.routers.reference:RandomRouter",
    "best-single": "radialrouter.routers.reference:BestSingleRouter",
    "task-best": "radialrouter.routers.reference:TaskBestRouter",
    "knn": "radialrouter.routers.knn:KNNRouter",
    "mlp": "radialrouter.routers.mlp:MLPRouter",
    "mf": "radialrouter.routers.mf:MFRouter",
    "hybrid": "radialrouter.routers.hybrid:HybridRouter",
    "frugal": "radialrouter.routers.frugal:FrugalRouter",
    "cosine": "radialrouter.routers.cosine:CosineClassifierRouter",
    "routerdc": "radialrouter.routers.routerdc:RouterDCRouter",
    "graph": "radialrouter.routers.graph:GraphRouter",
    "equi": "radialrouter.routers.equi:EquiRouter",
    "radial": "radialrouter.routers.radial:RadialRouter",
}
_REGISTERED: dict[str, type[Router]] = {}


def register(cls: type[Router]) -> type[Router]:
    """Class decorator: make a `Router` subclass available by its ``name`` (for `make_router` and loading)."""
    if not cls.name:
        raise RouterError(f"{cls.__name__} needs a non-empty class attribute `name`")
    _REGISTERED[cls.name] = cls
    return cls


def available_routers() -> list[str]:
    return sorted(set(BUILTIN_ROUTERS) | set(_REGISTERED))


def router_class(name: str) -> type[Router]:
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in BUILTIN_ROUTERS:
        raise RouterError(f"unknown router {name!r}; available: {', '.join(available_routers())}")
    module, attr = BUILTIN_ROUTERS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def make_router(name: str, **params: Any) -> Router:
    """Instantiate a router by registry name with hyperparameters, e.g. ``make_router("knn", k=20)``."""
    return router_class(name)(**params)


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
