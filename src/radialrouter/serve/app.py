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

import asyncio
import hmac
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cached_property
from typing import Any

import anyio
import anyio.lowlevel
import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from radialrouter.routers import Router
from radialrouter.serve.batching import MicroBatcher, QueueFull
from radialrouter.serve.budgets import Budgets, Reservation, cost_usd
from radialrouter.serve.config import ServeConfig
from radialrouter.serve.dashboard_routes import dashboard_router
from radialrouter.serve.explore import Explorer
from radialrouter.serve.feedback import feedback_router
from radialrouter.serve.health import REPLICA_ENV, health_router, replica_id
from radialrouter.serve.hotswap import admin_router, router_version
from radialrouter.serve.ledger import Ledger, LedgerRow, Settlement, committed
from radialrouter.serve.metrics import Metrics
from radialrouter.serve.openapi import install_openapi
from radialrouter.serve.ratelimit import MemoryRateLimiter
from radialrouter.serve.routing import (
    Decider,
    RequestError,
    RouteQuery,
    RouteResult,
    Target,
    check_pool,
    context_refusal,
    context_text,
    load_router,
    output_token_bound,
    parse_model,
    requested_choices,
    requested_output_tokens,
    required_capabilities,
    router_dir,
    routing_text,
    utf8_size,
)
from radialrouter.serve.upstream import LOCAL, Attempt, Upstream, classify, is_retryable, retry_after
from radialrouter.serve.validation import check_chat_body, check_json_tree, check_route_body, max_output_tokens
from radialrouter.tokens import load_tokenizer

log = logging.getLogger("radialrouter.serve")
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "invalid_request_error", 405: "invalid_request_error", 408: "invalid_request_error",
                413: "invalid_request_error", 415: "invalid_request_error", 422: "invalid_request_error",
                429: "rate_limit_error"}
