"""`RouterError`, the routers' error (its own module so that the registry and the base class share it without
importing each other)."""

from __future__ import annotations


class RouterError(RuntimeError):
    """A router used before ``fit``, asked about unknown LLMs, or loaded from an unusable directory."""


__all__ = ["RouterError"]
