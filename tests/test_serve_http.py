"""The HTTP layer of ``radialrouter serve`` (radialrouter.serve.server), against a real server subprocess on 127.0.0.1.

The subprocess serves a best-single router (no encoder loads) in front of an in-process fake backend hub, with a
1 s header timeout and a cap of 40 client connections, so each guard can be hit in about a second.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from types import SimpleNamespace

import httpx
import pytest
import yaml
from fastapi import FastAPI
from uvicorn.logging import AccessFormatter

from radialrouter.data import make_synthetic
from radialrouter.routers import make_router
from radialrouter.serve.server import GracefulServer, RedactQueryString
from radialrouter.serve.testing import ServerThread, fake_backends

KEY = "sk-http-test-client"
CANARY = "sk-CANARY-123"
HEADER_TIMEOUT_S, MAX_CONNECTIONS, BODY_TIMEOUT_S = 1.0, 40, 1.0
HOST = "127.0.0.1"
CHAT = {"model": "cheap", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def backends():
    with fake_backends(("cheap", "mid", "strong"), keep_requests=False) as hub:
        yield hub


@pytest.fixture(scope="module")
def served(tmp_path_factory, backends):
    """One ``radialrouter serve --log-level info`` subprocess; its stdout and stderr go to ``log``."""
    tmp = tmp_path_factory.mktemp("serve_http")
    make_router("best-single").fit(make_synthetic(n_queries=60, n_llms=3, seed=0).select("train")).save_pretrained(
        tmp / "router")
    llms = [{"name": name, "base_url": f"{backends[1]}/{name}/v1", "router_llm": f"llm-{i}", "input_price": 1.0,
             "output_price": 2.0, "context_window": 100_000} for i, name in enumerate(("cheap", "mid", "strong"))]
    config = {"router": {"path": "router"}, "llms": llms, "ledger": {"path": None},
              "server": {"header_timeout_s": HEADER_TIMEOUT_S, "max_client_connections": MAX_CONNECTIONS,
                         "batch_max_wait_ms": 1, "body_timeout_s": BODY_TIMEOUT_S},
              "auth": {"keys": [{"id": "tester", "key": "${RR_HTTP_TEST_KEY}"}]}}
    (tmp / "serve.yaml").write_text(yaml.safe_dump(config))
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    log = tmp / "serve.log"
    env = {**os.environ, "RR_HTTP_TEST_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-c", "from radialrouter.cli import main; main()", "serve", "--config",
               str(tmp / "serve.yaml"), "--port", str(port), "--log-level", "info"]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"server exited early:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"server did not come up:\n{log.read_text()[-3000:]}"
            with suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        yield SimpleNamespace(url=url, port=port, log=log, proc=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    assert CANARY not in log.read_text(errors="replace")  # shutdown logs included


def _connect(port: int) -> socket.socket:
    return socket.create_connection((HOST, port), timeout=5)


def _response_status(sock: socket.socket) -> int:
    """Read one whole response (headers and a content-length body) and return its status."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before a response")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    while length and len(body) < int(length.group(1)):
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    return int(head.split()[1])


def _closed_by_server(sock: socket.socket, deadline: float) -> bool:
    """True once the server closes (EOF or reset) before ``deadline``; any bytes it sends first are skipped."""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(4096):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


GET_HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def test_partial_headers_are_cut_off_while_others_are_served(served, backends):
    """30 connections stall mid-headers (plus one keep-alive connection on its second request): all are closed
    after the header timeout, while a quick request and one slower than the header timeout are both answered."""
    fake = backends[0]["cheap"]
    fake.delay_s = HEADER_TIMEOUT_S + 0.5
    socks: list[socket.socket] = []
    with ThreadPoolExecutor(1) as pool:
        try:
            start = time.monotonic()
            for _ in range(30):
                sock = _connect(served.port)
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                socks.append(sock)
            slow = pool.submit(httpx.post, f"{served.url}/v1/chat/completions", timeout=10, json=CHAT,
                               headers={"authorization": f"Bearer {KEY}"})
            keep_alive = _connect(served.port)
            keep_alive.sendall(GET_HEALTH)
            assert _response_status(keep_alive) == 200
            keep_alive.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            socks.append(keep_alive)
            assert httpx.get(f"{served.url}/health", timeout=5).status_code == 200
            time.sleep(0.3)
            for sock in socks:  # trickling bytes does not buy more time
                with suppress(OSError):
                    sock.sendall(b"x")
            deadline = start + HEADER_TIMEOUT_S + 2
            still_open = [i for i, sock in enumerate(socks) if not _closed_by_server(sock, deadline)]
            assert not still_open, f"{len(still_open)} of {len(socks)} stalled connections still open"
            r = slow.result(timeout=10)  # its headers were complete: the header deadline no longer applied
            assert r.status_code == 200 and r.json()["model"] == "cheap"
            assert httpx.get(f"{served.url}/health", timeout=5).status_code == 200
        finally:
            fake.delay_s = 0.0
            for sock in socks:
                sock.close()


