"""Per-key rate limits — requests per minute and tokens per minute — with a sliding-window counter.

The window is the last 60 s, estimated from two fixed one-minute counters (the approach of Cloudflare's and
Redis' sliding-window limiters): ``estimate = previous minute × (share of it still inside the window) + current
minute``. Unlike a fixed window it does not let a key send twice its limit across a minute boundary, and unlike a
log of every request it costs two counters per key, which is what lets the PostgreSQL limiter
(`radialrouter.serve.pg.PgRateLimiter`) do a check and its increment in one ``UPDATE``.

A request is admitted while the key's estimated requests, plus this one, stay within ``requests_per_minute`` and
its estimated tokens are below ``tokens_per_minute``. Tokens are the prompt tokens the server counted, booked at
admission, plus the completion tokens, booked when the request ends — so, as with budgets, a key can exceed its
token limit by at most the requests in flight when it was reached. Refusals are 429 ``rate_limit_exceeded`` with a
``Retry-After`` of the seconds until the estimate has room again.

`MemoryRateLimiter` holds the counters in the process (one server, SQLite ledger); with a PostgreSQL ledger every
replica shares them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from radialrouter.serve.config import ServeConfig
from radialrouter.serve.routing import RequestError

WINDOW_S = 60


@dataclass
class Window:
    """Counters of one key: the minute starting at ``start`` (epoch seconds) and the one before it."""

    start: int = 0
    requests: int = 0
    tokens: int = 0
    prev_requests: int = 0
    prev_tokens: int = 0

    def rolled(self, start: int) -> Window:
        """The counters as of the minute starting at ``start``."""
        if start == self.start:
            return Window(start, self.requests, self.tokens, self.prev_requests, self.prev_tokens)
        if start == self.start + WINDOW_S:
            return Window(start, 0, 0, self.requests, self.tokens)
        return Window(start)


@dataclass(frozen=True)
class Limit:
    requests_per_minute: int | None
    tokens_per_minute: int | None


def window_start(now: float) -> int:
    return int(now // WINDOW_S) * WINDOW_S


def estimate(prev: float, current: float, elapsed: float) -> float:
    """Sliding-window estimate; ``elapsed`` is the share (0..1) of the current minute gone."""
    return prev * (1.0 - elapsed) + current


def wait_until_within(prev: float, current: float, elapsed: float, target: float) -> float:
    """Seconds until ``estimate`` falls to ``target`` or below, counters unchanged meanwhile (0 if it already is)."""
    if estimate(prev, current, elapsed) <= target:
        return 0.0
    if current <= target and prev > 0:  # later in this minute, as the previous one slides out
        return (1.0 - (target - current) / prev - elapsed) * WINDOW_S
    # the next minute: this minute's count becomes the sliding one
    share = 1.0 if current <= 0 else min(1.0, max(0.0, 1.0 - target / current))
    return (1.0 - elapsed + share) * WINDOW_S


def admits(w: Window, limit: Limit, elapsed: float) -> bool:
    """Whether one more request fits (``w`` already rolled to the current minute)."""
    ok = True
    if limit.requests_per_minute is not None:
        ok &= estimate(w.prev_requests, w.requests, elapsed) + 1 <= limit.requests_per_minute
    if limit.tokens_per_minute is not None:
        ok &= estimate(w.prev_tokens, w.tokens, elapsed) < limit.tokens_per_minute
    return ok


def refusal(client: str, w: Window, limit: Limit, elapsed: float) -> RequestError:
    """The 429 for a refused request, with ``Retry-After`` (whole seconds, at least 1)."""
    waits, what = [], []
    rpm, tpm = limit.requests_per_minute, limit.tokens_per_minute
    if rpm is not None and estimate(w.prev_requests, w.requests, elapsed) + 1 > rpm:
        waits.append(wait_until_within(w.prev_requests, w.requests, elapsed, rpm - 1))
        what.append(f"{rpm} requests per minute")
    if tpm is not None and estimate(w.prev_tokens, w.tokens, elapsed) >= tpm:
        waits.append(wait_until_within(w.prev_tokens, w.tokens, elapsed, tpm - 1))
        what.append(f"{tpm} tokens per minute")
    after = max(1, math.ceil(max(waits, default=1.0)))
    return RequestError(f"Rate limit of {' and '.join(what) or 'this key'} reached for client {client!r}; retry in "
                        f"{after} s", status=429, code="rate_limit_exceeded", headers={"retry-after": str(after)})


def limits_from(config: ServeConfig) -> dict[str, Limit]:
    """The keys that have a rate limit (``auth.keys[].requests_per_minute`` / ``tokens_per_minute``)."""
    return {k.id: Limit(k.requests_per_minute, k.tokens_per_minute) for k in config.auth.keys
            if k.requests_per_minute is not None or k.tokens_per_minute is not None}


class MemoryRateLimiter:
    """Counters in this process: right for one server; replicas need the PostgreSQL limiter."""

    def __init__(self, config: ServeConfig, clock: Callable[[], float] = time.time) -> None:
        self.limits = limits_from(config)
        self.clock = clock
        self.windows: dict[str, Window] = {}

    async def admit(self, client: str, prompt_tokens: int) -> None:
        """Count a request (and its prompt tokens) or raise the 429. Runs on the event loop without awaiting."""
        limit = self.limits.get(client)
        if limit is None:
            return
        now = self.clock()
        start = window_start(now)
        w = self.windows.get(client, Window()).rolled(start)
        elapsed = (now - start) / WINDOW_S
        if not admits(w, limit, elapsed):
            self.windows[client] = w
            raise refusal(client, w, limit, elapsed)
        w.requests += 1
        w.tokens += max(0, int(prompt_tokens))
        self.windows[client] = w

    def finished(self, client: str, completion_tokens: int | None) -> None:
        """Book a finished request's output tokens."""
        if completion_tokens and client in self.limits and client in self.windows:
            self.windows[client].tokens += int(completion_tokens)
