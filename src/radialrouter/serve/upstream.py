"""Calls to the backend LLMs: one client per backend — an ``aiohttp`` session when aiohttp is installed (the
``serve`` extra; about a third of httpx's CPU per request, measured in docs/serving.md), else an ``httpx.AsyncClient``
whose connections are split over small pools (`ShardedTransport`) — per-backend cooldowns, and the rule for which
failures justify trying the router's next-best LLM. Either way the proxy sees httpx's interface: `AiohttpResponse`
has the part of ``httpx.Response`` it uses, and aiohttp's errors are raised as the matching ``httpx`` exceptions.

Fallback-worthy: timeouts, connection errors, 408, 429, 5xx, and 401/403 — a backend rejecting *our* configured
key is a server misconfiguration, never the client's mistake. Any other 4xx is the client's own error and is
returned as is. Waiting for a free connection in a backend's own pool (``pool_full``) is local saturation, not a
fault of that backend: it moves on to the next LLM but never starts a cooldown, and since pools are separate, a
hung backend can only exhaust its own.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from radialrouter.serve.config import LLMConfig, ServeConfig
from radialrouter.serve.responses import dumps as dump_json

try:
    import aiohttp
except ImportError:  # pragma: no cover - depends on the installed extras
    aiohttp = None  # type: ignore[assignment]

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


class ShardedTransport(httpx.AsyncBaseTransport):
    """One backend's connections split over pools of at most ``shard_size``; each request goes to the pool with
    the fewest requests in progress.

    Why: httpcore's pool walks all of its connections on every request and every response (and polls each idle
    socket), so one pool's cost per request grows with the connections open to a busy backend — at 16 requests
    in flight to one backend that doubled the server's CPU per request against the same traffic spread over three
    backends (`benchmarks/serve_load.py`). Small pools bound that walk; the total stays ``size``.
    """

    def __init__(self, size: int, shard_size: int = 4, keepalive_expiry: float = 4.0) -> None:
        count = max(1, math.ceil(size / shard_size))
        self.per_shard = math.ceil(size / count)
        self._limits = httpx.Limits(max_connections=self.per_shard, max_keepalive_connections=self.per_shard,
                                    keepalive_expiry=keepalive_expiry)
        self._ssl = httpx.create_ssl_context()  # one for all shards: each costs a read of the CA bundle
        self.shards: list[httpx.AsyncHTTPTransport | None] = [None] * count  # created when first needed
        self.in_progress = [0] * count

    def _pick(self) -> int:
        """The first pool with a free connection (light traffic keeps reusing the same few), else the least busy."""
        for i, busy in enumerate(self.in_progress):
            if busy < self.per_shard:
                return i
        return self.in_progress.index(min(self.in_progress))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        i = self._pick()
        shard = self.shards[i]
        if shard is None:
            shard = self.shards[i] = httpx.AsyncHTTPTransport(verify=self._ssl, limits=self._limits)
        self.in_progress[i] += 1
        try:
            response = await shard.handle_async_request(request)
        except BaseException:
            self.in_progress[i] -= 1
            raise
        response.stream = _Releasing(response.stream, lambda: self._release(i))
        return response

    def _release(self, i: int) -> None:
        self.in_progress[i] -= 1

    async def aclose(self) -> None:
        for shard in self.shards:
            if shard is not None:
                await shard.aclose()


class _Releasing(httpx.AsyncByteStream):
    """A response body that tells its shard once when it is closed (read to the end, or abandoned)."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self.stream, self.release = stream, release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.stream:
            yield chunk

    async def aclose(self) -> None:
        release, self.release = self.release, None
        try:
            await self.stream.aclose()
        finally:
            if release is not None:
                release()


#: asyncio's timeout is the builtin ``TimeoutError`` from Python 3.11 on, a class of its own before.
_TIMEOUTS: tuple[type[BaseException], ...] = tuple({TimeoutError, asyncio.TimeoutError})


def _as_httpx(exc: BaseException) -> httpx.HTTPError:
    """aiohttp's error as the httpx exception `classify` expects (timeouts, connection failures, broken bodies)."""
    message = str(exc) or type(exc).__name__
    if aiohttp is not None and isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, _TIMEOUTS):  # aiohttp's socket read timeouts subclass asyncio's
        return httpx.ReadTimeout(message)
    if aiohttp is not None:
        if isinstance(exc, aiohttp.ClientConnectorError):
            return httpx.ConnectError(message)
        if isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)):
            return httpx.RemoteProtocolError(message)
        if isinstance(exc, aiohttp.ClientConnectionError):
            return httpx.ReadError(message)
    return httpx.TransportError(message)


_ERRORS: tuple[type[BaseException], ...] = _TIMEOUTS + ((aiohttp.ClientError,) if aiohttp is not None else ())


