"""``GET /health`` (the router, the pool, LLMs cooling down, requests in flight) and ``GET /metrics`` (Prometheus).

The load-balancer probes ``/healthz`` and ``/readyz`` are in `radialrouter.serve.api.health`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from radialrouter.serve.config import ServeConfig

if TYPE_CHECKING:
    from radialrouter.serve.state import ServeState


def status_router(state: ServeState, config: ServeConfig) -> APIRouter:
    """``/health`` and ``/metrics`` for ``state`` (``config``: the one the app was built with)."""
    api = APIRouter()

    @api.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "router": state.router.name, "llms": [llm.name for llm in config.llms],
                "cooling_down": state.upstream.cooling() if state.upstream else [], "in_flight": state.in_flight}

    @api.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Every series for the operator (``server.admin_key``, or ``public_metrics``); a client key sees only the
        series labelled with its own id."""
        client = None
        if not config.server.public_metrics and not state.is_operator(request):
            client = state.authenticate(request)
            client = client if state.keys else None  # no keys: a loopback-only server with no tenants to separate
        return Response(state.metrics.render(client), media_type=state.metrics.content_type)

    return api
