"""PEP 562 lazy public names: a package lists where each name lives, and it is imported on first use, so that
`import radialrouter` and the CLI's ``--help`` do not pay for torch or pandas. Also the aliases that keep the former
module names (before the layered packages) importable."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType
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


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the former name of a moved module and gives the module itself (the same object, not a copy), so
    ``import radialrouter.encoders`` keeps working after the module moved to ``radialrouter.core.encoders``."""

    def __init__(self, moved: dict[str, str]) -> None:
        self.moved = moved

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.moved:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=False)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.moved[spec.name])
        self._own = (module.__spec__, module.__loader__, module.__name__)
        return module

    def exec_module(self, module: ModuleType) -> None:
        # create_module gave the real module; importlib stamped the alias's spec on it: put its own back.
        module.__spec__, module.__loader__, module.__name__ = self._own


def alias_modules(moved: dict[str, str]) -> None:
    """Make each former module name in ``moved`` import the module at its new name (installed once)."""
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Alias(moved))
