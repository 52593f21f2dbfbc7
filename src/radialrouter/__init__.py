"""radialrouter: learn which LLM to call for each query, for the cost you are willing to pay."""

from radialrouter.data import RoutingDataset, load_dataset
from radialrouter.objective import SCENARIOS, utility
from radialrouter.routers import Decision, Router, available_routers, from_pretrained, make_router

__version__ = "0.1.0"

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
