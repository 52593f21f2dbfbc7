"""The HTTP layer around the app: uvicorn with a header-read timeout, a client-connection cap, query strings kept
out of its logs, and a hook that lets the app end open streams before uvicorn's graceful-shutdown timeout.

uvicorn has no timeout for reading a request's headers (only ``timeout_keep_alive`` for the idle wait between
requests), so a client holding partial headers keeps its connection — and a slot under ``limit_concurrency`` —
forever. `GuardedHttpToolsProtocol` (uvicorn's httptools protocol, used when ``httptools`` is installed: the
``serve`` extra's ``uvicorn[standard]``) and `GuardedH11Protocol` (the pure-Python h11 fallback) close it after
``header_timeout_s``. They subclass uvicorn's protocols and rely on their ``transport``, ``client`` and ``loop``
attributes, and on ``conn`` (the ``h11.Connection``) or the httptools parser callbacks (checked against uvicorn
0.55). The event loop is uvloop when installed: with httptools it halves the HTTP layer's CPU per request
(docs/serving.md, Performance).
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

try:  # uvicorn[standard]: a C HTTP parser and a libuv event loop
    import httptools  # noqa: F401 - uvicorn's protocol below imports it; checked here to pick the protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - depends on the installed extras
    HttpToolsProtocol = None  # type: ignore[assignment,misc]
try:
    import uvloop  # noqa: F401
    LOOP = "uvloop"
except ImportError:  # pragma: no cover - depends on the installed extras
    LOOP = "asyncio"

from radialrouter.serve.config import ServerConfig

log = logging.getLogger("radialrouter.serve.http")
#: Loggers of uvicorn whose records can carry a request target: access lines, trace-level ASGI scopes, errors.
UVICORN_LOGGERS = ("uvicorn.access", "uvicorn.asgi", "uvicorn.error")
_QUERY = re.compile(r"\?[^\s\"']*")


class _HeaderDeadline:
    """A deadline for each request's headers, shared by the h11 and httptools protocols: armed when a connection
    opens and at the first byte of each later request on a keep-alive connection, disarmed once a complete request
    head is parsed; a connection that misses it is closed. Trickling bytes does not restart it. Subclasses say
    whether a head is still awaited (`_head_pending`) and how to close (`_close_connection`)."""

    header_timeout_s: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    @classmethod
    def with_timeout(cls, header_timeout_s: float) -> type:
        """A subclass with its own deadline: uvicorn instantiates ``http`` classes with fixed arguments only."""
        return type(cls.__name__, (cls,), {"header_timeout_s": float(header_timeout_s)})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if self._head_pending() and not self.transport.is_closing():  # type: ignore[attr-defined]
            if self._header_timer is None:
                self._arm_header_timer()
        else:  # a complete request head was parsed (or the connection failed): the app's timeouts apply now
            self._disarm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)  # type: ignore

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._head_pending():  # type: ignore[attr-defined]
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown client"  # type: ignore
        log.warning("closing the connection from %s: no complete request headers within %g s", client,
                    self.header_timeout_s)
        self._close_connection()

    def _head_pending(self) -> bool:
        raise NotImplementedError

    def _close_connection(self) -> None:
        self.transport.close()  # type: ignore[attr-defined]


class GuardedH11Protocol(_HeaderDeadline, H11Protocol):
    """uvicorn's h11 protocol plus a deadline for each request's headers (`_HeaderDeadline`). Use `with_timeout`
    to get a class for a given deadline."""

    def _head_pending(self) -> bool:
        # IDLE on their side: still waiting for (the rest of) a request head, e.g. the next one on a keep-alive
        # connection, whose idle wait uvicorn's keep-alive timer covered until this data cancelled it.
        return self.conn.their_state is h11.IDLE

    def _close_connection(self) -> None:
        try:
            self.conn.send(h11.ConnectionClosed())
        except h11.LocalProtocolError:  # mid-response on our side; closing is all that is left
            pass
        self.transport.close()


if HttpToolsProtocol is not None:
    class GuardedHttpToolsProtocol(_HeaderDeadline, HttpToolsProtocol):
        """uvicorn's httptools protocol plus the same deadline for each request's headers (`_HeaderDeadline`): a
        head is awaited from the moment the connection opens and from the first byte of each later request
        (httptools' ``on_message_begin``) until ``on_headers_complete``."""

        _awaiting_head = True

        def _head_pending(self) -> bool:
            return self._awaiting_head

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._awaiting_head = True

        def on_headers_complete(self) -> None:
            self._awaiting_head = False
            self._disarm_header_timer()
            super().on_headers_complete()
else:  # pragma: no cover - depends on the installed extras
    GuardedHttpToolsProtocol = None  # type: ignore[assignment,misc]


def http_protocol(header_timeout_s: float) -> type:
    """The guarded protocol class for uvicorn: httptools when installed, else h11."""
    base = GuardedHttpToolsProtocol if GuardedHttpToolsProtocol is not None else GuardedH11Protocol
    return base.with_timeout(header_timeout_s)


class RedactQueryString(logging.Filter):
    """Drops query strings (``?api_key=...``) from uvicorn's log records: clients put keys there.

    Access records keep their five arguments ``(client, method, path, http_version, status)`` (uvicorn's
    AccessFormatter unpacks exactly these); only ``?`` and what follows is removed from string arguments, and a
    trace-level ASGI scope loses its ``query_string``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(_redact(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _redact(value) for key, value in record.args.items()}
        return True


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return _QUERY.sub("", value) if "?" in value else value
    if isinstance(value, dict) and value.get("query_string"):
        return {**value, "query_string": b"<redacted>"}
    return value


def install_log_redaction() -> None:
    """Add `RedactQueryString` to uvicorn's loggers once (it survives uvicorn's own logging dictConfig)."""
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactQueryString) for f in logger.filters):
            logger.addFilter(RedactQueryString())


class GracefulServer(uvicorn.Server):
    """A uvicorn server that calls ``on_shutdown`` (on the event loop) before its own graceful shutdown.

    uvicorn then stops accepting, waits ``timeout_graceful_shutdown`` for open requests and cancels the rest; the
    hook lets the app end open streams with an in-band error event in that time instead of a cut connection.

    Drain: the first SIGTERM/SIGINT calls ``on_drain`` (readiness turns 503) and, with ``drain_s`` > 0, the server
    keeps accepting and serving that long before the shutdown above starts, so a load balancer polling readiness
    takes the replica out of rotation first. A second signal skips what is left of the drain."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None] | None = None,
                 on_drain: Callable[[], None] | None = None, drain_s: float = 0.0) -> None:
        super().__init__(config)
        self.on_shutdown, self.on_drain, self.drain_s = on_shutdown, on_drain, drain_s
        self._drain_until: float | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self._drain_until is None and not self.should_exit:
            if self.on_drain is not None:
                self.on_drain()
            if self.drain_s > 0:
                self._captured_signals.append(sig)
                self._drain_until = time.monotonic() + self.drain_s
                log.info("draining for %g s before shutting down", self.drain_s)
                return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_until is not None and time.monotonic() >= self._drain_until:
            self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.on_shutdown is not None:
            try:
                self.on_shutdown()
            except Exception:  # a failing hook must not keep the server from shutting down
                log.exception("shutdown hook failed")
        await super().shutdown(sockets)


