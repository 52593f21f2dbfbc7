"""Query encoders: text → query vectors, split by backend — `transformer` (`QueryEncoder`: a Hugging Face model under
torch or ONNX Runtime, plus name resolution and the encoder's identity), `static` (`StaticQueryEncoder`: distilled
token embeddings) and `cache` (the on-disk embedding cache). Part of `radialrouter.core` (layer 0): it imports only
its own modules and the standard/third-party libraries, never another radialrouter package.

Every name of the former single module ``radialrouter.encoders`` is available here (``radialrouter.encoders`` itself
still imports, as an alias of this package).
"""

from __future__ import annotations

from typing import Any

from radialrouter.core.encoders import cache, static, transformer
from radialrouter.core.encoders.static import StaticQueryEncoder
from radialrouter.core.encoders.transformer import (
    BACKENDS,
    DEFAULT_ENCODER,
    STATIC_ENCODER,
    EncoderError,
    QueryEncoder,
    default_cache_dir,
    onnx_available,
    onnx_cache_dir,
)


def __getattr__(name: str) -> Any:
    """The former module's other (private) names, e.g. ``_EmbeddingCache`` or ``_resolve``."""
    for module in (transformer, static, cache):
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BACKENDS", "DEFAULT_ENCODER", "STATIC_ENCODER", "EncoderError", "QueryEncoder", "StaticQueryEncoder",
           "default_cache_dir", "onnx_available", "onnx_cache_dir"]
