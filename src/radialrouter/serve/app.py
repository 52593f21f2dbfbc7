"""The OpenAI-compatible routing server (FastAPI).

``model`` selects behaviour: the router alias (``radial``, ``radial:<trade-off>``, ``radial@lam=<λ>``) routes the
conversation; a configured LLM name bypasses routing. Bodies are forwarded untouched except ``model`` (and, when
streaming, a request for a usage chunk so costs are known). The served LLM is reported in ``model``, in
``x-radialrouter-*`` headers and in a ``router`` object in the body — in the first and the last chunk of a stream —
never inside the generated content.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cached_property
from typing import Any

import anyio
import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from radialrouter.routers import Router
from radialrouter.serve.batching import MicroBatcher
from radialrouter.serve.config import ServeConfig
from radialrouter.serve.ledger import Ledger, LedgerRow
from radialrouter.serve.metrics import Metrics
from radialrouter.serve.routing import (
    Decider,
    RequestError,
    RouteQuery,
    RouteResult,
    Target,
    check_pool,
    context_text,
    load_router,
    load_tokenizer,
    parse_model,
    requested_output_tokens,
    required_capabilities,
    routing_text,
)
from radialrouter.serve.upstream import Attempt, Upstream, classify, is_retryable

log = logging.getLogger("radialrouter.serve")
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
                415: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error"}
_JSON = {"separators": (",", ":"), "ensure_ascii": False}


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                   type_: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """An OpenAI-style error body: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = type_ or _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=headers)


def _usage_cost(usage: Any, llm) -> tuple[int | None, int | None, float | None]:
    if not isinstance(usage, dict):
        return None, None, None
    p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(p, int) or not isinstance(c, int):
        return None, None, None
    return p, c, (p * llm.input_price + c * llm.output_price) / 1e6


class _Call:
    """Book-keeping for one chat request: decision, attempts, usage; ends as a ledger row and metrics."""

    def __init__(self, state: ServeState, client: str, body: dict, target: Target) -> None:
        self.state, self.client, self.body, self.target = state, client, body, target
        self.request_id = f"rr-{uuid.uuid4().hex}"
        self.started = time.perf_counter()
        self.result: RouteResult | None = None
        self.attempts: list[Attempt] = []
        self.llm: str | None = target.llm
        self.usage: tuple[int | None, int | None, float | None] = (None, None, None)

    @cached_property
    def prompt(self) -> str:
        """What the router reads (also what the decision log stores when ``log_prompts`` is on)."""
        r = self.state.config.router
        return routing_text(self.body["messages"], r.history_messages, r.history_chars)

    def info(self, final: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"request_id": self.request_id, "model": self.body.get("model"), "llm": self.llm,
                               "routed": self.result is not None}
        if self.result is not None:
            r = self.result
            out.update(mode=self.target.mode, lam=r.lam, choice=r.llm, ranking=r.ranking, scores=r.scores,
                       expected_cost_usd=r.expected_cost_usd)
        out.update(fallback=bool(self.attempts), attempts=[a.to_dict() for a in self.attempts])
        if final:
            p, c, cost = self.usage
            out.update(usage=None if p is None else {"prompt_tokens": p, "completion_tokens": c}, cost_usd=cost,
                       latency_ms=round(1000 * (time.perf_counter() - self.started), 2))
        return out

    def headers(self) -> dict[str, str]:
        h = {"x-radialrouter-request-id": self.request_id, "x-radialrouter-fallback": str(bool(self.attempts)).lower()}
        if self.llm:
            h["x-radialrouter-model"] = self.llm
        if self.result is not None:
            h["x-radialrouter-lam"] = f"{self.result.lam:g}"
            h["x-radialrouter-mode"] = self.target.mode or ""
        return h

    def failed(self, llm: str, reason: str) -> None:
        self.attempts.append(Attempt(llm, reason))
        self.state.upstream.failed(llm)
        self.state.metrics.upstream_errors.labels(llm, reason).inc()
        log.warning("request %s: backend %s failed (%s)", self.request_id, llm, reason)

    def finish(self, status: str) -> None:
        s, m = self.state, self.state.metrics
        p, c, cost = self.usage
        llm = self.llm or "none"
        m.requests.labels(llm, self.target.mode or "direct", status).inc()
        if status == "ok" and self.attempts:
            m.fallbacks.labels(llm).inc()
        if p is not None:
            m.tokens.labels(llm, self.client, "prompt").inc(p)
            m.tokens.labels(llm, self.client, "completion").inc(c)
            m.cost.labels(llm, self.client).inc(cost)
            s.spent[self.client] = s.spent.get(self.client, 0.0) + cost
        elif status == "ok":
            m.usage_missing.labels(llm).inc()
        latency = 1000 * (time.perf_counter() - self.started)
        log.info("request %s client=%s model=%s llm=%s attempts=%d status=%s latency_ms=%.1f", self.request_id,
                 self.client, self.body.get("model"), self.llm, len(self.attempts) + (status == "ok"), status, latency)
        if s.ledger is not None:
            r = self.result
            s.ledger.record(LedgerRow(
                request_id=self.request_id, ts=time.time(), client=self.client, model=str(self.body.get("model")),
                mode=self.target.mode, lam=None if r is None else r.lam, llm=self.llm,
                ranking=[] if r is None else r.ranking, attempts=[a.to_dict() for a in self.attempts],
                fallback=bool(self.attempts) and status == "ok", stream=bool(self.body.get("stream")), status=status,
                prompt_tokens=p, completion_tokens=c, cost_usd=cost, latency_ms=round(latency, 3),
                prompt=self.prompt if s.config.ledger.log_prompts else None))


