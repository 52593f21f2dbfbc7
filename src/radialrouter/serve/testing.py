"""Test and benchmark helpers: a scriptable fake OpenAI-compatible backend and a uvicorn server in a thread.

They let tests and ``benchmarks/serve_load.py`` exercise the real HTTP path (sockets, streaming, timeouts) on
127.0.0.1 without any LLM provider.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse


class FakeBackend:
    """An OpenAI-compatible chat backend whose behaviour tests switch at run time.

    ``mode``: ``"ok"``; ``"error"`` (answer ``status`` with an OpenAI-style error); ``"hang"`` (sleep ``hang_s``
    before answering, to trigger timeouts); ``"break"`` (stream two chunks, then drop the connection).
    ``fail_every=k`` makes every k-th request fail with ``status`` whatever the mode. ``delay_s`` simulates
    generation time. Every request body is kept in ``requests`` for pass-through assertions."""

    def __init__(self, name: str, *, delay_s: float = 0.0, fail_every: int = 0, status: int = 500,
                 keep_requests: bool = True) -> None:
        self.name, self.delay_s, self.fail_every, self.status = name, delay_s, fail_every, status
        self.mode, self.hang_s, self.keep_requests = "ok", 30.0, keep_requests
        self.requests: list[dict[str, Any]] = []
        self.calls = 0
        self.app = self._build()

    def _reply(self, body: dict) -> dict[str, Any]:
        tools = body.get("tools")
        if tools:
            name = tools[0].get("function", {}).get("name", "tool")
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": name, "arguments": '{"x": 1}'}}]}
            return {"message": message, "finish_reason": "tool_calls"}
        return {"message": {"role": "assistant", "content": f"Hello from {self.name}."}, "finish_reason": "stop"}

    def _usage(self, body: dict, completion: int) -> dict[str, int]:
        prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _error(self) -> JSONResponse:
        return JSONResponse({"error": {"message": f"{self.name} failed on purpose", "type": "server_error",
                                       "param": None, "code": None}}, status_code=self.status)

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            self.calls += 1
            if self.keep_requests:
                self.requests.append(body)
            if self.mode == "error" or (self.fail_every and self.calls % self.fail_every == 0):
                return self._error()
            if self.mode == "hang":
                await asyncio.sleep(self.hang_s)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            reply = self._reply(body)
            if body.get("stream"):
                return StreamingResponse(self._stream(body, reply), media_type="text/event-stream")
            return {"id": f"chatcmpl-{self.name}-{self.calls}", "object": "chat.completion",
                    "created": int(time.time()), "model": body.get("model"),
                    "choices": [{"index": 0, **reply, "logprobs": None}], "usage": self._usage(body, 5)}

        return app

    async def _stream(self, body: dict, reply: dict) -> AsyncIterator[bytes]:
        base = {"id": f"chatcmpl-{self.name}-{self.calls}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body.get("model")}
        message = reply["message"]
        deltas = [{"role": "assistant", "content": ""}]
        if message.get("tool_calls"):
            deltas.append({"tool_calls": [{"index": 0, **message["tool_calls"][0]}]})
        else:
            deltas += [{"content": w} for w in re.findall(r"\S+\s*", message["content"])]
        usage_wanted = bool((body.get("stream_options") or {}).get("include_usage"))
        for i, delta in enumerate(deltas):
            if self.mode == "break" and i == 2:
                raise ConnectionError("fake backend drops the stream")
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            if usage_wanted:
                chunk["usage"] = None
            yield f"data: {json.dumps(chunk)}\n\n".encode()
            await asyncio.sleep(0)
        last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": reply["finish_reason"]}]}
        yield f"data: {json.dumps(last)}\n\n".encode()
        if usage_wanted:
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': self._usage(body, len(deltas))})}\n\n".encode()
        yield b"data: [DONE]\n\n"


class ServerThread:
    """Serve an ASGI app with uvicorn on 127.0.0.1 and a free port, in a daemon thread (a context manager)."""

    def __init__(self, app: Any, host: str = "127.0.0.1") -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, 0))
        self.host, self.port = host, self._socket.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
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
        self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
