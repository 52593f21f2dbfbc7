"""Test and benchmark helpers: a scriptable fake OpenAI-compatible backend and a uvicorn server in a thread.

They let tests and ``benchmarks/serve_load.py`` exercise the real HTTP path (sockets, streaming, timeouts) on
127.0.0.1 without any LLM provider.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from radialrouter.serve.config import ServerConfig
from radialrouter.serve.server import make_server


class FakeBackend:
    """An OpenAI-compatible chat backend whose behaviour tests switch at run time (attributes, read per request).

    ``mode`` (what the next requests get):

    - ``"ok"``: a normal answer (JSON, or server-sent events when ``stream`` is set).
    - ``"error"``: ``status`` with an OpenAI-style error body; a 429 carries ``Retry-After: <retry_after>``.
    - ``"hang"``: sleep ``hang_s`` before answering (to trigger the caller's timeout), then answer normally.
    - ``"malformed"``: 200, ``content-type: application/json``, a body that is not JSON (streams included).
    - ``"reset"``: no HTTP response at all: the TCP connection is reset (RST) once the request is read. This needs
      the app served by uvicorn (``ServerThread``, ``uvicorn.run``), which it reaches through the ASGI ``receive``
      callable; under any other server use `ResetBackend` instead.
    - ``"break"``: streams send two chunks (the role chunk and the first content word), then the connection drops
      mid-body; non-streaming answers send 200, headers and half of the JSON body, then drop.
    - ``"eof"``: streams send the role chunk and about half of the content chunks, then the body ends cleanly (a
      normal end of the chunked body): no ``finish_reason`` chunk, no usage chunk, no ``data: [DONE]``.
      Non-streaming answers end cleanly after half of the JSON body.

    Failures in any mode: ``fail_every=k`` answers every k-th request with ``status``; ``fail_rate=p`` does so with
    probability ``p`` (a ``random.Random(seed)``, so runs repeat). ``delay_s`` is the time to the first byte.

    Long, slow streams (client disconnects, shutdown): ``stream_chunks=n`` makes the answer ``n`` content words
    (``"w0 w1 …"``), streamed one per chunk with ``chunk_delay_s`` between chunks; a non-streaming answer waits the
    same ``n × chunk_delay_s`` and reports ``n`` completion tokens. As real providers do, a stream carries usage
    only in one final chunk (after the ``finish_reason`` chunk), and only when ``stream_options.include_usage``.

    ``n`` choices are generated (each streamed under its ``index``) and ``max_tokens`` / ``max_completion_tokens``
    caps each choice's words, as providers do.

    Book-keeping: ``calls`` counts requests, ``requests`` keeps their bodies (``keep_requests``), and
    ``billed_prompt_tokens`` / ``billed_completion_tokens`` count what a provider would bill: the prompt of every
    request answered with 200 to a caller still connected, and each completion token actually generated — a stream
    the caller abandons stops generating (and billing) at the disconnect. Prompt tokens are the words of the
    message contents.

    ``bytes_per_token=4`` bills as real tokenizers do at the least, whatever a gateway counted: a prompt costs at
    least one token per 4 UTF-8 bytes of its texts (emoji and rare scripts cost more tokens than words), every
    choice is billed, and a stream is billed in full when it starts, also if its caller hangs up; usage reports the
    same figures."""

    def __init__(self, name: str, *, delay_s: float = 0.0, fail_every: int = 0, status: int = 500,
                 keep_requests: bool = True, fail_rate: float = 0.0, seed: int = 0, stream_chunks: int = 0,
                 chunk_delay_s: float = 0.0, retry_after: str | None = "2", bytes_per_token: int | None = None) -> None:
        self.name, self.delay_s, self.fail_every, self.status = name, delay_s, fail_every, status
        self.mode, self.hang_s, self.keep_requests = "ok", 30.0, keep_requests
        self.fail_rate, self.rng = fail_rate, random.Random(seed)
        self.stream_chunks, self.chunk_delay_s, self.retry_after = stream_chunks, chunk_delay_s, retry_after
        self.bytes_per_token = bytes_per_token
        self.requests: list[dict[str, Any]] = []
        self.calls = 0
        self.billed_prompt_tokens = self.billed_completion_tokens = 0
        self.app = self._build()

    def _reply(self, body: dict) -> dict[str, Any]:
        tools = body.get("tools")
        if tools:
            name = tools[0].get("function", {}).get("name", "tool")
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": name, "arguments": '{"x": 1}'}}]}
            return {"message": message, "finish_reason": "tool_calls"}
        words = [f"w{i}" for i in range(self.stream_chunks)] if self.stream_chunks else (
            f"Hello from {self.name}.".split())
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and 0 < limit < len(words):
            return {"message": {"role": "assistant", "content": " ".join(words[:limit])}, "finish_reason": "length"}
        return {"message": {"role": "assistant", "content": " ".join(words)}, "finish_reason": "stop"}

    @staticmethod
    def _choices(body: dict) -> int:
        n = body.get("n")
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1

    def _prompt_tokens(self, body: dict) -> int:
        texts = [str(m.get("content", "")) for m in body.get("messages", []) if isinstance(m, dict)]
        words = sum(len(t.split()) for t in texts)
        if self.bytes_per_token is None:
            return words
        return max(words, -(-sum(len(t.encode()) for t in texts) // self.bytes_per_token))

    def _usage(self, body: dict, completion: int) -> dict[str, int]:
        prompt = self._prompt_tokens(body)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _completion_tokens(self, reply: dict) -> int:
        """Tokens of one choice: the reply's words (a tool call counts as its chunks)."""
        message = reply["message"]
        return len(message["content"].split()) if message.get("content") else 1

    def _error(self) -> JSONResponse:
        headers = None
        if self.status == 429 and self.retry_after is not None:
            headers = {"retry-after": str(self.retry_after)}
        return JSONResponse({"error": {"message": f"{self.name} failed on purpose", "type": "server_error",
                                       "param": None, "code": None}}, status_code=self.status, headers=headers)

    def _fails(self) -> bool:
        every = bool(self.fail_every) and self.calls % self.fail_every == 0
        return every or (self.fail_rate > 0 and self.rng.random() < self.fail_rate)

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            mode = self.mode
            self.calls += 1
            if self.keep_requests:
                self.requests.append(body)
            if mode == "error" or self._fails():
                return self._error()
            if mode == "reset":
                return await _reset_connection(request)
            if mode == "hang":
                await asyncio.sleep(self.hang_s)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if mode == "malformed":
                return Response(b'{"id": "chatcmpl-broken", "choices": [{"index": 0, "message": {"content": "Hel',
                                media_type="application/json")
            reply, n = self._reply(body), self._choices(body)
            if body.get("stream"):
                if not await request.is_disconnected():
                    self.billed_prompt_tokens += self._prompt_tokens(body)
                    if self.bytes_per_token is not None and mode == "ok":  # generated (and billed) in full
                        self.billed_completion_tokens += n * self._completion_tokens(reply)
                return StreamingResponse(self._stream(body, reply, mode), media_type="text/event-stream")
            if self.stream_chunks and self.chunk_delay_s:
                await asyncio.sleep(self.stream_chunks * self.chunk_delay_s)
            if await request.is_disconnected():  # the caller gave up (e.g. its timeout): nothing is billed
                return Response(status_code=499)
            exact = self.bytes_per_token is not None or self.stream_chunks
            completion = n * (self._completion_tokens(reply) if exact else 5)
            self.billed_prompt_tokens += self._prompt_tokens(body)
            self.billed_completion_tokens += completion
            answer = {"id": f"chatcmpl-{self.name}-{self.calls}", "object": "chat.completion",
                      "created": int(time.time()), "model": body.get("model"),
                      "choices": [{"index": i, **reply, "logprobs": None} for i in range(n)],
                      "usage": self._usage(body, completion)}
            if mode in {"break", "eof"}:
                raw = json.dumps(answer).encode()
                return StreamingResponse(_truncated(raw[: len(raw) // 2], drop=mode == "break"),
                                         media_type="application/json")
            return answer

        return app

    async def _stream(self, body: dict, reply: dict, mode: str) -> AsyncIterator[bytes]:
        base = {"id": f"chatcmpl-{self.name}-{self.calls}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body.get("model")}
        message = reply["message"]
        deltas = [{"role": "assistant", "content": ""}]
        if message.get("tool_calls"):
            deltas.append({"tool_calls": [{"index": 0, **message["tool_calls"][0]}]})
        else:
            deltas += [{"content": w} for w in re.findall(r"\S+\s*", message["content"])]
        usage_wanted = bool((body.get("stream_options") or {}).get("include_usage"))
        cut = {"break": 2, "eof": max(2, len(deltas) // 2 + 1)}.get(mode)
        n, prepaid = self._choices(body), self.bytes_per_token is not None and mode == "ok"
        for i, delta in enumerate(deltas):
            if i == cut:
                if mode == "break":
                    raise ConnectionError("fake backend drops the stream")
                return  # "eof": the body ends cleanly, without finish_reason or [DONE]
            if i and self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            for index in range(n):
                chunk = {**base, "choices": [{"index": index, "delta": delta, "finish_reason": None}]}
                if usage_wanted:
                    chunk["usage"] = None
                if not prepaid:
                    self.billed_completion_tokens += i > 0
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            await asyncio.sleep(0)
        for index in range(n):
            last = {**base, "choices": [{"index": index, "delta": {}, "finish_reason": reply["finish_reason"]}]}
            if usage_wanted:
                last["usage"] = None
            yield f"data: {json.dumps(last)}\n\n".encode()
        if usage_wanted:
            completion = n * (self._completion_tokens(reply) if prepaid else (len(deltas) - 1))
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': self._usage(body, completion)})}\n\n".encode()
        yield b"data: [DONE]\n\n"


async def _truncated(data: bytes, drop: bool) -> AsyncIterator[bytes]:
    yield data
    await asyncio.sleep(0)
    if drop:
        raise ConnectionError("fake backend drops the response mid-body")


def _linger_zero(sock: Any) -> None:
    """Make ``close()`` send a TCP RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def _reset_connection(request: Request) -> Response:
    """Reset the TCP connection under ``request`` (uvicorn only: its ASGI ``receive`` is a bound method of the
    connection's request cycle, which holds the asyncio transport)."""
    cycle = getattr(request.receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None or not hasattr(transport, "abort"):
        raise RuntimeError("FakeBackend mode 'reset' needs the app served by uvicorn; use ResetBackend otherwise")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        _linger_zero(sock)
    transport.abort()
    for _ in range(100):  # until uvicorn has seen the connection go, so the response below is discarded
        if getattr(cycle, "disconnected", True):
            break
        await asyncio.sleep(0.001)
    return Response(status_code=500)


class ResetBackend:
    """A raw TCP server on 127.0.0.1 that answers nothing: it reads each request (head, and body by
    ``content-length``) and resets the connection (``SO_LINGER`` 0, so the client sees ECONNRESET, not an HTTP
    status). Runs its own event loop in a daemon thread; works whatever serves the other backends.

        with ResetBackend() as reset:        # or reset = ResetBackend().start(); …; reset.stop()
            base_url = f"{reset.url}/v1"     # any path: every request is reset
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host, self.port, self.calls = host, 0, 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
            if length and int(length.group(1)) <= 64 * 1024 * 1024:
                await asyncio.wait_for(reader.readexactly(int(length.group(1))), 10)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, OSError):
            pass
        self.calls += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            _linger_zero(sock)
        writer.transport.abort()

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        server = loop.run_until_complete(asyncio.start_server(self._handle, self.host, 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            loop.run_until_complete(server.wait_closed())
            loop.close()

    def start(self, timeout: float = 10.0) -> ResetBackend:
        self._thread = threading.Thread(target=self._run, daemon=True, name="reset-backend")
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("ResetBackend did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> ResetBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServerThread:
    """Serve an ASGI app on 127.0.0.1 and a free port, in a daemon thread (a context manager).

    The server is built by `make_server`, as ``radialrouter serve`` builds it, with ``server``'s HTTP-layer settings
    (header timeout, connection cap, shutdown grace; `ServerConfig` defaults if None)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", server: ServerConfig | None = None) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, 0))
        self.host, self.port = host, self._socket.getsockname()[1]
        self.server = make_server(app, host=host, port=self.port, server=server, log_level="warning")
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=self.server.config.timeout_graceful_shutdown + 5)
        self._socket.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def fake_backends(names: Iterable[str], **kwargs: Any) -> Iterator[tuple[dict[str, FakeBackend], str]]:
    """One `FakeBackend` per name, each at ``<url>/<name>/v1``, served by one `ServerThread`; yields (fakes, url)."""
    fakes = {name: FakeBackend(name, **kwargs) for name in names}
    hub = FastAPI()
    for name, fake in fakes.items():
        hub.mount(f"/{name}", fake.app)
    with ServerThread(hub) as thread:
        yield fakes, thread.url


# ---------------------------------------------------------------------------------------------- processes
def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (for a server started in another process)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def spawn_python(args: list[str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    """``python <args>`` in a child process, stdout and stderr to ``log``."""
    return subprocess.Popen([sys.executable, *args], stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=cwd)


def wait_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Poll ``url`` until it answers below 500; fail with the end of ``log`` if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited early:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout} s")