_JSON = {"separators": (",", ":"), "ensure_ascii": False}
INLINE_BYTES = 64 * 1024  # bodies up to this size are parsed and counted on the event loop (microseconds)
#: GIL switch interval while serving (CPython's default is 5 ms; see `ServeState.lifespan`).
GIL_SWITCH_INTERVAL_S = 0.0005
# Outcomes after which the backend bills what it processed even though it reported no usage to us.
_BILLED = frozenset({"ok", "client_disconnected", "shutdown", "stream_error", "stream_truncated", "cancelled"})
# Requests refused before any backend call: counted in metrics, and only sampled into the decision log (a key
# hammering the server with refused requests must not write a row for each).
_REFUSED = frozenset({"refused", "no_candidate"})
REFUSAL_SAMPLE_S = 60.0  # at most one logged refusal per key and outcome this often


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                   type_: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """An OpenAI-style error body: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = type_ or _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=headers)


def _usage(usage: Any) -> tuple[int, int] | None:
    if not isinstance(usage, dict):
        return None
    p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
    ok = all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**40 for v in (p, c))
    return (p, c) if ok else None


def _output_text(obj: dict, key: str) -> str:
    """The generated text in a response (``key="message"``) or a stream chunk (``key="delta"``): content,
    reasoning and tool-call arguments — what a backend bills as output."""
    parts: list[str] = []
    for choice in obj.get("choices") or ():
        part = choice.get(key) if isinstance(choice, dict) else None
        if not isinstance(part, dict):
            continue
        parts += [part[k] for k in ("content", "reasoning_content", "refusal") if isinstance(part.get(k), str)]
        calls = part.get("tool_calls") if isinstance(part.get("tool_calls"), list) else []
        for fn in [c.get("function") for c in calls if isinstance(c, dict)] + [part.get("function_call")]:
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                parts.append(fn["arguments"])
    return "".join(parts)


def _starts_a_stream(event: list[str]) -> bool:
    """Whether a backend's first server-sent event is a chat chunk: ``data: {...}`` with ``choices`` and no
    ``error``. Anything else is worth a fallback while no byte has reached the client."""
    for line in event:
        if line.startswith("data:"):
            try:
                obj = json.loads(line[5:])
            except ValueError:
                return False
            return isinstance(obj, dict) and "choices" in obj and "error" not in obj
    return False


def _finished(obj: dict) -> bool:
    return any(isinstance(c, dict) and c.get("finish_reason") for c in obj.get("choices") or ())


class _Call:
    """Book-keeping for one chat request: decision, attempts, tokens, budget reservation; ends (exactly once) as
    a ledger row, metrics and the settled cost."""

    def __init__(self, state: ServeState, client: str, body: dict, target: Target) -> None:
        self.state, self.client, self.body, self.target = state, client, body, target
        self.request_id = f"rr-{uuid.uuid4().hex}"
        self.started = time.perf_counter()
        self.result: RouteResult | None = None
        self.attempts: list[Attempt] = []
        self.llm: str | None = target.llm
        self.usage: tuple[int, int] | None = None  # backend-reported
        self.choices = requested_choices(body)  # `n`: every choice is generated and billed
        self.prompt_tokens = 0  # upper bound on what a provider bills for the prompt (windows, reservations)
        self.output_tokens = self.output_bytes = self.output_chars = 0  # what was relayed (when no usage comes)
        self.events: AsyncIterator[list[str]] | None = None  # a stream's backend events, read on after a hang-up
        self.reservation: Reservation | None = None
        self.commit: Any = None  # the ledger row's commit (a future), once finished
        self.read_scope: anyio.CancelScope | None = None  # the pending upstream read of a stream
        self.cut = False  # set when shutdown ends this stream
        self.called = False  # a request reached a backend (it bills the prompt even if we see no usage)
        self.overhead_ms: float | None = None  # arrival to the first backend call: the latency the gateway adds
        self.finished = False
        self.response_text: list[str] = []  # kept only with ledger.log_responses
        self.response_chars = 0

    def keep_text(self, text: str) -> None:
        """Remember answer text for the ledger (``ledger.log_responses``), at most 64 K characters."""
        if text and self.state.config.ledger.log_responses and self.response_chars < 65_536:
            self.response_text.append(text)
            self.response_chars += len(text)

    @cached_property
    def context(self) -> str:
        """Every text that occupies the backend's context window (what the prompt's token bound is taken over)."""
        return context_text(self.body)

    @cached_property
    def prompt(self) -> str:
        """What the router reads (also what the decision log stores when ``log_prompts`` is on)."""
        r = self.state.config.router
        return routing_text(self.body["messages"], r.history_messages, r.history_chars)

    def query(self) -> RouteQuery:
        return RouteQuery(text=self.prompt, prompt_tokens=self.prompt_tokens,
                          max_output=requested_output_tokens(self.body), needs=required_capabilities(self.body),
                          lam=self.target.lam)

    def add_output(self, text: str) -> None:
        """Count relayed output (charged only when the backend reports no usage for a complete answer)."""
        if text:
            self.output_tokens += self.state.decider.count(text)
            self.output_bytes += utf8_size(text)
            self.output_chars += len(text)

    def charge(self, status: str) -> tuple[int | None, int | None, float | None, str | None]:
        """Tokens and cost: what the backend reported it billed (``usage``). Without usage, once a backend was
        called: for a complete answer, the prompt's bound and the output relayed (``counted``); for one cut short
        (hang-up, shutdown, failure), its reservation on this LLM (``reserved``): what it did not report may have
        run to every choice's output limit, and what the client happened to receive says nothing about that."""
        if self.llm is None or self.usage is None and not (self.called and status in _BILLED):
            return None, None, None, None
        llm = self.state.config.llm(self.llm)
        if self.usage is not None:
            p, c = self.usage
            return p, c, cost_usd(llm, p, c), "usage"
        p = self.prompt_tokens
        if status == "ok":
            c = output_token_bound(self.output_tokens, self.output_bytes, self.output_chars,
                                   self.state.config.router.token_margin)
            return p, c, cost_usd(llm, p, c), "counted"
        c = self.choices * self.state.budgets.output_tokens(llm, requested_output_tokens(self.body))
        return p, c, cost_usd(llm, p, c), "reserved"

    def info(self, final: bool = False, status: str = "ok") -> dict[str, Any]:
        out: dict[str, Any] = {"request_id": self.request_id, "model": self.body.get("model"), "llm": self.llm,
                               "routed": self.result is not None}
        if self.result is not None:
            r = self.result
            out.update(mode=self.target.mode, lam=r.lam, choice=r.llm, ranking=r.ranking, scores=r.scores,
                       expected_cost_usd=r.expected_cost_usd)
        out.update(fallback=bool(self.attempts), attempts=[a.to_dict() for a in self.attempts])
        if final:
            p, c, cost, source = self.charge(status)
            out.update(usage=None if p is None else {"prompt_tokens": p, "completion_tokens": c}, cost_usd=cost,
                       cost_source=source, latency_ms=round(1000 * (time.perf_counter() - self.started), 2))
        return out

    def headers(self) -> dict[str, str]:
        h = {"x-radialrouter-request-id": self.request_id, "x-radialrouter-fallback": str(bool(self.attempts)).lower()}
        if self.llm:
            h["x-radialrouter-model"] = self.llm
        if self.result is not None:
            h["x-radialrouter-lam"] = f"{self.result.lam:g}"
            h["x-radialrouter-mode"] = self.target.mode or ""
        return h

    def mark_called(self, now: float) -> None:
        if not self.called:
            self.called, self.overhead_ms = True, round(1000 * (now - self.started), 3)

    def failed(self, llm: str, reason: str, after: float | None = None) -> None:
        self.attempts.append(Attempt(llm, reason, after))
        if reason != LOCAL:  # waiting for our own connection pool says nothing about the backend
            self.state.upstream.failed(llm)
        self.state.metrics.upstream_errors.labels(llm, reason).inc()
        log.warning("request %s: backend %s failed (%s)", self.request_id, llm, reason)

    def finish(self, status: str) -> None:
        if self.finished:
            return
        self.finished = True
        s, m = self.state, self.state.metrics
        p, c, cost, source = self.charge(status)
        llm = self.llm or "none"
        m.requests.labels(llm, self.target.mode or "direct", status).inc()
        if status == "ok" and self.attempts:
            m.fallbacks.labels(llm).inc()
        if p is not None:
            m.tokens.labels(llm, self.client, "prompt").inc(p)
            m.tokens.labels(llm, self.client, "completion").inc(c)
            m.cost.labels(llm, self.client).inc(cost)
        if status == "ok" and source != "usage":
            m.usage_missing.labels(llm).inc()
        s.limiter.finished(self.client, c)
        if s.budgets.settle(self.reservation, self.client, cost):
            m.reservation_exceeded.labels(self.client).inc()
            log.warning("request %s cost %.6f USD, more than its reservation of %.6f USD", self.request_id, cost,
                        self.reservation.amount)
        latency = 1000 * (time.perf_counter() - self.started)
        log.info("request %s client=%s model=%s llm=%s attempts=%d status=%s latency_ms=%.1f", self.request_id,
                 self.client, self.body.get("model"), self.llm, len(self.attempts) + (status == "ok"), status, latency)
        if status in _REFUSED:
            m.refused.labels(self.client, status).inc()
        if s.ledger is not None and (status not in _REFUSED or s.sample_refusal(self.client, status)):
            r = self.result
            settlement = Settlement(self.client, cost, c, self.reservation.id if self.reservation else None)
            pol = None if r is None else r.policy
            self.commit = s.ledger.record(LedgerRow(
                request_id=self.request_id, ts=time.time(), client=self.client, model=str(self.body.get("model")),
                mode=self.target.mode, lam=None if r is None else r.lam, llm=self.llm,
                ranking=[] if r is None else r.ranking, attempts=[a.to_dict() for a in self.attempts],
                fallback=bool(self.attempts) and status == "ok", stream=bool(self.body.get("stream")), status=status,
                prompt_tokens=p, completion_tokens=c, cost_usd=cost, cost_source=source, latency_ms=round(latency, 3),
                prompt=self.prompt if s.config.ledger.log_prompts else None,
                scores=None if r is None else r.scores, probabilities=None if r is None else r.probabilities,
                expected_cost_usd=None if r is None else r.expected_cost_usd, overhead_ms=self.overhead_ms,
                choice=None if pol is None else pol.choice, propensity=None if pol is None else pol.propensity,
                candidates=None if pol is None else pol.candidates, policy_probs=None if pol is None else pol.probs,
                explore=None if pol is None else pol.explore,
                router_version=None if r is None else r.router_version,
                response="".join(self.response_text)[:65_536] if self.response_text else None), settlement)

    async def acknowledge(self) -> None:
        """Wait until the ledger row is committed (``ledger.wait_for_commit``), before the response's last byte."""
        if not self.state.config.ledger.wait_for_commit or self.commit is None:
            return
        with self.state.metrics.commit_wait.time():
            ok = await committed(self.commit)
        if not ok:
            log.error("request %s: its decision-log row was not committed", self.request_id)


