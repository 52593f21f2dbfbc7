"""Evaluation (layer 3): the metrics of the field and the loop that evaluates a router on a test split (`metrics`),
strong/weak routing metrics (`strong_weak`), the budget sweep (`budget_sweep`), the benchmark runner (`bench`), its
reports (`report`) and the automatic router choice (`auto`).

It may import `radialrouter.core`, `radialrouter.data` and `radialrouter.routers` — not the other layer-3 packages
(`policy`, `ledger`) nor anything above. Every name of the former module ``radialrouter.evaluation`` (now
`radialrouter.evaluation.metrics`) is importable from this package, on first use.
"""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    metrics = importlib.import_module("radialrouter.evaluation.metrics")
    try:
        value = getattr(metrics, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value
