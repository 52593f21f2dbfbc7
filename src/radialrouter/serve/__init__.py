"""Serve routing behind an OpenAI-compatible endpoint (``radialrouter serve --config FILE``).

It is layer 5: it may import every library layer below it (`core` … `learning`, `batch`), never `cli`; its endpoint
modules (`serve.api`) get the server's state passed in instead of importing the app. The config layer
(`load_config`, `ServeConfig`) needs only the core dependencies; `create_app` needs the
``serve`` extra (``pip install 'radialrouter[serve]'``: FastAPI, uvicorn, httpx, prometheus-client).
"""

from __future__ import annotations

from typing import Any

from radialrouter.serve.config import ConfigError, LLMConfig, ServeConfig, load_config, parse_config


def create_app(*args: Any, **kwargs: Any):
    """Build the FastAPI app (see `radialrouter.serve.app.create_app`); imported lazily for the extra."""
    try:
        from radialrouter.serve.app import create_app as _create_app
    except ImportError as exc:
        raise ImportError(f"serving needs the 'serve' extra: pip install 'radialrouter[serve]' ({exc})") from exc
    return _create_app(*args, **kwargs)


__all__ = ["ConfigError", "LLMConfig", "ServeConfig", "create_app", "load_config", "parse_config"]
