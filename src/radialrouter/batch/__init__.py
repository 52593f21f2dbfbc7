"""Offline batch routing and embedding (layer 4): read prompts from Parquet / CSV / JSONL / text, route or embed them
in chunks on a local thread pool or on Ray Data, and write decisions or vectors (`jobs`).

It may import layers 0–3; not `learning` (same layer), `serve` or `cli`. Its names are imported on first use, so
``import radialrouter.batch`` does not load pyarrow.
"""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    """Every name of `radialrouter.batch.jobs` (the former module ``radialrouter.batch``), imported on first use."""
    jobs = importlib.import_module("radialrouter.batch.jobs")
    try:
        value = getattr(jobs, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value
