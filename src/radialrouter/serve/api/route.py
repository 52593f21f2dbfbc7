"""``POST /v1/route``: the routing decision only, without calling an LLM."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from radialrouter.serve.api.validation import check_route_body
from radialrouter.serve.calls import _Call
from radialrouter.serve.config import ServeConfig
from radialrouter.serve.routing import (
    RequestError,
    parse_model,
)

if TYPE_CHECKING:
    from radialrouter.serve.state import ServeState


def route_router(state: ServeState, config: ServeConfig) -> APIRouter:
    """``/v1/route`` for ``state`` (``config``: the one the app was built with)."""
    api = APIRouter()

    @api.post("/v1/route")
    async def route(request: Request) -> JSONResponse:
        """The decision only: chosen LLM, ranking, scores, λ, expected cost and why LLMs were excluded."""
        client = state.authenticate(request)
        await state.admit(client)
        state.enter()
        early: asyncio.Task | None = None
        try:
            body, size = await state.read_json(request)
            body = check_route_body(body, state.max_output)  # `prompt` as messages when they are absent
            target = parse_model(body.get("model", config.router.alias), state.config)
            if target.llm is not None:
                raise RequestError("`model` must be a router alias here, not a concrete LLM", param="model")
            call = _Call(state, client, body, target)
            early = state.start_decision(call, size)
            await state.prepare(call, size)
            call.result = await state.decide(call, early)
        finally:
            if early is not None:
                early.cancel()
            state.leave()
        call.llm = call.result.llm
        call.finish("route_only")
        return JSONResponse({"request_id": call.request_id, "model": body.get("model", config.router.alias),
                             "mode": target.mode, **call.result.to_dict()}, headers=call.headers())

    return api
