"""radialrouter: learn which LLM to call for each query, for the cost you are willing to pay.

The packages are layered, and a module imports only its own package and lower layers (docs/architecture.md;
tests/test_architecture.py keeps it so): 0 `core` · 1 `data` · 2 `routers` · 3 `evaluation`, `policy`, `ledger` ·
4 `learning`, `batch` · 5 `serve` · 6 `cli`.
"""

from __future__ import annotations

from radialrouter._lazy import alias_modules, lazy_names

__version__ = "0.1.0"

# Public names, imported on first use (PEP 562): `import radialrouter` and the CLI's --help stay fast, because the
# routers pull in torch (seconds) and the loaders pandas.
_LAZY = {
    "SCENARIOS": "radialrouter.core.objective",
    "utility": "radialrouter.core.objective",
    "RoutingDataset": "radialrouter.data",
    "load_dataset": "radialrouter.data",
    "Decision": "radialrouter.routers",
    "Router": "radialrouter.routers",
    "available_routers": "radialrouter.routers",
    "from_pretrained": "radialrouter.routers",
    "make_router": "radialrouter.routers",
}


#: Former module names (before the layered packages) → where the module lives now; both import the same module.
MOVED_MODULES = {
    "radialrouter.objective": "radialrouter.core.objective",
    "radialrouter.training": "radialrouter.core.training",
    "radialrouter.encoders": "radialrouter.core.encoders",
    "radialrouter.tokens": "radialrouter.core.tokens",
    "radialrouter.threads": "radialrouter.core.threads",
    "radialrouter.distill": "radialrouter.core.distill",
    "radialrouter.strong_weak": "radialrouter.evaluation.strong_weak",
    "radialrouter.report": "radialrouter.evaluation.report",
    "radialrouter.bench": "radialrouter.evaluation.bench",
    "radialrouter.auto": "radialrouter.evaluation.auto",
    "radialrouter.budget_sweep": "radialrouter.evaluation.budget_sweep",
    "radialrouter.pool": "radialrouter.policy.pool",
    "radialrouter.calibration": "radialrouter.policy.calibration",
    "radialrouter.ledger_data": "radialrouter.learning.ledger_data",
    "radialrouter.partial": "radialrouter.learning.partial",
    "radialrouter.ope": "radialrouter.learning.ope",
    "radialrouter.judge": "radialrouter.serve.judging",
    "radialrouter.serve.schema": "radialrouter.ledger.schema",
    "radialrouter.serve.ledger": "radialrouter.ledger.store",
    "radialrouter.serve.ledger_rollup": "radialrouter.ledger.rollups",
    "radialrouter.serve.explore": "radialrouter.learning.exploration",
    "radialrouter.serve.feedback": "radialrouter.serve.api.feedback",
    "radialrouter.serve.health": "radialrouter.serve.api.health",
    "radialrouter.serve.hotswap": "radialrouter.serve.api.admin",
    "radialrouter.serve.openapi": "radialrouter.serve.api.openapi",
    "radialrouter.serve.validation": "radialrouter.serve.api.validation",
}
alias_modules(MOVED_MODULES)

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
