"""PEP 562 lazy public names: a package lists where each name lives, and it is imported on first use, so that
`import radialrouter` and the CLI's ``--help`` do not pay for torch or pandas."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_names(package: str, where: dict[str, str], namespace: dict[str, Any]) -> tuple[
        Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``where`` maps each name to its module; a loaded name is
    stored in ``namespace`` (the package's globals), so it is looked up only once."""

    def __getattr__(name: str) -> Any:
        if name in where:
            value = namespace[name] = getattr(importlib.import_module(where[name]), name)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted([*namespace, *where])

    return __getattr__, __dir__
