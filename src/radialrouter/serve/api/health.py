"""Probes for load balancers and Kubernetes, and the replica's identity.

- ``GET /healthz`` — liveness: 200 while the process serves HTTP (also while draining: a draining replica must not
  be restarted, only taken out of rotation).
- ``GET /readyz`` — readiness: 200 when the router is loaded and the routing batcher runs, the database answers
  (checked at most once a second, in a worker thread) and the replica is not draining; otherwise 503 with the
  failing checks. On SIGTERM it turns 503 at once; with ``server.drain_s`` the replica keeps serving that long, so
  load balancers notice before it stops accepting connections.

Both are public (no key): they tell nothing but up/down and the replica id.
"""

from __future__ import annotations

import os
import re
import socket
import time
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import APIRouter
from fastapi.responses import JSONResponse

if TYPE_CHECKING:
    from radialrouter.serve.state import ServeState

REPLICA_ENV = "RADIALROUTER_REPLICA_ID"
_REPLICA = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,62}$")
DB_CHECK_EVERY_S = 1.0


def replica_id(env: dict[str, str] | None = None) -> str:
    """This replica's id: ``$RADIALROUTER_REPLICA_ID`` (e.g. the Kubernetes pod name), else the host name."""
    env = os.environ if env is None else env
    value = env.get(REPLICA_ENV) or socket.gethostname() or "replica"
    if not _REPLICA.match(value):
        raise ValueError(f"{REPLICA_ENV}={value!r}: use 1-63 letters, digits, '.', '_' or '-'")
    return value


class Readiness:
    """The readiness checks of one replica, with the database check cached for `DB_CHECK_EVERY_S`."""

    def __init__(self, state: ServeState) -> None:
        self.state = state
        self._db: tuple[float, bool] = (0.0, False)
        self._lock = anyio.Lock()

    async def database(self) -> bool | None:
        ledger = self.state.ledger
        if ledger is None:
            return None
        async with self._lock:  # one probe at a time; the others reuse its answer
            checked, ok = self._db
            if time.monotonic() - checked >= DB_CHECK_EVERY_S:
                ok = await anyio.to_thread.run_sync(ledger.ping)
                self._db = (time.monotonic(), ok)
        return ok

    async def checks(self) -> dict[str, Any]:
        s = self.state
        out: dict[str, Any] = {"router": s.router is not None and s.batcher.running, "draining": s.draining}
        db = await self.database()
        if db is not None:
            out["database"] = db
        return out


def health_router(state: ServeState) -> APIRouter:
    """``/healthz`` and ``/readyz`` for ``state`` (mounted by `radialrouter.serve.app.create_app`)."""
    router = APIRouter(include_in_schema=False)
    readiness = Readiness(state)

    @router.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok", "replica": state.replica})

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        checks = await readiness.checks()
        ready = checks["router"] and not checks["draining"] and checks.get("database", True)
        return JSONResponse({"status": "ready" if ready else "not_ready", "replica": state.replica,
                             "checks": checks}, status_code=200 if ready else 503)

    return router