def test_a_stalled_body_gets_408_after_the_body_timeout(served):
    """Complete headers, half a body, then nothing: 408 ``request_timeout`` once ``body_timeout_s`` has passed (the
    header deadline no longer applies), and the server keeps serving."""
    body = b'{"model": "cheap", "messages": [{"role": "user", "content": "hi"}]}'
    sock = _connect(served.port)
    try:
        start = time.monotonic()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: " + str(len(body)).encode()
                     + b"\r\n\r\n" + body[:20])
        sock.settimeout(BODY_TIMEOUT_S + 5)
        assert _response_status(sock) == 408
        assert BODY_TIMEOUT_S - 0.1 <= time.monotonic() - start < BODY_TIMEOUT_S + 3
    finally:
        sock.close()
    assert httpx.get(f"{served.url}/health", timeout=5).status_code == 200


def test_client_connections_are_capped(served):
    held: list[socket.socket] = []
    try:
        statuses = []
        for _ in range(MAX_CONNECTIONS + 5):  # idle keep-alive connections, each after one complete request
            sock = _connect(served.port)
            held.append(sock)
            sock.sendall(GET_HEALTH)
            statuses.append(_response_status(sock))
            if statuses[-1] == 503:
                break
        assert statuses[-1] == 503 and len(statuses) <= MAX_CONNECTIONS, statuses
        assert set(statuses[:-1]) == {200}
        with suppress(httpx.HTTPError):  # beyond the cap: 503 (or a refused connection)
            assert httpx.get(f"{served.url}/health", timeout=5).status_code == 503
    finally:
        for sock in held:
            sock.close()
    deadline, status = time.monotonic() + 5, None
    while time.monotonic() < deadline and status != 200:
        time.sleep(0.1)
        with suppress(httpx.HTTPError):
            status = httpx.get(f"{served.url}/health", timeout=5).status_code
    assert status == 200


def test_query_strings_stay_out_of_the_logs(served):
    r = httpx.get(f"{served.url}/health?api_key={CANARY}", timeout=5)
    assert r.status_code == 200
    r = httpx.post(f"{served.url}/v1/chat/completions?key={CANARY}", headers={"authorization": f"Bearer {KEY}"},
                   json=CHAT, timeout=10)
    assert r.status_code == 200
    deadline, text = time.monotonic() + 5, ""
    while time.monotonic() < deadline and '"POST /v1/chat/completions HTTP/1.1" 200' not in text:
        time.sleep(0.1)
        text = served.log.read_text(errors="replace")
    assert '"GET /health HTTP/1.1" 200' in text and '"POST /v1/chat/completions HTTP/1.1" 200' in text, text[-2000:]
    assert CANARY not in text and KEY not in text
    # the filter itself: uvicorn's access formatter still gets its 5 arguments; a trace-level scope is redacted
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", f"/v1/models?api_key={CANARY}&x=1", "1.1", 200), None)
    assert RedactQueryString().filter(record)
    line = AccessFormatter(fmt="%(client_addr)s - %(request_line)s %(status_code)s", use_colors=False).format(record)
    assert line == "127.0.0.1:5 - GET /v1/models HTTP/1.1 200 OK"
    scope = {"type": "http", "path": "/health", "query_string": CANARY.encode()}  # uvicorn.asgi at trace level
    record = logging.LogRecord("uvicorn.asgi", 5, __file__, 1, "%s [%d] Started scope=%s", ("ASGI", 1, scope), None)
    RedactQueryString().filter(record)
    assert CANARY not in record.getMessage() and scope["query_string"] == CANARY.encode()


def test_graceful_server_calls_the_app_hook_before_shutting_down():
    events: list = []

    @asynccontextmanager
    async def lifespan(app):
        yield
        events.append("lifespan shutdown")

    def begin_shutdown() -> None:
        asyncio.get_running_loop()  # raises off the event loop
        events.append(("hook", thread.server.servers[0].is_serving()))

    app = FastAPI(lifespan=lifespan)
    app.state.serve = SimpleNamespace(begin_shutdown=begin_shutdown)  # found like the routing app's ServeState
    thread = ServerThread(app)
    assert isinstance(thread.server, GracefulServer)
    with thread:
        assert httpx.get(f"{thread.url}/nothing", timeout=5).status_code == 404
        assert events == []
    assert events == [("hook", True), "lifespan shutdown"]  # still accepting when the hook ran


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_header_deadline_holds_on_either_http_parser(parser, monkeypatch):
    """The header deadline is the same promise on httptools (used when installed) and on h11 (the fallback): a
    connection stalled mid-headers is closed once it passes, trickling bytes or not, and a complete request that
    follows on another connection is served."""
    from radialrouter.serve import server as http_server
    from radialrouter.serve.config import ServerConfig

    if parser == "h11":
        monkeypatch.setattr(http_server, "GuardedHttpToolsProtocol", None)
    elif http_server.GuardedHttpToolsProtocol is None:
        pytest.skip("httptools is not installed")
    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    with ServerThread(app, server=ServerConfig(header_timeout_s=0.5)) as thread:
        expected = http_server.GuardedH11Protocol if parser == "h11" else http_server.GuardedHttpToolsProtocol
        assert issubclass(thread.server.config.http, expected)
        stalled = _connect(thread.port)
        try:
            stalled.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            time.sleep(0.3)
            stalled.sendall(b"x")
            assert _closed_by_server(stalled, time.monotonic() + 2.0)
        finally:
            stalled.close()
        assert httpx.get(f"{thread.url}/health", timeout=5).json() == {"ok": True}
