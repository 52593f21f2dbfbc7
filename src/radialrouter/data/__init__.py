"""Routing data: queries × LLMs quality and cost, loaders for the usual layouts, and leakage-safe splits.

It is layer 1: it may import `radialrouter.core` only. Names are imported on first use, so importing `DataError`
(the CLI does at start) does not load pandas."""

from __future__ import annotations

from radialrouter._lazy import lazy_names

_LAZY = {
    "DataError": "radialrouter.data.dataset",
    "RoutingDataset": "radialrouter.data.dataset",
    "embed_together": "radialrouter.data.dataset",
    "ROUTERBENCH_FILE": "radialrouter.data.loaders",
    "ROUTERBENCH_REPO": "radialrouter.data.loaders",
    "load_dataset": "radialrouter.data.loaders",
    "load_routerbench": "radialrouter.data.loaders",
    "load_splits": "radialrouter.data.loaders",
    "trusting_pickles": "radialrouter.data.loaders",
    "grouped_folds": "radialrouter.data.splits",
    "grouped_split": "radialrouter.data.splits",
    "holdout_tasks": "radialrouter.data.splits",
    "with_validation": "radialrouter.data.splits",
    "make_synthetic": "radialrouter.data.synthetic",
}


__getattr__, __dir__ = lazy_names("radialrouter.data", _LAZY, globals())

__all__ = [
    "DataError",
    "ROUTERBENCH_FILE",
    "ROUTERBENCH_REPO",
    "RoutingDataset",
    "embed_together",
    "grouped_folds",
    "grouped_split",
    "holdout_tasks",
    "load_dataset",
    "load_routerbench",
    "load_splits",
    "make_synthetic",
    "trusting_pickles",
    "with_validation",
]
