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

A reload is bounded: its body is read and checked like a chat request's (size, depth, non-finite numbers: a 4xx,
never a 500), the folder must hold only regular files and folders (a FIFO or device would block the read), and the
load runs in its own daemon thread under a time limit — `RELOAD_TIMEOUT_S`, or the body's ``timeout_s``. Past it
the reload answers 409 ``router_load_timeout`` and releases the swap lock, so the next reload is not stuck behind
it; the abandoned load may finish later, but it is never installed (the switch happens on the event loop, only for
a load that finished in time).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import APIRouter, Request

from radialrouter.serve.routing import Decider, RequestError, check_pool, decides_inline, load_router

if TYPE_CHECKING:
    from radialrouter.serve.state import ServeState

log = logging.getLogger("radialrouter.serve")
T = TypeVar("T")
#: Seconds a reload may take to read, load and warm up a router folder (a body's ``timeout_s`` overrides it).
RELOAD_TIMEOUT_S = 120.0
MAX_RELOAD_TIMEOUT_S = 3600.0
_LOADER_THREAD = "radialrouter-reload"


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
    if state.config.server.admin_key is None:
        raise RequestError("Not Found", status=404, code="not_found")
    if not state.is_operator(request):
        raise RequestError("The admin endpoints need 'Authorization: Bearer <server.admin_key>'", status=401,
                           code="invalid_api_key")


@dataclass
class LoadedRouter:
    """A router folder loaded and warmed up, not yet serving (`install_router` switches to it)."""

    path: Path
    config: Any
    router: Any
    decider: Decider
    inline: bool  # decided on the event loop (`decides_inline`)


def check_router_files(path: Path) -> None:
    """Refuse a folder holding anything but regular files and folders: opening a FIFO blocks until someone writes
    to it, and a device may never end, so either would hang the load."""
    if not path.is_dir():
        raise ValueError(f"{path} is not a directory")
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            entry = Path(root) / name
            mode = entry.stat().st_mode  # follows symbolic links: what a reader would open
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise ValueError(f"{entry.relative_to(path)} is not a regular file (a FIFO, socket or device); a "
                                 "router folder holds only files and folders")


def load_for_swap(state: ServeState, path: Path) -> LoadedRouter:
    """Load, check and warm up the router at ``path`` without touching the serving one (blocking)."""
    path = path.resolve()
    check_router_files(path)
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
    return LoadedRouter(path, config, router, decider, decides_inline(config, decider))


def install_router(state: ServeState, loaded: LoadedRouter) -> dict[str, Any]:
    """Make a loaded router the serving one: plain assignments, no I/O (on the event loop, between batches)."""
    config, router, decider, path = loaded.config, loaded.router, loaded.decider, loaded.path
    old = state.router_version
    # One assignment each: the running batch keeps the old decider, the next batch gets the new one; requests parse
    # `model` against state.config, so the new trade-offs apply from the next request on.
    state.decider, state.router, state.router_path, state.router_version = decider, router, path, decider.version
    state.config = config
    state.batcher.fn = decider.decide
    state.set_routing_inline(loaded.inline)
    log.info("router swapped: %s -> %s (%s)", old, decider.version, path)
    return {"previous_version": old, "version": decider.version, "path": str(path), "router": router.name}


def swap_router(state: ServeState, path: Path) -> dict[str, Any]:
    """Load ``path`` and make it the serving router, with no time limit (blocking; scripts and tests)."""
    return install_router(state, load_for_swap(state, path))


def _in_daemon_thread(fn: Callable[..., T], *args: Any) -> concurrent.futures.Future:
    """Run ``fn`` in a new daemon thread: one that blocks for good (a read that never returns) is abandoned at the
    time limit without holding a pool's worker, and does not keep the process from exiting."""
    future: concurrent.futures.Future = concurrent.futures.Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # handed to the waiter (or dropped with the future, past its time limit)
            future.set_exception(exc)

    threading.Thread(target=run, name=_LOADER_THREAD, daemon=True).start()
    return future


def _reload_timeout(body: dict) -> float:
    value = body.get("timeout_s", RELOAD_TIMEOUT_S)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and 0 < value <= MAX_RELOAD_TIMEOUT_S):
        raise RequestError(f"`timeout_s` must be a number of seconds in (0, {MAX_RELOAD_TIMEOUT_S:g}]",
                           param="timeout_s", code="invalid_value")
    return float(value)


class _TimedOut(Exception):
    """The load outlived its time limit (kept apart from a TimeoutError the loader itself raises)."""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


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
        """Hot swap to ``{"path": DIR}`` (default: the serving router's folder, re-read) within ``timeout_s``."""
        _check_admin(state, request)
        # The chat endpoint's reader: size cap, body timeout, depth and number checks — a 4xx, never a 500.
        body, _ = await state.read_json(request)
        raw = body.get("path")
        if raw is None and state.router_path is not None:
            raw = str(state.router_path)
        if not isinstance(raw, str) or not raw or "\x00" in raw:
            raise RequestError("`path` must name a saved router directory", param="path", code="invalid_type")
        timeout = _reload_timeout(body)
        start = time.perf_counter()
        async with lock:  # one swap at a time, and never held past `timeout`
            try:
                loading = asyncio.wrap_future(_in_daemon_thread(load_for_swap, state, Path(raw).expanduser()))
                done, _ = await asyncio.wait({loading}, timeout=timeout)
                if not done:
                    loading.cancel()  # the thread runs on, unobserved; its result is never installed
                    raise _TimedOut
                loaded = loading.result()
            except _TimedOut:
                log.error("reload of %s did not finish within %g s; its loader thread is abandoned (it is never "
                          "installed)", raw, timeout)
                raise RequestError(f"loading router {raw!r} did not finish within {timeout:g} s (a file that blocks "
                                   "on read, or a slow disk); the serving router is unchanged — raise `timeout_s` "
                                   "for a slow load", param="path", code="router_load_timeout", status=409) from None
            except Exception as exc:  # a broken folder is the operator's mistake: say what, not a 500
                log.warning("reload of %s failed: %s", raw, _one_line(exc))
                raise RequestError(f"cannot load router {raw!r}: {_one_line(exc)}", param="path",
                                   code="invalid_router", status=409) from None
            out = install_router(state, loaded)
        return {**out, "seconds": round(time.perf_counter() - start, 3)}

    return api


__all__ = ["RELOAD_TIMEOUT_S", "LoadedRouter", "admin_router", "check_router_files", "install_router",
           "load_for_swap", "router_version", "swap_router"]
