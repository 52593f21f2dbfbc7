"""Routing data: queries × LLMs quality and cost, loaders for the usual layouts, and leakage-safe splits."""

from radialrouter.data.dataset import DataError, RoutingDataset
from radialrouter.data.loaders import ROUTERBENCH_FILE, ROUTERBENCH_REPO, load_dataset, load_routerbench, load_splits
from radialrouter.data.splits import grouped_split, holdout_tasks, with_validation
from radialrouter.data.synthetic import make_synthetic

__all__ = [
    "DataError",
    "ROUTERBENCH_FILE",
    "ROUTERBENCH_REPO",
    "RoutingDataset",
    "grouped_split",
    "holdout_tasks",
    "load_dataset",
    "load_routerbench",
    "load_splits",
    "make_synthetic",
    "with_validation",
]
