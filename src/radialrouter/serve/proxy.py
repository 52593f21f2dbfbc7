"""Proxying a chat request to the planned backends: JSON responses, server-sent-event streams relayed chunk by chunk
(with the router object added and usage read on after a hang-up), and the fallback over the plan."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import httpx
from fastapi.responses import JSONResponse, Response, StreamingResponse

from radialrouter.serve.responses import FastJSONResponse, _sse, dumps, error_response
from radialrouter.serve.upstream import LOCAL, classify, is_retryable, retry_after

if TYPE_CHECKING:
    from radialrouter.serve.calls import _Call
    from radialrouter.serve.state import ServeState

log = logging.getLogger("radialrouter.serve")


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
        return FastJSONResponse(data, headers=call.headers())
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
                out.append("data: " + dumps(obj).decode())
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
        if call.events is None or status != "client_disconnected":  # else the backend is read on (hang-up)
            call.events = None
            with anyio.CancelScope(shield=True):
                await resp.aclose()
            call.finish(status)
