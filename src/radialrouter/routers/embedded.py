"""The routers shipped inside the package, each trained on RouterBench (3 tasks, 11 LLMs) with the bundled static
encoder by `benchmarks/train_default.py`:

* ``mlp`` — the default of ``serve``, ``route`` and batch routing: the router that measured best over the four shared
  data sets (README, "Which router to ship"), and the cheapest to run in a request path (a two-layer network).
* ``radial`` — the paper's RadialRouter (`radialrouter.routers.radial.load_default`): the router whose pool grows
  or shrinks without retraining (``radialrouter pool add/remove``); serve it with ``router: {embedded: radial}``.
"""

from __future__ import annotations

from pathlib import Path

from radialrouter.core.encoders import QueryEncoder
from radialrouter.routers.base import Router
from radialrouter.routers.errors import RouterError

PRETRAINED = Path(__file__).resolve().parent.parent / "pretrained"
#: name → directory (``save_pretrained`` layout) inside the package
EMBEDDED = {"mlp": PRETRAINED / "routerbench3-mlp", "radial": PRETRAINED / "routerbench3-radial"}
DEFAULT_EMBEDDED = "mlp"


def embedded_dir(name: str | None = None) -> Path:
    """Directory of the embedded router ``name`` (default: `DEFAULT_EMBEDDED`)."""
    name = DEFAULT_EMBEDDED if name is None else name
    if name not in EMBEDDED:
        raise RouterError(f"no embedded router {name!r}; the package ships {sorted(EMBEDDED)}")
    return EMBEDDED[name]


def load_embedded(name: str | None = None, encoder: QueryEncoder | None = None) -> Router:
    """Load the embedded router ``name`` (default: `DEFAULT_EMBEDDED`, the one ``serve`` starts with)."""
    directory = embedded_dir(name)
    if not (directory / "config.json").exists():
        raise RouterError(f"the embedded router is missing from {directory}; reinstall the package or pass a "
                          "trained router directory")
    return Router.from_pretrained(directory, encoder=encoder)


__all__ = ["DEFAULT_EMBEDDED", "EMBEDDED", "embedded_dir", "load_embedded"]
