"""The OpenAI-compatible endpoints: ``POST /v1/chat/completions`` (route, then proxy to the chosen LLM with
fallback) and ``GET /v1/models``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from radialrouter.serve.api.validation import check_chat_body
from radialrouter.serve.calls import _Call
from radialrouter.serve.config import ServeConfig
from radialrouter.serve.proxy import _proxy_json, _proxy_stream, _RelayResponse
from radialrouter.serve.routing import (
    RequestError,
    parse_model,
)

if TYPE_CHECKING:
    from radialrouter.serve.state import ServeState


def chat_router(state: ServeState, config: ServeConfig) -> APIRouter:
    """``/v1/chat/completions`` and ``/v1/models`` for ``state`` (``config``: the one the app was built with)."""
    api = APIRouter()

    @api.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        client = state.authenticate(request)
        state.enter()
        call: _Call | None = None
        early: asyncio.Task | None = None
        try:
            body, size = await state.read_json(request)
            check_chat_body(body, state.max_output)
            state.budgets.check(client)
            target = parse_model(body.get("model"), state.config)  # state.config: a hot swap may replace it
            call = _Call(state, client, body, target)
            early = state.start_decision(call, size)
            await state.prepare(call, size, exact=False)
            await state.admit(client, call.prompt_tokens)
            if target.llm is not None:
                plan = [target.llm]
            else:
                try:
                    call.result = state.explorer.apply(await state.decide(call, early), client, target.mode)
                except RequestError:
                    call.finish("no_candidate")
                    raise
                plan = state.upstream.order(call.result.ranking)[: config.server.max_attempts]
            await state.reserve(call, plan)
            response = await (_proxy_stream if body.get("stream") else _proxy_json)(state, call, plan)
        except BaseException as exc:
            if early is not None:
                early.cancel()  # a no-op once it is done
            if call is not None:  # books closed on every path (a no-op when the call already finished)
                call.finish("refused" if isinstance(exc, RequestError) else "cancelled")
            elif isinstance(exc, RequestError):  # refused before it became a call (body, budget): counted only
                state.metrics.refused.labels(client, "refused").inc()
            state.leave()
            raise
        if not isinstance(response, _RelayResponse):  # a stream leaves when it ends
            state.leave()
        return response

    @api.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        state.authenticate(request)
        alias = config.router.alias
        routed = [alias] + [f"{alias}:{name}" for name in state.config.tradeoffs]
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "radialrouter"} for m in routed]
        data += [{"id": llm.name, "object": "model", "created": 0, "owned_by": "radialrouter-pool",
                  "context_window": llm.context_window, "capabilities": llm.capabilities,
                  "routable": llm.name in {x.name for x in state.decider.routable}} for llm in config.llms]
        return JSONResponse({"object": "list", "data": data})

    return api
