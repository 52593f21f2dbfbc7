"""The OpenAI-compatible routing server (FastAPI).

``model`` selects behaviour: the router alias (``radial``, ``radial:<trade-off>``, ``radial@lam=<λ>``) routes the
conversation; a configured LLM name bypasses routing. Bodies are forwarded untouched except ``model`` (and, when
streaming, a request for a usage chunk so costs are known). The served LLM is reported in ``model``, in
``x-radialrouter-*`` headers and in a ``router`` object in the body — in the first and the last chunk of a stream —
never inside the generated content.

One request never breaks another: bodies are validated whole before they reach shared machinery, per-request work
that grows with the body runs outside the routing batch (and off the event loop when large), budgets are reserved
before a backend is called, and admission is bounded (503 with Retry-After beyond it).
"""

from __future__ import annotations

import logging

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from radialrouter.routers import Router
from radialrouter.serve.api.admin import admin_router
from radialrouter.serve.api.chat import chat_router
from radialrouter.serve.api.feedback import feedback_router
from radialrouter.serve.api.health import health_router
from radialrouter.serve.api.openapi import install_openapi
from radialrouter.serve.api.route import route_router
from radialrouter.serve.api.status import status_router
from radialrouter.serve.config import ServeConfig
from radialrouter.serve.dashboard_routes import dashboard_router
from radialrouter.serve.responses import error_response
from radialrouter.serve.routing import (
    RequestError,
)
from radialrouter.serve.state import ServeState

log = logging.getLogger("radialrouter.serve")
def create_app(config: ServeConfig, router: Router | None = None,
               transport: httpx.AsyncBaseTransport | None = None) -> FastAPI:
    """Build the server. The router is loaded once here (``router`` overrides the config's, e.g. in tests)."""
    state = ServeState(config, router, transport)
    config = state.config  # with the router's named trade-offs when the file set none
    app = FastAPI(title="radialrouter", lifespan=state.lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json")
    app.state.serve = state

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return error_response(exc.status, str(exc), param=exc.param, code=exc.code, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None,
                              headers=exc.headers)  # a 405 carries the route's `Allow` header

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, str(exc), code="invalid_request")

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s", request.url.path)
        return error_response(500, "Internal server error", code="internal_error")

    chat = chat_router(state, config)
    app.include_router(chat)  # /v1/chat/completions, /v1/models
    # The hot path once more as a plain Starlette route, matched first: the same function and exception handlers
    # without FastAPI's per-request dependency solving and nested-router dispatch (about 50 µs of CPU a request);
    # FastAPI's route stays for the OpenAPI schema.
    hot = next(r for r in chat.routes if isinstance(r, APIRoute) and r.path == "/v1/chat/completions")
    app.router.routes.insert(0, Route(hot.path, hot.endpoint, methods=sorted(hot.methods)))
    app.include_router(route_router(state, config))  # /v1/route: the decision only
    app.include_router(status_router(state, config))  # /health, /metrics
    app.include_router(health_router(state))
    app.include_router(dashboard_router)  # /dashboard: pages and JSON behind server.admin_key (read-only)
    app.include_router(feedback_router(state))
    app.include_router(admin_router(state))
    install_openapi(app, config)
    return app
