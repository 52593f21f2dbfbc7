"""radialrouter: learn which LLM to call for each query, for the cost you are willing to pay."""

from __future__ import annotations

from radialrouter._lazy import lazy_names

__version__ = "0.1.0"

# Public names, imported on first use (PEP 562): `import radialrouter` and the CLI's --help stay fast, because the
# routers pull in torch (seconds) and the loaders pandas.
_LAZY = {
    "SCENARIOS": "radialrouter.objective",
    "utility": "radialrouter.objective",
    "RoutingDataset": "radialrouter.data",
    "load_dataset": "radialrouter.data",
    "Decision": "radialrouter.routers",
    "Router": "radialrouter.routers",
    "available_routers": "radialrouter.routers",
    "from_pretrained": "radialrouter.routers",
    "make_router": "radialrouter.routers",
}


__getattr__, __dir__ = lazy_names("radialrouter", _LAZY, globals())

__all__ = [
    "SCENARIOS",
    "Decision",
    "Router",
    "RoutingDataset",
    "available_routers",
    "from_pretrained",
    "load_dataset",
    "make_router",
    "utility",
    "__version__",
]
