"""Book-keeping of one chat request (`_Call`): the routing decision, the attempts, the tokens, the budget reservation;
it ends exactly once, as a ledger row, metrics and the settled cost."""

from __future__ import annotations

import itertools
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from functools import cached_property
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from radialrouter.ledger.store import LedgerRow, Settlement, committed
from radialrouter.serve.budgets import Reservation, cost_usd
from radialrouter.serve.routing import (
    RouteQuery,
    RouteResult,
    Target,
    context_text,
    requested_choices,
    requested_output_tokens,
    required_capabilities,
    routing_text,
)
from radialrouter.serve.upstream import LOCAL, Attempt

if TYPE_CHECKING:
    from radialrouter.serve.state import ServeState

log = logging.getLogger("radialrouter.serve")


# Outcomes after which the backend bills what it processed even though it reported no usage to us.
_BILLED = frozenset({"ok", "client_disconnected", "shutdown", "stream_error", "stream_truncated", "cancelled"})


# Requests refused before any backend call: counted in metrics, and only sampled into the decision log (a key
# hammering the server with refused requests must not write a row for each).
_REFUSED = frozenset({"refused", "no_candidate"})
OUTPUT_FOLD_CHARS = 256 * 1024


class _RequestIds:
    """Unique request ids with no system call per request (``uuid4`` reads the OS's random source each time, which
    also hands the GIL to the server's other threads): a random 64-bit prefix drawn once per process — again in a
    forked child — and a counter. Ids are unique, not secret: feedback by id is only accepted from the key that made
    the request."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self._prefix, self._count = f"rr-{uuid.uuid4().hex[:16]}", itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._count):016x}"


_request_ids = _RequestIds()


class _Call:
    """Book-keeping for one chat request: decision, attempts, tokens, budget reservation; ends (exactly once) as
    a ledger row, metrics and the settled cost."""

    def __init__(self, state: ServeState, client: str, body: dict, target: Target) -> None:
        self.state, self.client, self.body, self.target = state, client, body, target
        self.request_id = _request_ids.next()
        self.started = time.perf_counter()
        self.result: RouteResult | None = None
        self.attempts: list[Attempt] = []
        self.llm: str | None = target.llm
        self.usage: tuple[int, int] | None = None  # backend-reported
        self.choices = requested_choices(body)  # `n`: every choice is generated and billed
        self.prompt_tokens = 0  # upper bound on what a provider bills for the prompt (windows, reservations)
        self.prompt_counted = True  # False while `prompt_tokens` is the byte bound (`ServeState.count_deferred`)
        # Output relayed, counted only if no usage comes (`charge`): no tokenizer call per streamed chunk. Long
        # answers are folded into `output_tokens` every OUTPUT_FOLD_CHARS characters, so memory stays bounded.
        self.output_parts: list[str] = []
        self.output_chars = self.output_tokens = 0
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

    def exact_prompt_tokens(self) -> int:
        """The tokenizer's prompt bound, counted now if `ServeState.count_deferred` skipped it."""
        if not self.prompt_counted:
            self.prompt_tokens = self.state.decider.prompt_tokens(self.body, self.context)
            self.prompt_counted = True
        return self.prompt_tokens

    def query(self) -> RouteQuery:
        metadata = self.body.get("metadata") or {}
        return RouteQuery(text=self.prompt, prompt_tokens=self.prompt_tokens,
                          max_output=requested_output_tokens(self.body), needs=required_capabilities(self.body),
                          lam=self.target.lam, context=metadata.get(self.state.config.router.context_key))

    def add_output(self, text: str) -> None:
        """Keep relayed output, to charge it when the backend reports no usage for a complete answer."""
        if text:
            self.output_parts.append(text)
            self.output_chars += len(text)
            if self.output_chars > OUTPUT_FOLD_CHARS:
                self._fold_output()

    def _fold_output(self) -> None:
        if self.output_parts:
            self.output_tokens += self.state.decider.text_bound("".join(self.output_parts))
            self.output_parts, self.output_chars = [], 0

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
        p = self.exact_prompt_tokens()
        if status == "ok":
            self._fold_output()
            c = self.output_tokens
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
            self.commit = s.ledger.record_async(LedgerRow(
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
