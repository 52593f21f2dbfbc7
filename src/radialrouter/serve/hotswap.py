"""Safe hot swap: load another router directory while the server keeps serving, then switch between batches.

The new router is loaded, checked against the pool and warmed up in a worker thread while the old one keeps
routing; the switch is one assignment of the batcher's decision function, so a batch already running finishes with
the old router and the next one uses the new one — no request is dropped or fails because of the swap. Every
decision carries the version of the router that made it (`router_version`: the first 12 hex digits of the weights'
sha256 recorded at save), and the decision log stores it. The new router is loaded by `routing.load_router`, as at
start (inference backend, encoder without disk cache), and, when the config file sets no ``tradeoffs``, brings its
own named trade-offs (``ServeConfig.with_router_tradeoffs``), exactly as a restart with it would.

``POST /admin/reload`` (``{"path": DIR}``) and ``GET /admin/router`` need ``server.admin_key`` (a separate bearer
key; without one the admin endpoints answer 404). ``radialrouter promote`` calls them after off-policy evaluation.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import APIRouter, Request

from radialrouter.serve.routing import Decider, RequestError, check_pool, load_router

if TYPE_CHECKING:
    from radialrouter.serve.app import ServeState

log = logging.getLogger("radialrouter.serve")


def router_version(path: str | Path | None) -> str:
    """A short, stable id of a saved router: its weights' sha256 prefix (``unsaved`` for an in-memory router)."""
    if path is None:
        return "unsaved"
    try:
        sha = json.loads((Path(path) / "config.json").read_text()).get("weights_sha256")
    except (OSError, ValueError):
        sha = None
    return sha[:12] if isinstance(sha, str) else "unknown"


def _check_admin(state: ServeState, request: Request) -> None:
    key = state.config.server.admin_key
    if key is None:
        raise RequestError("Not Found", status=404, code="not_found")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if not (scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.get().encode())):
        raise RequestError("The admin endpoints need 'Authorization: Bearer <server.admin_key>'", status=401,
                           code="invalid_api_key")


def swap_router(state: ServeState, path: Path) -> dict[str, Any]:
    """Load ``path`` and make it the serving router (blocking; run it in a worker thread)."""
    written = state.file_config
    config = written.model_copy(update={"router": written.router.model_copy(update={"path": path})})
    router = load_router(config)  # the same loader as at start (inference backend, encoder without disk cache)
    # Named trade-offs: the config file's if it set them, else the new router's own (as at start).
    config = config.with_router_tradeoffs(getattr(router, "presets_", None))
    for warning in check_pool(config, list(router.llms_)):
        log.warning(warning)
    decider = Decider(config, router, state.decider.tokenizer)
    decider.version = router_version(path)
    decider.warm_up()
    old = state.router_version
    # One assignment each: the running batch keeps the old decider, the next batch gets the new one; requests parse
    # `model` against state.config, so the new trade-offs apply from the next request on.
    state.decider, state.router, state.router_path, state.router_version = decider, router, path, decider.version
    state.config = config
    state.batcher.fn = decider.decide
    log.info("router swapped: %s -> %s (%s)", old, decider.version, path)
    return {"previous_version": old, "version": decider.version, "path": str(path), "router": router.name}


def admin_router(state: ServeState) -> APIRouter:
    """``GET /admin/router`` (the serving router's path and version), ``POST /admin/reload`` (hot swap)."""
    api = APIRouter()
    lock = asyncio.Lock()

    @api.get("/admin/router", include_in_schema=False)
    async def current(request: Request) -> dict[str, Any]:
        _check_admin(state, request)
        return {"version": state.router_version, "path": None if state.router_path is None else str(state.router_path),
                "router": state.router.name, "llms": list(state.router.llms_)}

    @api.post("/admin/reload", include_in_schema=False)
    async def reload(request: Request) -> dict[str, Any]:
        _check_admin(state, request)
        try:
            body = await request.json()
        except ValueError:
            raise RequestError("Request body is not valid JSON", code="invalid_json") from None
        raw = body.get("path") if isinstance(body, dict) else None
        if raw is None and state.router_path is not None:
            raw = str(state.router_path)
        if not isinstance(raw, str) or not raw:
            raise RequestError("`path` must name a saved router directory", param="path", code="invalid_type")
        from radialrouter.routers import RouterError

        start = time.perf_counter()
        async with lock:  # one swap at a time
            try:
                out = await anyio.to_thread.run_sync(swap_router, state, Path(raw).expanduser().resolve())
            except (RouterError, ValueError, OSError) as exc:
                raise RequestError(f"cannot load router {raw!r}: {exc}", param="path", code="invalid_router",
                                   status=409) from None
        return {**out, "seconds": round(time.perf_counter() - start, 3)}

    return api


__all__ = ["admin_router", "router_version", "swap_router"]
