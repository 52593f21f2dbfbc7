"""`ServeState`: everything a running gateway holds — config, router and decider, upstream client, budgets, rate
limits, ledger, metrics, admission — and the per-request steps the endpoints call (authenticate, read the body,
decide, admit, reserve). Endpoints get it passed in (``chat_router(state)``), never by importing the app."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import httpx
from fastapi import FastAPI, Request

from radialrouter.core.tokens import load_tokenizer
from radialrouter.learning.exploration import Explorer
from radialrouter.ledger.store import Ledger
from radialrouter.routers import Router
from radialrouter.serve.api.admin import router_version
from radialrouter.serve.api.health import REPLICA_ENV, replica_id
from radialrouter.serve.api.validation import check_json_tree, max_output_tokens
from radialrouter.serve.batching import MicroBatcher, QueueFull, TurnBatcher
from radialrouter.serve.budgets import Budgets
from radialrouter.serve.config import ServeConfig
from radialrouter.serve.metrics import Metrics
from radialrouter.serve.ratelimit import MemoryRateLimiter
from radialrouter.serve.routing import (
    Decider,
    RequestError,
    RouteQuery,
    RouteResult,
    check_pool,
    context_refusal,
    decides_inline,
    load_router,
    requested_output_tokens,
    router_dir,
)
from radialrouter.serve.upstream import Upstream

if TYPE_CHECKING:
    from radialrouter.serve.calls import _Call

log = logging.getLogger("radialrouter.serve")


INLINE_BYTES = 64 * 1024  # bodies up to this size are parsed and counted on the event loop (microseconds)


#: GIL switch interval while serving (CPython's default is 5 ms; see `ServeState.lifespan`).
GIL_SWITCH_INTERVAL_S = 0.0005


REFUSAL_SAMPLE_S = 60.0  # at most one logged refusal per key and outcome this often


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
        self.route_inline = decides_inline(config, self.decider)
        self._switch_interval: float | None = None  # CPython's, while serving (restored at shutdown)
        self.batcher = MicroBatcher(self.decider.decide, max_size=config.server.batch_max_size,
                                    max_wait_s=config.server.batch_max_wait_ms / 1000,
                                    on_batch=self.metrics.batch_size.observe, max_queue=config.server.max_routing_queue)
        self.turn_batcher = TurnBatcher(lambda queries: self.decider.decide(queries),
                                        max_size=config.server.batch_max_size, on_batch=self.metrics.batch_size.observe)
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
        # Inline routing has no such thread: the interval stays as it is.
        self._switch_interval = sys.getswitchinterval()
        self.set_routing_inline(self.route_inline)
        try:
            yield
        finally:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None
            await self.batcher.stop()
            await self.upstream.aclose()
            if self.ledger is not None:
                self.ledger.close()
            if self.shared is not None:
                self.shared.close()
            queries = getattr(self, "dashboard_queries", None)  # the dashboard's read-only engine, once opened
            if queries is not None:
                queries.engine.dispose()

    def set_routing_inline(self, inline: bool) -> None:
        """Decide on the event loop or in the routing thread from the next request on (at start, and on a hot
        swap), with the GIL switch interval that goes with it."""
        self.route_inline = inline
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval if inline else
                                  min(self._switch_interval, GIL_SWITCH_INTERVAL_S))
        log.info("routing decisions are made %s (server.routing_thread: %s)",
                 "on the event loop" if inline else "in the routing thread", self.config.server.routing_thread)

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
        token = _bearer(request)
        if token:
            for key in self.keys.values():
                if hmac.compare_digest(token, key.key.get().encode()):
                    return key.id
        raise RequestError("Incorrect or missing API key: send 'Authorization: Bearer <key>'", status=401,
                           code="invalid_api_key")

    def is_operator(self, request: Request) -> bool:
        """Whether the request carries ``server.admin_key`` as its bearer token."""
        admin, token = self.config.server.admin_key, _bearer(request)
        return admin is not None and token is not None and hmac.compare_digest(token, admin.get().encode())

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
            async with _deadline(self.config.server.body_timeout_s):
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

    async def prepare(self, call: _Call, size: int, exact: bool = True) -> None:
        """Bound the prompt's tokens and cut the routing text: inline for small bodies, in a thread for large. A
        request for one LLM whose context window the bound overflows is refused here, before any backend call.

        ``exact=False`` (chat requests) skips the tokenizer pass when nothing needs it before the backend answers
        (`count_deferred`): the byte bound stands in, and `_Call.charge` counts only if no usage comes back."""
        def work() -> None:
            call.prompt_tokens = self.decider.prompt_tokens(call.body, call.context)
            _ = call.prompt

        if not exact and size <= INLINE_BYTES and self.count_deferred(call):
            _ = call.prompt
        elif size <= INLINE_BYTES:
            work()
        else:
            await anyio.to_thread.run_sync(work, limiter=self._heavy)
        if call.target.llm is not None:
            llm, max_output = self.config.llm(call.target.llm), requested_output_tokens(call.body)
            if call.prompt_tokens + max_output > llm.context_window:
                raise context_refusal(call.prompt_tokens, max_output, llm)

    def count_deferred(self, call: _Call) -> bool:
        """Whether the prompt's tokenizer count can wait (and usually be skipped): its byte bound (`token_bound`,
        which needs no tokenizer and is never below the count's bound) already fits every window the request can
        reach, and the key has no token rate limit and no budget shared through PostgreSQL — the other users of the
        count before the backend's usage arrives. Then ``call.prompt_tokens`` is the byte bound until
        `_Call.exact_prompt_tokens` replaces it: when the backend reports no usage, or when `reserve` finds that
        a reservation on the byte bound would not fit what is left of the key's budget."""
        limit = self.limiter.limits.get(call.client)
        if (call.client in self.budgets.limits and self.shared is not None) or (
                limit is not None and limit.tokens_per_minute is not None):
            return False
        bound = self.decider.quick_prompt_bound(call.body, call.context)
        max_output = requested_output_tokens(call.body)
        if call.target.llm is not None:
            fits = bound + max_output <= self.config.llm(call.target.llm).context_window
        else:
            fits = self.decider.fits_every_window(bound, max_output)
        if fits:
            call.prompt_tokens, call.prompt_counted = bound, False
        return fits

    async def decide(self, call: _Call, early: asyncio.Task | None = None) -> RouteResult:
        """The routing decision: ``early``'s (see `start_decision`) once the count confirmed it, else a new one."""
        if early is not None:
            result = await early
            result.prompt_tokens = call.prompt_tokens
            return result
        return await self._decide(call.query())

    def start_decision(self, call: _Call, size: int) -> asyncio.Task | None:
        """Start routing before the prompt's tokens are counted (see `early_query`), so that the count (on the
        loop) and the decision (in the routing thread) overlap; None when routing must wait for the count, or
        decides on the event loop anyway (`route_inline`: nothing to overlap)."""
        query = None if self.route_inline else self.early_query(call, size)
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
        """A decision made on the event loop (`route_inline`: it costs less than a hand-over to the routing thread
        and back) — on the spot for a request alone, else with the others of this turn (`TurnBatcher`) — or by the
        micro-batcher in the routing thread."""
        with self.metrics.decision_seconds.time():
            if self.route_inline:
                if self.in_flight > 1:  # others may reach this point in the same turn of the loop: decided together
                    return await self.turn_batcher.submit(query)
                self.metrics.batch_size.observe(1)
                result = self.decider.decide([query])[0]
                if isinstance(result, BaseException):
                    raise result
                return result
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
        """Reserve the worst case over every LLM the request may be sent to (`Budgets.worst_case`). A prompt not
        counted yet (`count_deferred`) reserves on its byte bound when that fits what is left of the key's budget
        — the request then cannot take the key past its budget at all — and is counted first otherwise, so that a
        key near its limit reserves the counted bound, as it always did."""
        max_output = requested_output_tokens(call.body)

        def worst_case() -> float:
            return max(self.budgets.worst_case(self.config.llm(n), call.prompt_tokens, max_output, call.choices)
                       for n in plan)

        amount = worst_case()
        if not call.prompt_counted and call.client in self.budgets.limits and amount > self.budgets.room(call.client):
            call.exact_prompt_tokens()
            amount = worst_case()
        try:
            call.reservation = await self.budgets.areserve(call.client, amount)
        except RequestError as exc:
            self.metrics.rejected.labels("budget_exceeded" if exc.status == 429 else exc.code).inc()
            raise


def _deadline(seconds: float) -> Any:
    """An async timeout scope raising ``TimeoutError``: asyncio's own on Python 3.11+ (one timer handle; anyio's
    cancel scope was 6 % of the event loop's samples in the bypass profile, docs/serving.md), else anyio's."""
    timeout = getattr(asyncio, "timeout", None)
    return timeout(seconds) if timeout is not None else _anyio_deadline(seconds)


@asynccontextmanager
async def _anyio_deadline(seconds: float) -> AsyncIterator[None]:
    with anyio.fail_after(seconds):
        yield


def _bearer(request: Request) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header (compared in constant time by the callers)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip().encode() if scheme.lower() == "bearer" and token else None


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
