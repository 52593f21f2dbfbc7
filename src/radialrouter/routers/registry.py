"""The router registry: built-in routers by name, imported on first use; `register` adds your own.

`radialrouter.routers.base` looks a saved router's class up here (`router_class`); this module needs the `Router`
class only for annotations, so the two do not import each other.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any

from radialrouter.routers.errors import RouterError

if TYPE_CHECKING:
    from radialrouter.routers.base import Router


#: name → "module:Class" for the built-in routers (imported on first use, so the CLI starts fast).
BUILTIN_ROUTERS: dict[str, str] = {
    "oracle": "radialrouter.routers.reference:OracleRouter",
    "random": "radialrouter.routers.reference:RandomRouter",
    "best-single": "radialrouter.routers.reference:BestSingleRouter",
    "task-best": "radialrouter.routers.reference:TaskBestRouter",
    "knn": "radialrouter.routers.knn:KNNRouter",
    "mlp": "radialrouter.routers.mlp:MLPRouter",
    "mf": "radialrouter.routers.mf:MFRouter",
    "ridge": "radialrouter.routers.ridge:RidgeRouter",
    "hybrid": "radialrouter.routers.hybrid:HybridRouter",
    "frugal": "radialrouter.routers.frugal:FrugalRouter",
    "cosine": "radialrouter.routers.cosine:CosineClassifierRouter",
    "routerdc": "radialrouter.routers.routerdc:RouterDCRouter",
    "graph": "radialrouter.routers.graph:GraphRouter",
    "equi": "radialrouter.routers.equi:EquiRouter",
    "radial": "radialrouter.routers.radial:RadialRouter",
    "ensemble": "radialrouter.routers.ensemble:EnsembleRouter",
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


def make_seeded(name: str, seed: int, **params: Any) -> Router:
    """Instantiate ``name`` with ``seed`` when its constructor takes one (benches and cross-validation seed every
    router the same way)."""
    cls = router_class(name)
    if "seed" in inspect.signature(cls.__init__).parameters:
        params["seed"] = seed
    return cls(**params)
