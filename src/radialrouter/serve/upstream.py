"""Calls to the backend LLMs: one ``httpx.AsyncClient`` — one connection pool — per backend, per-backend
cooldowns, and the rule for which failures justify trying the router's next-best LLM.

Fallback-worthy: timeouts, connection errors, 408, 429, 5xx, and 401/403 — a backend rejecting *our* configured
key is a server misconfiguration, never the client's mistake. Any other 4xx is the client's own error and is
returned as is. Waiting for a free connection in a backend's own pool (``pool_full``) is local saturation, not a
fault of that backend: it moves on to the next LLM but never starts a cooldown, and since pools are separate, a
hung backend can only exhaust its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from radialrouter.serve.config import LLMConfig, ServeConfig

RETRYABLE_STATUS = frozenset({401, 403, 408, 429})
LOCAL = "pool_full"  # an attempt that never reached the backend


def is_retryable(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500


@dataclass
class Attempt:
    llm: str
    error: str  # "timeout", "connect", "pool_full", "http_503", "bad_response", "empty_stream"
    retry_after: float | None = None  # the backend's Retry-After (seconds), when it sent one

    def to_dict(self) -> dict[str, str]:
        return {"llm": self.llm, "error": self.error}


def classify(exc: Exception) -> str:
    if isinstance(exc, httpx.PoolTimeout):
        return LOCAL
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return "connect"
    return "transport"


def retry_after(response: httpx.Response) -> float | None:
    """A Retry-After given in seconds (the HTTP-date form is rare from LLM APIs and is ignored)."""
    value = response.headers.get("retry-after", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds < 86_400 else None


class Upstream:
    """Backends by pool name. ``order`` puts backends that failed within ``cooldown_s`` last (not out: when every
    candidate is cooling down, trying one still beats refusing the request)."""

    def __init__(self, config: ServeConfig, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.llms = {llm.name: llm for llm in config.llms}
        self.cooldown_s = config.server.cooldown_s
        self._cool_until: dict[str, float] = {}
        self.connect_timeout_s, self.pool_timeout_s = config.server.connect_timeout_s, config.server.pool_timeout_s
        self.clients = {llm.name: self._client(llm.max_connections or config.server.max_connections, transport)
                        for llm in config.llms}

    @staticmethod
    def _client(size: int, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
        # Idle connections are dropped after 4 s, before a backend with the common 5 s keep-alive timeout closes
        # them: reusing a connection the server is closing at that instant fails the request.
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size, keepalive_expiry=4.0)
        return httpx.AsyncClient(limits=limits, transport=transport)

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    def cooling(self) -> list[str]:
        now = time.monotonic()
        return [name for name, until in self._cool_until.items() if until > now]

    def order(self, names: list[str]) -> list[str]:
        cooling = set(self.cooling())
        return [n for n in names if n not in cooling] + [n for n in names if n in cooling]

    def failed(self, name: str) -> None:
        if self.cooldown_s > 0:
            self._cool_until[name] = time.monotonic() + self.cooldown_s

    def succeeded(self, name: str) -> None:
        self._cool_until.pop(name, None)

    def _request(self, llm: LLMConfig, body: dict) -> httpx.Request:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if llm.api_key is not None:
            headers["authorization"] = f"Bearer {llm.api_key.get()}"
        timeout = httpx.Timeout(llm.timeout_s, connect=self.connect_timeout_s, pool=self.pool_timeout_s)
        return self.clients[llm.name].build_request("POST", f"{llm.base_url}/chat/completions", json=body,
                                                    headers=headers, timeout=timeout)

    async def send(self, name: str, body: dict, stream: bool) -> httpx.Response:
        """Send ``body`` to backend ``name`` with its upstream model id. With ``stream`` the body is not read:
        the caller iterates it and must close the response."""
        llm = self.llms[name]
        return await self.clients[name].send(self._request(llm, {**body, "model": llm.upstream_model}), stream=stream)