def make_server(app: Any, *, host: str | None = None, port: int | None = None, server: ServerConfig | None = None,
                log_level: str = "info", access_log: bool = True,
                on_shutdown: Callable[[], None] | None = None,
                on_drain: Callable[[], None] | None = None) -> GracefulServer:
    """The uvicorn server for ``app`` with the HTTP-layer guards of ``server`` (`ServerConfig` defaults if None).

    ``host``/``port`` default to ``server``'s. Without ``on_shutdown``, the routing app's
    ``app.state.serve.begin_shutdown`` is used when it has one. WebSockets are off (no endpoint uses them, and
    uvicorn's WebSocket handlers log request targets with their query strings)."""
    server = server if server is not None else ServerConfig()
    state = getattr(getattr(app, "state", None), "serve", None)
    if on_shutdown is None:
        on_shutdown = getattr(state, "begin_shutdown", None)
    if on_drain is None:
        on_drain = getattr(state, "begin_drain", None)
    config = uvicorn.Config(
        app, host=host if host is not None else server.host, port=port if port is not None else server.port,
        http=http_protocol(server.header_timeout_s), loop=LOOP, ws="none", lifespan="on",
        limit_concurrency=server.max_client_connections, timeout_graceful_shutdown=server.shutdown_grace_s + 2,
        log_level=log_level, access_log=access_log)
    install_log_redaction()  # after uvicorn.Config, which (re)configures uvicorn's loggers
    return GracefulServer(config, on_shutdown=on_shutdown, on_drain=on_drain, drain_s=server.drain_s)