class ServeState:
    """Everything loaded once per server: router, tokenizer, batcher, backend pool, metrics, decision log."""

    def __init__(self, config: ServeConfig, router: Router | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.router = router if router is not None else load_router(config)
        for warning in check_pool(config, list(self.router.llms_)):
            log.warning(warning)
        self.decider = Decider(config, self.router, load_tokenizer(config.router.tokenizer))
        self.decider.warm_up()
        self.metrics = Metrics()
        path = config.ledger.path
        self.ledger = Ledger(path, on_drop=self.metrics.ledger_dropped.inc) if path is not None else None
        self.spent: dict[str, float] = self.ledger.spent_by_client() if self.ledger else {}
        self.keys = {k.id: k for k in config.auth.keys}
        self._transport = transport
        self.upstream: Upstream | None = None
        self.batcher = MicroBatcher(self.decider.decide, max_size=config.server.batch_max_size,
                                    max_wait_s=config.server.batch_max_wait_ms / 1000,
                                    on_batch=self.metrics.batch_size.observe)

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        self.upstream = Upstream(self.config, self._transport)
        await self.batcher.start()
        try:
            yield
        finally:
            await self.batcher.stop()
            await self.upstream.aclose()
            if self.ledger is not None:
                self.ledger.close()

    # ------------------------------------------------------------------ request checks
    def authenticate(self, request: Request) -> str:
        """The client id for a valid bearer key (``anonymous`` when no keys are configured)."""
        if not self.keys:
            return "anonymous"
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            for key in self.keys.values():
                if hmac.compare_digest(token.strip().encode(), key.key.get().encode()):
                    return key.id
        raise RequestError("Incorrect or missing API key: send 'Authorization: Bearer <key>'", status=401,
                           code="invalid_api_key")

    def check_budget(self, client: str) -> None:
        key = self.keys.get(client)
        if key is not None and key.budget_usd is not None and self.spent.get(client, 0.0) >= key.budget_usd:
            raise RequestError(f"Budget of {key.budget_usd} USD for client {client!r} is spent", status=429,
                               code="budget_exceeded")

    async def read_json(self, request: Request) -> dict:
        limit = self.config.server.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise RequestError(f"Request body is larger than {limit} bytes", status=413, code="body_too_large")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise RequestError(f"Request body is larger than {limit} bytes", status=413, code="body_too_large")
        try:
            body = json.loads(raw, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise RequestError(f"Request body is not valid JSON: {exc}", code="invalid_json") from None
        if not isinstance(body, dict):
            raise RequestError("Request body must be a JSON object", code="invalid_type")
        return body

    async def decide(self, call: _Call) -> RouteResult:
        body = call.body
        query = RouteQuery(text=call.prompt, context=context_text(body), max_output=requested_output_tokens(body),
                           needs=required_capabilities(body), lam=call.target.lam)
        with self.metrics.decision_seconds.time():
            return await self.batcher.submit(query)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def check_chat_body(body: dict) -> None:
    """Type checks on the fields the server reads; the rest is the backend's business and passes through."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("`messages` must be a non-empty array of message objects", param="messages",
                           code="invalid_type" if "messages" in body else "missing_required_parameter")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RequestError(f"`messages[{i}]` must be an object with a string `role`", param=f"messages[{i}]",
                               code="invalid_type")
        if not (m.get("content") is None or isinstance(m["content"], (str, list))):
            raise RequestError(f"`messages[{i}].content` must be a string, an array of parts or null",
                               param=f"messages[{i}].content", code="invalid_type")
    for key, kind, name in (("stream", bool, "a boolean"), ("tools", list, "an array"),
                            ("response_format", dict, "an object"), ("stream_options", dict, "an object")):
        if body.get(key) is not None and not isinstance(body[key], kind):
            raise RequestError(f"`{key}` must be {name}", param=key, code="invalid_type")
    requested_output_tokens(body)


async def _events(response: httpx.Response) -> AsyncIterator[list[str]]:
    """Server-sent events as lists of lines, read incrementally (nothing is buffered beyond one event)."""
    lines: list[str] = []
    async for line in response.aiter_lines():
        if line:
            lines.append(line)
        elif lines:
            yield lines
            lines = []
    if lines:
        yield lines


def _sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj, **_JSON)}\n\n".encode()


async def _proxy_json(state: ServeState, call: _Call, plan: list[str]) -> Response:
    for name in plan:
        call.llm = name
        t0 = time.perf_counter()
        try:
            resp = await state.upstream.send(name, call.body, stream=False)
        except httpx.HTTPError as exc:
            call.failed(name, classify(exc))
            continue
        state.metrics.upstream_seconds.labels(name).observe(time.perf_counter() - t0)
        if is_retryable(resp.status_code):
            call.failed(name, f"http_{resp.status_code}")
            continue
        if resp.status_code >= 400:  # the client's own mistake, as the backend saw it: returned as is
            call.finish(f"client_error_{resp.status_code}")
            return Response(resp.content, status_code=resp.status_code, headers=call.headers(),
                            media_type=resp.headers.get("content-type", "application/json"))
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, dict) or "choices" not in data:
            call.failed(name, "bad_response")
            continue
        state.upstream.succeeded(name)
        call.usage = _usage_cost(data.get("usage"), state.config.llm(name))
        data["model"] = name
        data["router"] = call.info(final=True)
        call.finish("ok")
        return JSONResponse(data, headers=call.headers())
    return _all_failed(call)


def _all_failed(call: _Call) -> JSONResponse:
    reasons = [a.error for a in call.attempts]
    status = 429 if reasons and all(r == "http_429" for r in reasons) else (
        504 if reasons and all(r == "timeout" for r in reasons) else 502)
    call.finish("upstream_failed")
    tried = ", ".join(f"{a.llm} ({a.error})" for a in call.attempts)
    return error_response(status, f"All backends tried for this request failed: {tried}", code="upstream_failed",
                          type_="upstream_error", headers=call.headers())


async def _proxy_stream(state: ServeState, call: _Call, plan: list[str]) -> Response:
    client_wants_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
    for name in plan:
        call.llm = name
        llm = state.config.llm(name)
        body = call.body
        inject = llm.stream_usage and not client_wants_usage
        if inject:
            body = {**body, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}
        t0 = time.perf_counter()
        try:
            resp = await state.upstream.send(name, body, stream=True)
        except httpx.HTTPError as exc:
            call.failed(name, classify(exc))
            continue
        state.metrics.upstream_seconds.labels(name).observe(time.perf_counter() - t0)
        if resp.status_code >= 400:
            content = await resp.aread()
            await resp.aclose()
            if is_retryable(resp.status_code):
                call.failed(name, f"http_{resp.status_code}")
                continue
            call.finish(f"client_error_{resp.status_code}")
            return Response(content, status_code=resp.status_code, headers=call.headers(),
                            media_type=resp.headers.get("content-type", "application/json"))
        events = _events(resp)
        try:  # the first event decides: until a byte is sent to the client, falling back is still possible
            first = await events.__anext__()
        except (httpx.HTTPError, StopAsyncIteration) as exc:
            await resp.aclose()
            call.failed(name, "empty_stream" if isinstance(exc, StopAsyncIteration) else classify(exc))
            continue
        state.upstream.succeeded(name)
        relay = _relay(state, call, name, resp, first, events, strip_usage=inject)
        headers = {**call.headers(), "cache-control": "no-cache"}
        return StreamingResponse(relay, media_type="text/event-stream", headers=headers)
    return _all_failed(call)


async def _relay(state: ServeState, call: _Call, name: str, resp: httpx.Response, first: list[str],
                 events: AsyncIterator[list[str]], strip_usage: bool) -> AsyncIterator[bytes]:
    """Forward the backend's events as they arrive: ``model`` rewritten, ``router`` added to the first chunk, and
    one extra final chunk (``choices: []``) carrying the decision with usage and cost before ``[DONE]``."""
    llm = state.config.llm(name)
    announced, status, last = False, "ok", {"id": call.request_id, "created": int(time.time())}
    pending: list[str] | None = first
    try:
        while True:
            lines = pending if pending is not None else await events.__anext__()
            pending = None
            out: list[str] = []
            for line in lines:
                payload = line[5:].strip() if line.startswith("data:") else None
                if payload is None or payload == "[DONE]":
                    if payload is None:
                        out.append(line)
                    continue
                try:
                    obj = json.loads(payload)
                except ValueError:
                    out.append(line)
                    continue
                if not isinstance(obj, dict) or "error" in obj:
                    status = "stream_error" if isinstance(obj, dict) else status
                    out.append(line)
                    continue
                if obj.get("usage"):
                    call.usage = _usage_cost(obj["usage"], llm)
                if strip_usage:
                    if not obj.get("choices"):
                        continue  # the usage chunk we asked for; the client did not
                    obj.pop("usage", None)
                obj["model"] = name
                last = {"id": obj.get("id", last["id"]), "created": obj.get("created", last["created"])}
                if not announced:
                    obj["router"] = call.info()
                    announced = True
                out.append(f"data: {json.dumps(obj, **_JSON)}")
            if out:
                yield ("\n".join(out) + "\n\n").encode()
    except StopAsyncIteration:
        yield _sse({**last, "object": "chat.completion.chunk", "model": name, "choices": [],
                    "router": call.info(final=True)})
        yield b"data: [DONE]\n\n"
    except httpx.HTTPError as exc:  # bytes were sent: no fallback now, tell the client in-band
        status = "stream_error"
        state.metrics.upstream_errors.labels(name, classify(exc)).inc()
        state.upstream.failed(name)
        yield _sse({"error": {"message": f"The backend {name!r} failed mid-stream ({classify(exc)}); no fallback "
                                         "is possible once output was sent", "type": "upstream_error",
                              "param": None, "code": "stream_interrupted"}, "router": call.info(final=True)})
    except BaseException:
        status = "client_disconnected"
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await resp.aclose()
        call.finish(status)


def create_app(config: ServeConfig, router: Router | None = None,
               transport: httpx.AsyncBaseTransport | None = None) -> FastAPI:
    """Build the server. The router is loaded once here (``router`` overrides the config's, e.g. in tests)."""
    state = ServeState(config, router, transport)
    app = FastAPI(title="radialrouter", lifespan=state.lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = state

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return error_response(exc.status, str(exc), param=exc.param, code=exc.code)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, str(exc), code="invalid_request")

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s", request.url.path)
        return error_response(500, "Internal server error", code="internal_error")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        client = state.authenticate(request)
        body = await state.read_json(request)
        check_chat_body(body)
        state.check_budget(client)
        target = parse_model(body.get("model"), config)
        call = _Call(state, client, body, target)
        if target.llm is not None:
            plan = [target.llm]
        else:
            try:
                call.result = await state.decide(call)
            except RequestError:
                call.finish("no_candidate")
                raise
            plan = state.upstream.order(call.result.ranking)[: config.server.max_attempts]
        return await (_proxy_stream if body.get("stream") else _proxy_json)(state, call, plan)

    @app.post("/v1/route")
    async def route(request: Request) -> JSONResponse:
        """The decision only: chosen LLM, ranking, scores, λ, expected cost and why LLMs were excluded."""
        client = state.authenticate(request)
        body = await state.read_json(request)
        if isinstance(body.get("prompt"), str) and "messages" not in body:
            body = {**body, "messages": [{"role": "user", "content": body["prompt"]}]}
        check_chat_body(body)
        target = parse_model(body.get("model", config.router.alias), config)
        if target.llm is not None:
            raise RequestError("`model` must be a router alias here, not a concrete LLM", param="model")
        call = _Call(state, client, body, target)
        call.result = await state.decide(call)
        call.llm = call.result.llm
        call.finish("route_only")
        return JSONResponse({"request_id": call.request_id, "model": body.get("model", config.router.alias),
                             "mode": target.mode, **call.result.to_dict()}, headers=call.headers())

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        state.authenticate(request)
        alias = config.router.alias
        routed = [alias] + [f"{alias}:{name}" for name in config.tradeoffs]
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "radialrouter"} for m in routed]
        data += [{"id": llm.name, "object": "model", "created": 0, "owned_by": "radialrouter-pool",
                  "context_window": llm.context_window, "capabilities": llm.capabilities,
                  "routable": llm.name in {x.name for x in state.decider.routable}} for llm in config.llms]
        return JSONResponse({"object": "list", "data": data})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "router": state.router.name, "llms": [llm.name for llm in config.llms],
                "cooling_down": state.upstream.cooling() if state.upstream else []}

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        if not config.server.public_metrics:
            state.authenticate(request)
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    return app