class AiohttpResponse:
    """An aiohttp response with the part of ``httpx.Response``'s interface the proxy uses (``status_code``,
    ``headers``, ``content``, ``json()``, ``aiter_lines()``, ``aread()``, ``aclose()``); errors come out as httpx
    exceptions. Closing it frees its slot in the backend's pool (`_Backend`), once."""

    def __init__(self, response: Any, release: Callable[[], None]) -> None:
        self._response, self._release = response, release
        self.status_code: int = response.status
        self.headers = response.headers  # case-insensitive, like httpx's
        self.content = b""
        self._complete = False

    async def aread(self) -> bytes:
        try:
            self.content = await self._response.read()
        except _ERRORS as exc:
            raise _as_httpx(exc) from exc
        self._complete = True
        return self.content

    def json(self) -> Any:
        return json.loads(self.content)  # not orjson: it turns integers beyond 64 bits into floats

    async def aiter_lines(self) -> AsyncIterator[str]:
        """The body's lines as they arrive (``\n`` or ``\r\n`` ends a line, as httpx splits them)."""
        buffer = b""
        try:
            async for chunk in self._response.content.iter_any():
                buffer += chunk
                if b"\n" not in chunk:
                    continue
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    yield line.rstrip(b"\r").decode("utf-8", "replace")
        except _ERRORS as exc:
            raise _as_httpx(exc) from exc
        self._complete = True
        if buffer:
            yield buffer.rstrip(b"\r").decode("utf-8", "replace")

    async def aclose(self) -> None:
        release, self._release = self._release, None
        if release is None:
            return
        if self._complete:
            self._response.release()  # the connection goes back to the pool
        else:
            self._response.close()  # a body left unread: the connection is dropped, never reused half-read
        release()


class _Backend:
    """One backend's aiohttp session: its own connections (at most ``size``, idle ones dropped after 4 s), and a
    semaphore that bounds waiting for a free one to ``pool_timeout_s`` — raised as ``httpx.PoolTimeout``, which
    `classify` calls ``pool_full`` (local saturation, not the backend's fault)."""

    def __init__(self, llm: LLMConfig, size: int, connect_timeout_s: float, pool_timeout_s: float) -> None:
        self.slots = asyncio.Semaphore(size)
        self.pool_timeout_s = pool_timeout_s
        connector = aiohttp.TCPConnector(limit=size, keepalive_timeout=4.0, ttl_dns_cache=300)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=True, trust_env=False)
        self.url = f"{llm.base_url}/chat/completions"
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s, sock_read=llm.timeout_s)
        self.headers = {"content-type": "application/json", "accept": "application/json"}
        if llm.api_key is not None:
            self.headers["authorization"] = f"Bearer {llm.api_key.get()}"

    async def send(self, body: bytes, stream: bool) -> AiohttpResponse:
        if self.slots.locked():
            try:
                await asyncio.wait_for(self.slots.acquire(), self.pool_timeout_s)
            except _TIMEOUTS:
                raise httpx.PoolTimeout(f"no free connection within {self.pool_timeout_s} s") from None
        else:
            await self.slots.acquire()
        try:
            response = await self.session.post(self.url, data=body, headers=self.headers, timeout=self.timeout)
        except BaseException as exc:
            self.slots.release()
            if isinstance(exc, _ERRORS):
                raise _as_httpx(exc) from exc
            raise
        out = AiohttpResponse(response, self.slots.release)
        if not stream:
            try:
                await out.aread()
            finally:
                await out.aclose()
        return out

    async def aclose(self) -> None:
        await self.session.close()


class Upstream:
    """Backends by pool name. ``order`` puts backends that failed within ``cooldown_s`` last (not out: when every
    candidate is cooling down, trying one still beats refusing the request).

    With aiohttp installed and no ``transport`` given, each backend is an aiohttp session (`_Backend`); a
    ``transport`` (tests: ``httpx.MockTransport``) or a missing aiohttp selects httpx clients. Build it on the event
    loop that will use it."""

    def __init__(self, config: ServeConfig, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.llms = {llm.name: llm for llm in config.llms}
        self.cooldown_s = config.server.cooldown_s
        self._cool_until: dict[str, float] = {}
        self.connect_timeout_s, self.pool_timeout_s = config.server.connect_timeout_s, config.server.pool_timeout_s
        self.backends: dict[str, _Backend] = {}
        self.clients: dict[str, httpx.AsyncClient] = {}
        for llm in config.llms:
            size = llm.max_connections or config.server.max_connections
            if aiohttp is not None and transport is None:
                self.backends[llm.name] = _Backend(llm, size, self.connect_timeout_s, self.pool_timeout_s)
            else:
                self.clients[llm.name] = self._client(size, transport)

    @staticmethod
    def _client(size: int, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
        # Idle connections are dropped after 4 s, before a backend with the common 5 s keep-alive timeout closes
        # them: reusing a connection the server is closing at that instant fails the request.
        return httpx.AsyncClient(transport=transport or ShardedTransport(size, keepalive_expiry=4.0))

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()
        for backend in self.backends.values():
            await backend.aclose()

    def cooling(self) -> list[str]:
        now = time.monotonic()
        return [name for name, until in self._cool_until.items() if until > now]

    def order(self, names: list[str]) -> list[str]:
        if not self._cool_until:
            return list(names)
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
        return self.clients[llm.name].build_request("POST", f"{llm.base_url}/chat/completions",
                                                    content=dump_json(body), headers=headers, timeout=timeout)

    async def send(self, name: str, body: dict, stream: bool) -> httpx.Response | AiohttpResponse:
        """Send ``body`` to backend ``name`` with its upstream model id. With ``stream`` the body is not read:
        the caller iterates it and must close the response."""
        llm = self.llms[name]
        body = {**body, "model": llm.upstream_model}
        backend = self.backends.get(name)
        if backend is not None:
            return await backend.send(dump_json(body), stream)
        return await self.clients[name].send(self._request(llm, body), stream=stream)