class ServeState:
    """Everything loaded once per server: router, tokenizer, batcher, backend pools, budgets, metrics, ledger."""

    def __init__(self, config: ServeConfig, router: Router | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.router = router if router is not None else load_router(config)
        self.file_config = config  # as written: a hot swap fills the new router's trade-offs from it
        self.config = config = config.with_router_tradeoffs(getattr(self.router, "presets_", None))
        self.router_path = None if router is not None else router_dir(config)
        self.router_version = router_version(self.router_path)
        self.explorer = Explorer(config)
        for warning in check_pool(config, list(self.router.llms_)):
            log.warning(warning)
        self.decider = Decider(config, self.router, load_tokenizer(config.router.tokenizer))
        self.decider.version = self.router_version
        self.decider.warm_up()
        url = config.ledger.database_url()
        self.replica = replica_id()
        labelled = url is not None or REPLICA_ENV in os.environ  # replicas: every series carries replica="<id>"
        self.metrics = Metrics(self.replica if labelled else None)
        target = url or config.ledger.path
        self.ledger = (Ledger(target, on_drop=self.metrics.ledger_dropped.inc, replica=self.replica)
                       if target is not None else None)
        self.shared = None
        if url is not None:  # PostgreSQL: budgets and rate limits shared by every replica
            from radialrouter.serve.pg import Shared

            self.shared = Shared(config, self.ledger, self.replica)
            self.budgets, self.limiter = self.shared.budgets, self.shared.limiter
        else:
            self.budgets = Budgets(config, self.ledger.spent_by_client() if self.ledger else {})
            self.limiter = MemoryRateLimiter(config)
        self.draining = False
        self.keys = {k.id: k for k in config.auth.keys}
        self.max_output = max_output_tokens(config)  # max_tokens above the largest window: a 400 naming it
        self._transport = transport
        self.upstream: Upstream | None = None
        self.batcher = MicroBatcher(self.decider.decide, max_size=config.server.batch_max_size,
                                    max_wait_s=config.server.batch_max_wait_ms / 1000,
                                    on_batch=self.metrics.batch_size.observe, max_queue=config.server.max_routing_queue)
        self.in_flight = 0
        self.streams: set[_Call] = set()  # open streams, ended with an error event if shutdown outlasts them
        self._heavy = anyio.CapacityLimiter(2)  # threads for large bodies: parsing, counting
        self._refusals_logged: dict[tuple[str, str], float] = {}  # (client, outcome) → when last logged

    def sample_refusal(self, client: str, outcome: str) -> bool:
        """Whether to write this refusal to the decision log: the first of each key and outcome per minute."""
        now, key = time.monotonic(), (client, outcome)
        if now - self._refusals_logged.get(key, -REFUSAL_SAMPLE_S) < REFUSAL_SAMPLE_S:
            return False
        self._refusals_logged[key] = now
        return True

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        self.upstream = Upstream(self.config, self._transport)
        await self.batcher.start()
        # The routing thread releases the GIL in every tokenizer and ONNX Runtime call and must take it back from a
        # busy event loop each time; at CPython's default 5 ms switch interval a decision made of such calls queued
        # for tens of ms under load. A shorter interval hands the GIL over sooner (cost: more frequent switches).
        switch = sys.getswitchinterval()
        sys.setswitchinterval(min(switch, GIL_SWITCH_INTERVAL_S))
        try:
            yield
        finally:
            sys.setswitchinterval(switch)
            await self.batcher.stop()
            await self.upstream.aclose()
            if self.ledger is not None:
                self.ledger.close()
            if self.shared is not None:
                self.shared.close()
            queries = getattr(self, "dashboard_queries", None)  # the dashboard's read-only engine, once opened
            if queries is not None:
                queries.engine.dispose()

    def begin_drain(self) -> None:
        """SIGTERM arrived: ``/readyz`` answers 503 from now on (requests are still served)."""
        if not self.draining:
            log.info("draining: readiness is now 503")
        self.draining = True

    def begin_shutdown(self) -> None:
        """Called when the HTTP server starts shutting down: streams still open after ``shutdown_grace_s`` are
        ended with an in-band error event and booked as ``shutdown`` with the cost so far."""
        self.draining = True
        grace = self.config.server.shutdown_grace_s
        if self.streams:
            log.info("shutting down: %d open stream(s) get %.1f s to finish", len(self.streams), grace)
        asyncio.get_running_loop().call_later(grace, self._cut_streams)

    def _cut_streams(self) -> None:
        if not self.streams:
            return
        log.warning("shutdown: ending %d stream(s) still open after %.1f s with an error event", len(self.streams),
                    self.config.server.shutdown_grace_s)
        for call in list(self.streams):
            call.cut = True
            if call.read_scope is not None:
                call.read_scope.cancel()

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

    def is_operator(self, request: Request) -> bool:
        """Whether the request carries ``server.admin_key`` as its bearer token."""
        admin = self.config.server.admin_key
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return (admin is not None and scheme.lower() == "bearer"
                and hmac.compare_digest(token.strip().encode(), admin.get().encode()))

    def busy(self, what: str) -> RequestError:
        self.metrics.rejected.labels("busy").inc()
        return RequestError(f"The server is at capacity ({what}); retry shortly", status=503, code="server_busy",
                            headers={"retry-after": str(self.config.server.retry_after_s)})

    def enter(self) -> None:
        """Admission control: at most ``max_in_flight`` chat/route requests at once, the rest refused at once."""
        if self.in_flight >= self.config.server.max_in_flight:
            raise self.busy(f"{self.in_flight} requests in flight")
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1

    async def read_json(self, request: Request) -> tuple[dict, int]:
        """The parsed, fully checked body and its size. Large bodies are parsed and checked in a worker thread."""
        limit = self.config.server.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise RequestError(f"Request body is larger than {limit} bytes", status=413, code="body_too_large")
        raw = bytearray()
        try:
            with anyio.fail_after(self.config.server.body_timeout_s):
                async for chunk in request.stream():
                    raw += chunk
                    if len(raw) > limit:
                        raise RequestError(f"Request body is larger than {limit} bytes", status=413,
                                           code="body_too_large")
        except TimeoutError:
            raise RequestError(f"The request body was not received within {self.config.server.body_timeout_s} s",
                               status=408, code="request_timeout") from None
        if len(raw) <= INLINE_BYTES:
            return _parse_body(raw), len(raw)
        return await anyio.to_thread.run_sync(_parse_body, raw, limiter=self._heavy), len(raw)

    async def prepare(self, call: _Call, size: int) -> None:
        """Bound the prompt's tokens and cut the routing text: inline for small bodies, in a thread for large. A
        request for one LLM whose context window the bound overflows is refused here, before any backend call."""
        def work() -> None:
            call.prompt_tokens = self.decider.prompt_tokens(call.body, call.context)
            _ = call.prompt

        if size <= INLINE_BYTES:
            work()
        else:
            await anyio.to_thread.run_sync(work, limiter=self._heavy)
        if call.target.llm is not None:
            llm, max_output = self.config.llm(call.target.llm), requested_output_tokens(call.body)
            if call.prompt_tokens + max_output > llm.context_window:
                raise context_refusal(call.prompt_tokens, max_output, llm)

    async def decide(self, call: _Call, early: asyncio.Task | None = None) -> RouteResult:
        """The routing decision: ``early``'s (see `start_decision`) once the count confirmed it, else a new one."""
        if early is not None:
            result = await early
            result.prompt_tokens = call.prompt_tokens
            return result
        return await self._decide(call.query())

    def start_decision(self, call: _Call, size: int) -> asyncio.Task | None:
        """Start routing before the prompt's tokens are counted (see `early_query`), so that the count (on the
        loop) and the decision (in the routing thread) overlap; None when routing must wait for the count."""
        query = self.early_query(call, size)
        if query is None:
            return None
        task = asyncio.ensure_future(self._decide(query))
        task.add_done_callback(_retrieve)
        return task

    def early_query(self, call: _Call, size: int) -> RouteQuery | None:
        """The routing query to decide before counting, when the count cannot change the decision: candidates
        depend on it only through context windows, and a bound on it that needs no tokenizer (`token_bound`) fits
        every routable LLM's window. None otherwise, and for large bodies (counted in a thread anyway), bypass
        requests, and rate-limited keys, whose refused requests must cost no routing work."""
        if call.target.llm is not None or size > INLINE_BYTES or call.client in self.limiter.limits:
            return None
        query = call.query()
        query.prompt_tokens = self.decider.quick_prompt_bound(call.body, call.context)
        return query if self.decider.fits_every_window(query.prompt_tokens, query.max_output) else None

    async def _decide(self, query: RouteQuery) -> RouteResult:
        with self.metrics.decision_seconds.time():
            try:
                return await self.batcher.submit(query)
            except QueueFull as exc:
                raise self.busy(f"routing queue full: {exc}") from None

    async def admit(self, client: str, prompt_tokens: int = 0) -> None:
        """Per-key rate limits (requests and tokens per minute): 429 with Retry-After beyond them. Every endpoint
        that does work for a key (chat, route, feedback) is admitted here."""
        try:
            await self.limiter.admit(client, prompt_tokens)
        except RequestError as exc:
            self.metrics.rejected.labels("rate_limited" if exc.status == 429 else exc.code).inc()
            raise

    async def reserve(self, call: _Call, plan: list[str]) -> None:
        """Reserve the worst case over every LLM the request may be sent to (`Budgets.worst_case`)."""
        max_output = requested_output_tokens(call.body)
        amount = max(self.budgets.worst_case(self.config.llm(n), call.prompt_tokens, max_output, call.choices)
                     for n in plan)
        try:
            call.reservation = await self.budgets.areserve(call.client, amount)
        except RequestError as exc:
            self.metrics.rejected.labels("budget_exceeded" if exc.status == 429 else exc.code).inc()
            raise


def _retrieve(task: asyncio.Task) -> None:
    """Mark an early decision's error as seen: it is raised where the decision is awaited, or not at all when
    the request failed before that (then asyncio would log it as never retrieved)."""
    if not task.cancelled():
        task.exception()


def _parse_body(raw: bytes | bytearray) -> dict:
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise RequestError(f"Request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise RequestError("Request body must be a JSON object", code="invalid_type")
    check_json_tree(body)
    return body


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


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
        call.mark_called(t0)
        try:
            resp = await state.upstream.send(name, call.body, stream=False)
        except httpx.HTTPError as exc:
            call.failed(name, classify(exc))
            continue
        state.metrics.upstream_seconds.labels(name).observe(time.perf_counter() - t0)
        if is_retryable(resp.status_code):
            call.failed(name, f"http_{resp.status_code}", retry_after(resp))
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
        call.usage = _usage(data.get("usage"))
        if call.usage is None:
            call.add_output(_output_text(data, "message"))
        data["model"] = name
        data["id"] = call.request_id  # what a client sends back to /v1/feedback (`response.id`)
        call.keep_text(_output_text(data, "message"))
        data["router"] = call.info(final=True)
        call.finish("ok")
        await call.acknowledge()
        return JSONResponse(data, headers=call.headers())
    return _all_failed(state, call)


def _all_failed(state: ServeState, call: _Call) -> JSONResponse:
    reasons = {a.error for a in call.attempts}
    headers = call.headers()
    if reasons == {"http_429"}:
        status = 429
        waits = [a.retry_after for a in call.attempts if a.retry_after is not None]
        if waits:  # the soonest any of them said it would take a request again
            headers["retry-after"] = f"{min(waits):g}"
    elif reasons == {LOCAL}:
        status = 503
        headers["retry-after"] = str(state.config.server.retry_after_s)
    else:
        status = 504 if reasons == {"timeout"} else 502
    call.finish("upstream_failed")
    tried = ", ".join(f"{a.llm} ({a.error})" for a in call.attempts)
    return error_response(status, f"All backends tried for this request failed: {tried}", code="upstream_failed",
                          type_="upstream_error", headers=headers)


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
        call.mark_called(t0)
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
                call.failed(name, f"http_{resp.status_code}", retry_after(resp))
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
        if not _starts_a_stream(first):  # not server-sent chunks (e.g. a broken body), or an error event
            await resp.aclose()
            call.failed(name, "bad_response")
            continue
        state.upstream.succeeded(name)
        call.events = events
        return _RelayResponse(state, call, resp, _relay(state, call, name, resp, first, events, strip_usage=inject))
    return _all_failed(state, call)


class _RelayResponse(StreamingResponse):
    """A stream whose books are closed however it ends: normally, by the client going away (even before the
    first byte, when the relay generator never ran), or by shutdown."""

    def __init__(self, state: ServeState, call: _Call, upstream: httpx.Response,
                 relay: AsyncIterator[bytes]) -> None:
        super().__init__(relay, media_type="text/event-stream", headers={**call.headers(), "cache-control": "no-cache"})
        self.state, self.call, self.upstream = state, call, upstream
        state.streams.add(call)

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()
                if not self.call.finished and not self.call.cut and self.call.events is not None:
                    await _read_on_for_usage(self.state, self.call, self.call.events)
                await self.upstream.aclose()
                self.call.finish("shutdown" if self.call.cut else "client_disconnected")
                self.state.streams.discard(self.call)
                self.state.leave()


def _take(call: _Call, obj: dict) -> str:
    """Book one backend chunk: its usage (what the provider billed) and its output; returns the output text."""
    if obj.get("usage"):
        call.usage = _usage(obj["usage"]) or call.usage
    text = _output_text(obj, "delta")
    call.add_output(text)
    return text


async def _read_on_for_usage(state: ServeState, call: _Call, events: AsyncIterator[list[str]]) -> None:
    """The client hung up mid-stream: keep reading the backend's stream (discarding it) until its usage arrives —
    the provider bills what it generates either way — for at most ``server.usage_wait_s``; shutdown ends it too.
    Without usage by then the request is charged its reservation (`_Call.charge`)."""
    with anyio.move_on_after(state.config.server.usage_wait_s) as scope:
        call.read_scope = scope  # cancelled by shutdown
        try:
            async for lines in events:
                for line in lines:
                    payload = line[5:].strip() if line.startswith("data:") else ""
                    if payload.startswith("{"):
                        try:
                            obj = json.loads(payload)
                        except ValueError:
                            continue
                        if isinstance(obj, dict):
                            _take(call, obj)
                if call.usage is not None:
                    break
        except httpx.HTTPError:
            pass
    call.read_scope = None


def _error_event(call: _Call, status: str, message: str, code: str, kind: str) -> bytes:
    return _sse({"error": {"message": message, "type": kind, "param": None, "code": code},
                 "router": call.info(final=True, status=status)})


async def _relay(state: ServeState, call: _Call, name: str, resp: httpx.Response, first: list[str],
                 events: AsyncIterator[list[str]], strip_usage: bool) -> AsyncIterator[bytes]:
    """Forward the backend's events as they arrive: ``model`` rewritten, ``router`` added to the first chunk, and
    one extra final chunk (``choices: []``) carrying the decision with usage and cost before ``[DONE]``.

    A stream is complete only when the backend said so (``[DONE]`` or a ``finish_reason``); one that ends early —
    with a transport error or a clean EOF — ends with an in-band error event and no ``[DONE]``, so clients never
    take half an answer for a whole one."""
    announced, status, last = False, "ok", {"id": call.request_id, "created": int(time.time())}
    complete = False
    pending: list[str] | None = first
    try:
        while True:
            if pending is None:
                if call.cut:
                    break
                # Shielded: a client hanging up must not interrupt a read half-way (that would close the backend's
                # stream, whose usage is still to come: see `_read_on_for_usage`), so the hang-up is taken here,
                # between reads; shutdown cancels the read directly.
                await anyio.lowlevel.checkpoint_if_cancelled()
                with anyio.CancelScope(shield=True) as call.read_scope:
                    pending = await anext(events, None)
                call.read_scope = None
                if pending is None:
                    break
            lines, pending = pending, None
            out: list[str] = []
            for line in lines:
                payload = line[5:].strip() if line.startswith("data:") else None
                if payload is None or payload == "[DONE]":
                    complete = complete or payload == "[DONE]"
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
                delta_text = _take(call, obj)
                call.keep_text(delta_text)
                complete = complete or _finished(obj)
                if strip_usage:
                    if not obj.get("choices"):
                        continue  # the usage chunk we asked for; the client did not
                    obj.pop("usage", None)
                obj["model"] = name
                obj["id"] = call.request_id  # the id a client sends back to /v1/feedback
                last = {"id": call.request_id, "created": obj.get("created", last["created"])}
                if not announced:
                    obj["router"] = call.info()
                    announced = True
                out.append(f"data: {json.dumps(obj, **_JSON)}")
            if out:
                yield ("\n".join(out) + "\n\n").encode()
        call.events = None  # the backend's stream has ended (or shutdown ended it): nothing left to read on
        if call.cut:
            status = "shutdown"
            yield _error_event(call, status, "The server is shutting down; this response was cut short",
                               "server_shutdown", "server_error")
        elif complete or status == "stream_error":
            call.finish(status)
            await call.acknowledge()
            yield _sse({**last, "object": "chat.completion.chunk", "model": name, "choices": [],
                        "router": call.info(final=True, status=status)})
            yield b"data: [DONE]\n\n"
        else:
            status = "stream_truncated"
            state.metrics.upstream_errors.labels(name, "truncated").inc()
            state.upstream.failed(name)
            log.warning("request %s: backend %s ended its stream without finishing it", call.request_id, name)
            yield _error_event(call, status, f"The backend {name!r} ended the stream before the response was "
                               "complete (no finish_reason, no [DONE])", "stream_interrupted", "upstream_error")
    except httpx.HTTPError as exc:  # bytes were sent: no fallback now, tell the client in-band
        status, call.events = "stream_error", None
        state.metrics.upstream_errors.labels(name, classify(exc)).inc()
        state.upstream.failed(name)
        yield _error_event(call, status, f"The backend {name!r} failed mid-stream ({classify(exc)}); no fallback "
                           "is possible once output was sent", "stream_interrupted", "upstream_error")
    except BaseException:
        status = "shutdown" if call.cut else "client_disconnected"
        raise
    finally:
        if call.events is None or call.cut or status != "client_disconnected":  # else the backend is read on
            call.events = None
            with anyio.CancelScope(shield=True):
                await resp.aclose()
            call.finish(status)


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

    @app.post("/v1/chat/completions")
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
            await state.prepare(call, size)
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

    @app.post("/v1/route")
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

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        state.authenticate(request)
        alias = config.router.alias
        routed = [alias] + [f"{alias}:{name}" for name in state.config.tradeoffs]
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "radialrouter"} for m in routed]
        data += [{"id": llm.name, "object": "model", "created": 0, "owned_by": "radialrouter-pool",
                  "context_window": llm.context_window, "capabilities": llm.capabilities,
                  "routable": llm.name in {x.name for x in state.decider.routable}} for llm in config.llms]
        return JSONResponse({"object": "list", "data": data})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "router": state.router.name, "llms": [llm.name for llm in config.llms],
                "cooling_down": state.upstream.cooling() if state.upstream else [], "in_flight": state.in_flight}

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Every series for the operator (``server.admin_key``, or ``public_metrics``); a client key sees only the
        series labelled with its own id."""
        client = None
        if not config.server.public_metrics and not state.is_operator(request):
            client = state.authenticate(request)
            client = client if state.keys else None  # no keys: a loopback-only server with no tenants to separate
        return Response(state.metrics.render(client), media_type=state.metrics.content_type)

    app.include_router(health_router(state))
    app.include_router(dashboard_router)  # /dashboard: pages and JSON behind server.admin_key (read-only)
    app.include_router(feedback_router(state))
    app.include_router(admin_router(state))
    install_openapi(app, config)
    return app
