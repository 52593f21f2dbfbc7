"""The gateway's money and fallback rules without a server (docs/serving.md, Guarantees and "How a request is
routed"): budgets and reservations, which backend failures fall back, cooldowns, Retry-After. Fast, so that the
mutation run (benchmarks/mutation.py) can afford them; the HTTP tests in test_serve*.py check the same promises
end to end."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from radialrouter.serve import parse_config
from radialrouter.serve.budgets import Budgets, cost_usd
from radialrouter.serve.ratelimit import WINDOW_S, MemoryRateLimiter, estimate, wait_until_within
from radialrouter.serve.routing import RequestError
from radialrouter.serve.upstream import LOCAL, Upstream, classify, is_retryable, retry_after

ENV = {"RR_A": "sk-a", "RR_B": "sk-b", "RR_C": "sk-c", "RR_D": "sk-d"}


def _config(cooldown_s: float = 30.0, reserve_output_tokens: int = 4096, **big):
    llms = [{"name": "small", "base_url": "http://127.0.0.1:9/small/v1", "input_price": 1.0, "output_price": 2.0,
             "context_window": 8000},
            {"name": "big", "base_url": "http://127.0.0.1:9/big/v1", "input_price": 10.0, "output_price": 30.0,
             "context_window": 100_000, **big}]
    keys = [{"id": "capped", "key": "${RR_A}", "budget_usd": 1.0}, {"id": "free", "key": "${RR_B}"},
            {"id": "limited", "key": "${RR_C}", "requests_per_minute": 100, "tokens_per_minute": 1000},
            {"id": "wordy", "key": "${RR_D}", "tokens_per_minute": 1000}]
    return parse_config({"llms": llms, "auth": {"keys": keys},
                         "server": {"cooldown_s": cooldown_s, "reserve_output_tokens": reserve_output_tokens}},
                        env=ENV)


# ---------------------------------------------------------------------------------------------- budgets
def test_prices_are_usd_per_million_tokens():
    llm = _config().llm("big")
    assert cost_usd(llm, 1_000_000, 0) == 10.0 and cost_usd(llm, 0, 1_000_000) == 30.0  # exactly: it is money
    assert cost_usd(llm, 1000, 100) == pytest.approx((1000 * 10 + 100 * 30) / 1e6)


def test_a_key_is_refused_once_spend_and_reservations_reach_its_budget():
    """A key is admitted while spend + reservations in flight < budget_usd; then 429 budget_exceeded."""
    budgets = Budgets(_config())
    first = budgets.reserve("capped", 0.6)
    budgets.reserve("capped", 0.39)  # 0.6 < 1: admitted; 0.99 now reserved
    budgets.reserve("capped", 0.5)  # 0.99 < 1: admitted (the one reservation the bound allows past the budget)
    with pytest.raises(RequestError) as refused:
        budgets.check("capped")
    assert refused.value.status == 429 and refused.value.code == "budget_exceeded"
    assert "Budget of 1.0 USD for client 'capped'" in str(refused.value) and "in flight" in str(refused.value)
    with pytest.raises(RequestError):
        budgets.reserve("capped", 0.0001)
    budgets.settle(first, "capped", 0.05)  # the request cost less than reserved: the rest is released
    assert budgets.spent["capped"] == pytest.approx(0.05)
    assert budgets.reserved["capped"] == pytest.approx(0.89)
    budgets.reserve("capped", 0.01)  # 0.05 + 0.89 < 1: admitted again
    for _ in range(100):
        budgets.reserve("free", 1e6)  # a key without a budget is never refused


def test_spend_restored_at_start_counts_against_the_budget():
    """Spend is restored from the decision log at start-up: a key whose log shows its budget spent is refused."""
    with pytest.raises(RequestError):
        Budgets(_config(), spent={"capped": 1.0}).check("capped")
    Budgets(_config(), spent={"capped": 0.999}).check("capped")


def test_settling_releases_a_reservation_once_and_flags_overruns():
    budgets = Budgets(_config())
    r = budgets.reserve("capped", 0.4)
    other = budgets.reserve("capped", 0.3)
    assert budgets.settle(r, "capped", 0.5) is True  # cost more than reserved: counted as exceeded
    assert budgets.settle(r, "capped", None) is False  # a second settle releases nothing more:
    assert budgets.reserved["capped"] == pytest.approx(0.3)  # the other request's reservation still holds
    assert budgets.spent["capped"] == pytest.approx(0.5)
    budgets.settle(other, "capped", 0.1)
    assert budgets.reserved["capped"] == 0.0
    r = budgets.reserve("free", 0.4)
    assert budgets.settle(r, "free", 0.4) is False and budgets.settle(None, "free", 0.1) is False
    assert budgets.spent["free"] == pytest.approx(0.5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.001, 0.5), st.floats(0.0, 1.0), st.booleans()), min_size=1, max_size=60))
def test_spend_stays_within_budget_plus_one_reservation(requests):
    """However requests interleave, if each costs at most its reservation, spend ≤ budget + one reservation."""
    budgets, open_, biggest = Budgets(_config()), [], 0.0
    for amount, share, finish_one in requests:
        try:
            open_.append((budgets.reserve("capped", amount), amount * share))
            biggest = max(biggest, amount)
        except RequestError:
            pass
        if finish_one and open_:
            reservation, cost = open_.pop(0)
            budgets.settle(reservation, "capped", cost)
    for reservation, cost in open_:
        budgets.settle(reservation, "capped", cost)
    assert budgets.spent.get("capped", 0.0) <= 1.0 + biggest + 1e-12
    assert budgets.reserved.get("capped", 0.0) == 0.0  # nothing stays reserved once every request settled


def test_a_reservation_is_the_worst_case_of_every_choice():
    """prompt bound × input price + n × output tokens × output price; output tokens = max_tokens capped by the
    LLM's max_output_tokens, else the LLM's max_output_tokens, else server.reserve_output_tokens."""
    budgets = Budgets(_config(reserve_output_tokens=500, max_output_tokens=1000))
    small, big = _config().llm("small"), _config(max_output_tokens=1000).llm("big")
    assert budgets.worst_case(small, 100, 0) == pytest.approx((100 * 1 + 500 * 2) / 1e6)  # the server's default
    assert budgets.worst_case(small, 100, 50, choices=3) == pytest.approx((100 * 1 + 3 * 50 * 2) / 1e6)
    assert budgets.worst_case(big, 100, 0) == pytest.approx((100 * 10 + 1000 * 30) / 1e6)  # the LLM's maximum
    assert budgets.worst_case(big, 100, 5000) == pytest.approx((100 * 10 + 1000 * 30) / 1e6)  # capped by it
    assert budgets.worst_case(big, 100, 200, choices=2) == pytest.approx((100 * 10 + 2 * 200 * 30) / 1e6)


# ---------------------------------------------------------------------------------------------- fallback rules
@pytest.mark.parametrize("status", [401, 403, 408, 429, 500, 502, 503, 504, 529])
def test_backend_failures_that_fall_back(status):
    """Timeouts, 408, 429, 5xx and 401/403 (our key rejected: a server misconfiguration) move on to the next LLM."""
    assert is_retryable(status)


@pytest.mark.parametrize("status", [400, 404, 409, 413, 422])
def test_client_mistakes_do_not_fall_back(status):
    """Any other 4xx is the client's own mistake: returned as is, with no retry."""
    assert not is_retryable(status)


def test_transport_failures_are_named_and_pool_saturation_is_local():
    request = httpx.Request("POST", "http://x")
    assert classify(httpx.PoolTimeout("full", request=request)) == LOCAL == "pool_full"
    assert classify(httpx.ReadTimeout("slow", request=request)) == "timeout"
    assert classify(httpx.ConnectTimeout("slow", request=request)) == "timeout"
    assert classify(httpx.ConnectError("refused", request=request)) == "connect"
    assert classify(httpx.RemoteProtocolError("cut", request=request)) == "connect"


@pytest.mark.parametrize(("header", "seconds"), [("7", 7.0), ("0.5", 0.5), ("0", 0.0), ("", None), ("soon", None),
                                                 ("-3", None), ("86400", None),
                                                 ("Wed, 21 Oct 2015 07:28:00 GMT", None)])
def test_retry_after_is_read_in_seconds(header, seconds):
    response = httpx.Response(429, headers={"retry-after": header} if header else {})
    assert retry_after(response) == seconds


def test_a_failed_backend_is_tried_last_for_cooldown_s(monkeypatch):
    """A backend that failed is tried last (never dropped) for ``cooldown_s``; after that, or once it answers, it
    takes its rank back. ``cooldown_s: 0`` turns cooldowns off."""
    now = [1000.0]
    monkeypatch.setattr("radialrouter.serve.upstream.time.monotonic", lambda: now[0])

    async def scenario() -> None:  # the backends' HTTP sessions belong to a running event loop
        upstream, off = Upstream(_config(cooldown_s=30)), Upstream(_config(cooldown_s=0))
        try:
            assert upstream.order(["big", "small"]) == ["big", "small"]
            upstream.failed("big")
            assert upstream.order(["big", "small"]) == ["small", "big"] and upstream.cooling() == ["big"]
            assert upstream.order(["big"]) == ["big"]  # every candidate cooling: still tried
            now[0] += 29.9
            assert upstream.order(["big", "small"]) == ["small", "big"]
            now[0] += 0.2
            assert upstream.order(["big", "small"]) == ["big", "small"] and upstream.cooling() == []
            upstream.failed("big")
            upstream.succeeded("big")
            assert upstream.order(["big", "small"]) == ["big", "small"]
            off.failed("big")
            assert off.order(["big", "small"]) == ["big", "small"] and off.cooling() == []
        finally:
            await upstream.aclose()
            await off.aclose()

    asyncio.run(scenario())


# ---------------------------------------------------------------------------------------------- rate limits
def test_tokens_per_minute_counts_prompt_and_completion_tokens():
    """A key's tokens per minute count the prompt tokens at admission and the completion tokens at the end; past
    the limit the key gets 429 ``rate_limit_exceeded`` with a Retry-After of at least one second."""
    now = [100.0 * WINDOW_S]
    limiter = MemoryRateLimiter(_config(), clock=lambda: now[0])
    asyncio.run(limiter.admit("limited", 600))
    limiter.finished("limited", 300)
    asyncio.run(limiter.admit("limited", 50))  # 900 < 1000: admitted, 950 counted now
    limiter.finished("limited", 100)
    with pytest.raises(RequestError) as refused:
        asyncio.run(limiter.admit("limited", 1))
    assert refused.value.status == 429 and refused.value.code == "rate_limit_exceeded"
    assert int(refused.value.headers["retry-after"]) >= 1
    now[0] += 2 * WINDOW_S  # the window has slid past all of it
    asyncio.run(limiter.admit("limited", 1))


def _limiter(start: float = 100.0 * WINDOW_S):
    now = [start]
    return MemoryRateLimiter(_config(), clock=lambda: now[0]), now


def _refused(limiter, client: str, tokens: int = 0) -> RequestError | None:
    try:
        asyncio.run(limiter.admit(client, tokens))
    except RequestError as exc:
        assert exc.status == 429 and exc.code == "rate_limit_exceeded"
        return exc
    return None


def test_tokens_must_stay_below_tokens_per_minute():
    """A key is admitted while its estimated tokens are *below* ``tokens_per_minute``: at exactly the limit it is
    refused, and the 429 names the limit that was reached and the client."""
    limiter, _ = _limiter()
    assert _refused(limiter, "wordy", 600) is None
    limiter.finished("wordy", None)  # no usage reported: nothing booked, no error
    limiter.finished("wordy", 0)
    assert _refused(limiter, "wordy", 0) is None  # a request with no counted tokens books none
    limiter.finished("wordy", 399)
    assert _refused(limiter, "wordy", 1) is None  # 999 < 1000
    exc = _refused(limiter, "wordy", 0)
    assert exc is not None and "1000 tokens per minute" in str(exc) and "requests per minute" not in str(exc)
    assert "'wordy'" in str(exc)


def test_requests_per_minute_hold_when_a_token_limit_is_set_too():
    """Both limits apply: a key under its token limit is still refused past its requests per minute."""
    limiter, _ = _limiter()
    for _ in range(100):
        assert _refused(limiter, "limited", 1) is None
    exc = _refused(limiter, "limited", 1)
    assert exc is not None and "100 requests per minute" in str(exc) and "tokens per minute" not in str(exc)


def test_the_previous_minutes_tokens_still_count_in_the_sliding_window():
    """The window is the last 60 s: tokens booked late in one minute still count early in the next."""
    limiter, now = _limiter(100.0 * WINDOW_S + 59)
    assert _refused(limiter, "wordy", 990) is None
    now[0] += 2  # 1 s into the next minute: 990 × 59/60 ≈ 973 still inside the window
    assert _refused(limiter, "wordy", 20) is None
    assert _refused(limiter, "wordy", 20) is None  # ≈ 973 + 20 < 1000, and now ≈ 1013 are counted
    assert _refused(limiter, "wordy", 1) is not None


@pytest.mark.parametrize("start", [0, 1, 30, 58.5, 59.9])
def test_token_retry_after_is_when_room_returns(start):
    """Retry-After (whole seconds, at least 1) is when the key is admitted again: not a second earlier."""
    limiter, now = _limiter(100.0 * WINDOW_S + start)
    assert _refused(limiter, "wordy", 1500) is None  # one large prompt: over the limit from now on
    exc = _refused(limiter, "wordy", 1)
    wait = int(exc.headers["retry-after"])
    assert wait >= 1
    t0 = now[0]
    if wait > 1:
        now[0] = t0 + wait - 1
        assert _refused(limiter, "wordy", 1) is not None
    now[0] = t0 + wait
    assert _refused(limiter, "wordy", 1) is None


def _estimate_after(prev: int, current: int, elapsed: float, seconds: float) -> float:
    """The sliding estimate ``seconds`` from now with no new traffic (the minute rolls over at elapsed = 1)."""
    later = elapsed + seconds / WINDOW_S
    if later < 1:
        return estimate(prev, current, later)
    if later < 2:
        return estimate(current, 0, later - 1)
    return 0.0


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 50), st.integers(0, 50), st.integers(0, 59), st.integers(0, 49))
@example(0, 5, 10, 5)  # already at the target: no wait
@example(1, 0, 30, 0)  # one request left in the previous minute, none in this one
def test_wait_until_within_is_the_first_moment_the_estimate_fits(prev, current, second, target):
    """The wait a refusal reports is exact: the estimate fits the target after it, and not before."""
    elapsed = second / WINDOW_S
    wait = wait_until_within(prev, current, elapsed, target)
    assert wait >= 0
    assert _estimate_after(prev, current, elapsed, wait) <= target + 1e-9
    if wait > 0:
        assert _estimate_after(prev, current, elapsed, max(0.0, wait - 0.01)) > target - 1e-9


@pytest.mark.parametrize(("booked", "at_second", "then"), [(2996, 59, 61), (1001, 59.5, 60), (1500, 10, 10)])
def test_retry_after_is_the_whole_second_room_returns(booked, at_second, then):
    """Retry-After is the first whole second at which the key is admitted again (at least 1): a second earlier it
    is still refused, at Retry-After it is admitted."""
    limiter, now = _limiter(100.0 * WINDOW_S + at_second)
    assert _refused(limiter, "wordy", booked) is None
    now[0] = 100.0 * WINDOW_S + then
    exc = _refused(limiter, "wordy", 1)
    wait, t0 = int(exc.headers["retry-after"]), now[0]
    if wait > 1:
        now[0] = t0 + wait - 1
        assert _refused(limiter, "wordy", 1) is not None
    else:  # room returns within the second: the smallest Retry-After
        assert wait == 1
    now[0] = t0 + wait
    assert _refused(limiter, "wordy", 1) is None


def test_a_refusal_names_exactly_the_limits_reached():
    """The 429 names the limit(s) reached — tokens only while one more request would still fit, both when both."""
    limiter, _ = _limiter()
    for _ in range(98):
        assert _refused(limiter, "limited", 1) is None
    assert _refused(limiter, "limited", 950) is None  # 99 requests, 1048 tokens: one more request would fit
    exc = _refused(limiter, "limited", 1)
    assert "1000 tokens per minute" in str(exc) and "requests per minute" not in str(exc)
    limiter, _ = _limiter()
    for _ in range(99):
        assert _refused(limiter, "limited", 1) is None
    assert _refused(limiter, "limited", 950) is None  # 100 requests and 1049 tokens: both limits reached
    assert "100 requests per minute and 1000 tokens per minute" in str(_refused(limiter, "limited", 1))


def test_request_ids_are_unique_in_a_process_and_across_forked_replicas():
    """Request ids key the decision log (a replica's row with a taken id would replace another's): distinct within a
    process, and a forked worker draws its own prefix instead of repeating its parent's ids."""
    import multiprocessing
    import re

    from radialrouter.serve.calls import _request_ids

    ids = [_request_ids.next() for _ in range(1000)]
    assert len(set(ids)) == 1000 and all(re.fullmatch(r"rr-[0-9a-f]{32}", i) for i in ids)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply(_next_request_id)  # by reference: the child's own generator, not a pickled copy
    assert child not in ids and child[:19] != ids[-1][:19]


def _next_request_id() -> str:
    from radialrouter.serve.calls import _request_ids

    return _request_ids.next()


# ---------------------------------------------------------------------------------------------- upstream clients
def test_failures_are_named_alike_whichever_http_client_calls_the_backends():
    """With aiohttp installed (the ``serve`` extra) its errors become the matching httpx errors, so an attempt's
    ``error`` (docs/serving.md) is the same word either way: timeout, connect, or transport."""
    aiohttp = pytest.importorskip("aiohttp")
    from radialrouter.serve.upstream import _as_httpx

    cases = [(aiohttp.ConnectionTimeoutError("connect timed out"), httpx.ConnectTimeout, "timeout"),
             (asyncio.TimeoutError(), httpx.ReadTimeout, "timeout"),
             (aiohttp.ClientConnectorError(SimpleNamespace(ssl=True, host="127.0.0.1", port=9),
                                           OSError(111, "refused")), httpx.ConnectError, "connect"),
             (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError, "connect"),
             (aiohttp.ClientPayloadError("truncated body"), httpx.RemoteProtocolError, "connect"),
             (aiohttp.ClientConnectionError("reset"), httpx.ReadError, "connect"),
             (aiohttp.InvalidURL("not a url"), httpx.TransportError, "transport")]
    for exc, kind, name in cases:
        converted = _as_httpx(exc)
        assert type(converted) is kind and classify(converted) == name, (exc, converted)
        assert str(converted) == (str(exc) or type(exc).__name__)  # the log says what went wrong, never ""
    assert str(_as_httpx(aiohttp.ClientPayloadError("truncated body"))) == "truncated body"
    assert str(_as_httpx(asyncio.TimeoutError())) == "TimeoutError"  # no message: the error's name


def _serve_config(url: str, **server):
    llms = [{"name": "a", "base_url": f"{url}/a/v1", "model": "provider-model-a", "input_price": 1.0,
             "output_price": 2.0, "api_key": "${RR_A}", "max_connections": 1, "context_window": 8000}]
    return parse_config({"llms": llms, "auth": {"keys": [{"id": "k", "key": "${RR_B}"}]},
                         "server": {"pool_timeout_s": 0.3, **server}}, env=ENV)


def test_a_backend_gets_its_own_model_id_and_a_full_pool_is_local():
    """A request reaches the backend with that backend's upstream model id; when its own connection pool stays full
    for ``pool_timeout_s`` the attempt fails as ``pool_full`` (local saturation, no cooldown), and closing the
    response that held the connection frees it for the next request. Streamed lines arrive as httpx splits them."""
    from radialrouter.serve.testing import fake_backends

    async def scenario(url: str, fakes) -> None:
        upstream = Upstream(_serve_config(url))
        try:
            body = {"model": "whatever-the-client-asked", "messages": [{"role": "user", "content": "hi"}]}
            held = await upstream.send("a", {**body, "stream": True}, stream=True)
            assert held.status_code == 200 and fakes["a"].requests[-1]["model"] == "provider-model-a"
            with pytest.raises(httpx.PoolTimeout) as caught:
                await upstream.send("a", body, stream=False)
            assert classify(caught.value) == "pool_full" and "no free connection within 0.3 s" in str(caught.value)
            lines = [line async for line in held.aiter_lines()]
            await held.aclose()
            await held.aclose()  # closing twice frees the one connection once
            assert lines[0].startswith("data: {") and "data: [DONE]" in lines and "" in lines
            assert not any(line.endswith("\r") for line in lines)
            answer = await upstream.send("a", body, stream=False)
            assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]
            assert len(fakes["a"].requests) == 2  # the refused attempt never reached the backend
        finally:
            await upstream.aclose()

    with fake_backends(("a",)) as (fakes, url):
        asyncio.run(scenario(url, fakes))


def _recording_app(seen: list):
    """A backend that records each request's path, headers and body and answers a minimal completion."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def anything(request):
        seen.append({"path": request.url.path, "headers": dict(request.headers), "body": await request.json()})
        return JSONResponse({"id": "x", "object": "chat.completion",
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}]})

    return Starlette(routes=[Route("/{path:path}", anything, methods=["POST"])])


def test_each_backend_gets_our_key_its_model_and_its_timeouts_whichever_client_sends():
    """Both clients (aiohttp, or httpx without it) POST JSON to ``<base_url>/chat/completions`` with that backend's
    key as a Bearer token and its upstream model id; httpx's request carries the backend's ``timeout_s`` as read
    timeout and the server's connect and pool timeouts."""
    from radialrouter.serve.testing import ServerThread

    seen: list = []
    body = {"model": "client-alias", "messages": [{"role": "user", "content": "hi"}]}

    async def via_aiohttp(url: str) -> None:
        upstream = Upstream(_serve_config(url + "/base"))
        try:
            assert (await upstream.send("a", body, stream=False)).status_code == 200
        finally:
            await upstream.aclose()

    with ServerThread(_recording_app(seen)) as server:
        asyncio.run(via_aiohttp(server.url))
    sent: list = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"choices": []})

    async def via_httpx() -> None:
        upstream = Upstream(_serve_config("http://backend.test/base", connect_timeout_s=1.5),
                            transport=httpx.MockTransport(handler))
        try:
            assert (await upstream.send("a", body, stream=False)).status_code == 200
        finally:
            await upstream.aclose()

    asyncio.run(via_httpx())
    (got,), (request,) = seen, sent
    assert got["path"] == "/base/a/v1/chat/completions" and str(request.url) == "http://backend.test/base/a/v1/chat/completions"
    for headers in (got["headers"], request.headers):
        assert headers["authorization"] == "Bearer sk-a"
        assert headers["content-type"] == "application/json" and headers["accept"] == "application/json"
    assert got["body"]["model"] == json.loads(request.content)["model"] == "provider-model-a"
    assert got["body"]["messages"] == json.loads(request.content)["messages"] == body["messages"]
    assert request.extensions["timeout"] == {"connect": 1.5, "read": 60.0, "write": 60.0, "pool": 0.3}


def test_a_hung_backend_times_out_after_its_timeout_s():
    """A backend that sends nothing for its ``timeout_s`` fails the attempt as ``timeout`` (then the request falls
    back), long before the backend would answer."""
    import time as _time

    from radialrouter.serve.testing import fake_backends

    async def scenario(url: str) -> None:
        config = parse_config({"llms": [{"name": "a", "base_url": f"{url}/a/v1", "input_price": 1.0,
                                         "output_price": 2.0, "context_window": 8000, "timeout_s": 0.5}],
                               "auth": {"keys": [{"id": "k", "key": "${RR_B}"}]}}, env=ENV)
        upstream = Upstream(config)
        try:
            start = _time.monotonic()
            with pytest.raises(httpx.TimeoutException) as caught:
                await upstream.send("a", {"messages": [{"role": "user", "content": "hi"}]}, stream=False)
            assert classify(caught.value) == "timeout" and _time.monotonic() - start < 3.0
        finally:
            await upstream.aclose()

    with fake_backends(("a",)) as (fakes, url):
        fakes["a"].mode, fakes["a"].hang_s = "hang", 5.0
        asyncio.run(scenario(url))


def test_streamed_lines_end_at_newlines_and_bad_bytes_are_replaced():
    """The aiohttp stream's lines: ``\\n`` or ``\\r\\n`` ends a line, however the bytes are chunked; a last line without
    a newline still arrives (without a trailing ``\\r``); bytes that are not UTF-8 become U+FFFD, not an error."""
    from radialrouter.serve.upstream import AiohttpResponse

    class Body:
        def __init__(self, chunks):
            self.chunks = chunks

        async def iter_any(self):
            for chunk in self.chunks:
                yield chunk

    class Raw:
        status, headers = 200, {}

        def __init__(self, chunks):
            self.content = Body(chunks)

    async def lines(chunks) -> list[str]:
        response = AiohttpResponse(Raw(chunks), lambda: None)
        return [line async for line in response.aiter_lines()]

    whole = b"data: a\r\n\r\ndata: b\ndata: \xff\xfe\r\ndata: \xff TAX\r"
    expected = ["data: a", "", "data: b", "data: \ufffd\ufffd", "data: \ufffd TAX"]  # only a trailing \r goes
    for cut in ([whole], [whole[:5], whole[5:9], whole[9:]], [bytes([b]) for b in whole]):
        assert asyncio.run(lines(cut)) == expected
    assert asyncio.run(lines([b"data: x\ndata: end \t "])) == ["data: x", "data: end \t "]  # other spaces stay


def test_sharded_pools_count_every_request_in_flight_and_free_failed_ones():
    """`ShardedTransport`: with every pool busy a request goes to the least busy one; each pool's count is the
    requests in flight on it, and a request that fails (connection refused) frees its place at once."""
    from radialrouter.serve.testing import fake_backends
    from radialrouter.serve.upstream import ShardedTransport

    async def main(url: str) -> None:
        transport = ShardedTransport(4, shard_size=2)  # two pools of two connections
        body = {"model": "a", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            held = []
            for expected in ([1, 0], [2, 0], [2, 1], [2, 2]):
                request = client.build_request("POST", f"{url}/a/v1/chat/completions", json=body)
                held.append(await client.send(request, stream=True))
                assert transport.in_progress == expected
            # every pool busy: the fifth request waits on the least busy pool (the first of equals)
            fifth = asyncio.ensure_future(client.post(f"{url}/a/v1/chat/completions", json={**body, "stream": False}))
            await asyncio.sleep(0.2)
            assert transport.in_progress == [3, 2] and not fifth.done()
            await held[0].aclose()
            assert (await fifth).status_code == 200
            for response in held[1:]:
                await response.aclose()
            assert transport.in_progress == [0, 0]
            with pytest.raises(httpx.ConnectError):
                await client.post("http://127.0.0.1:9/v1/chat/completions", json=body)
            assert transport.in_progress == [0, 0]
        await transport.aclose()

    with fake_backends(("a",)) as (_, url):
        asyncio.run(main(url))


# ---------------------------------------------------------------------------------------------- the decision log
def test_the_sqlite_decision_log_restores_spend_and_replaces_a_repeated_request(tmp_path):
    """README "spend is restored from the decision log": after a restart, each client's spend is the sum of its
    recorded costs (a request recorded twice counts once: the second row replaces the first; a row without a cost
    adds nothing). Rows come back oldest first, one decision by its request id, feedback replaced when posted again."""
    from radialrouter.ledger.store import Ledger, LedgerRow, Settlement, committed

    def row(rid: str, ts: float, client: str, cost: float | None, **extra) -> LedgerRow:
        return LedgerRow(request_id=rid, ts=ts, client=client, model="radial", mode=None, lam=0.02, llm="small",
                         ranking=["small", "big"], attempts=[{"llm": "big", "error": "http_500"}], cost_usd=cost,
                         **extra)

    path = tmp_path / "decisions.sqlite"
    ledger = Ledger(path)
    futures = [ledger.record(row("r2", 2.0, "alice", 0.25), Settlement("alice", 0.25)),
               ledger.record(row("r1", 1.0, "alice", 0.5), Settlement("alice", 0.5)),
               ledger.record(row("r3", 3.0, "bob", None, status="error")),
               ledger.record(row("r4", 4.0, "bob", 0.125, fallback=True, stream=True))]
    assert all(f.result(timeout=10) for f in futures)
    assert asyncio.run(committed(ledger.record(row("r1", 1.5, "alice", 0.5)))) is True  # the same request again
    # carol's forty settled requests, queued faster than they are written (several share a transaction)
    many = [ledger.record(row(f"c{i}", 10.0 + i, "carol", 0.01), Settlement("carol", 0.01)) for i in range(40)]
    assert all(f.result(timeout=10) for f in many) and ledger.backlog() == 0
    ledger.close()

    restarted = Ledger(path)
    try:
        assert restarted.spent_by_client() == {"alice": pytest.approx(0.75), "bob": pytest.approx(0.125),
                                               "carol": pytest.approx(0.4)}
        # what the dashboard shows per key: every settled cost, counted once
        import sqlalchemy as sa

        with restarted.engine.connect() as conn:
            booked = dict(conn.execute(sa.text("SELECT client, spent_usd FROM budget_spend")).all())
        assert booked == {"alice": pytest.approx(0.75), "carol": pytest.approx(0.4)}
        rows = restarted.rows()
        assert [r["request_id"] for r in rows][:4] == ["r1", "r2", "r3", "r4"] and rows[0]["ts"] == 1.5
        r4 = restarted.decision_of("r4")
        assert (r4["fallback"], r4["stream"], r4["client"]) == (1, 1, "bob")
        assert json.loads(r4["ranking"]) == ["small", "big"]
        assert json.loads(r4["attempts"]) == [{"llm": "big", "error": "http_500"}]
        assert restarted.decision_of("nope") is None and restarted.decision_of("r3")["status"] == "error"
        def rollup() -> list:  # the dashboard's pre-aggregates of bob's ratings, per span
            with restarted.engine.connect() as conn:
                return conn.execute(sa.text("SELECT span, SUM(feedback_n), SUM(feedback_sum) FROM decisions_rollup "
                                            "WHERE client = 'bob' GROUP BY span")).all()

        restarted.record_feedback("r4", "user", 0.0, client="bob", ts=5.0)
        assert rollup() and all((n, total) == (1, 0.0) for _, n, total in rollup())
        restarted.record_feedback("r4", "user", 1.0, client="bob", comment="better", meta={"k": 1}, ts=6.0)
        (label,) = restarted.feedback_rows()
        assert (label["score"], label["comment"], json.loads(label["meta"])) == (1.0, "better", {"k": 1})
        assert rollup() and all((n, total) == (1, 1.0) for _, n, total in rollup())  # still one rating, now 1.0
    finally:
        restarted.close()


def test_a_full_decision_log_queue_drops_rows_and_says_so(tmp_path, caplog):
    """When the writer's queue is full a row is dropped, not waited for: its future says False, ``on_drop``
    counts it, and the log names the request."""
    from radialrouter.ledger.store import Ledger, LedgerRow, committed

    drops: list[int] = []
    ledger = Ledger(tmp_path / "d.sqlite", max_queue=0, on_drop=lambda: drops.append(1))
    try:
        done = ledger.record(LedgerRow(request_id="x", ts=1.0, client="c", model="m", mode=None, lam=None, llm=None))
        assert done.result(timeout=1) is False and drops == [1] and ledger.backlog() == 0
        assert "decision log queue is full; dropping the row of request x" in caplog.text
        assert asyncio.run(committed(done)) is False
        assert ledger.rows() == [] and ledger.spent_by_client() == {}
    finally:
        ledger.close()


def test_refusals_are_logged_once_per_key_and_outcome_per_minute(monkeypatch):
    """A refused request is written to the decision log for the first refusal of each key and outcome in a minute;
    the rest of that minute's refusals of the same kind are not (a flood of refusals cannot flood the log)."""
    from types import SimpleNamespace

    from radialrouter.serve.state import ServeState

    now = [5000.0]
    monkeypatch.setattr("radialrouter.serve.state.time.monotonic", lambda: now[0])
    state = SimpleNamespace(_refusals_logged={})
    sample = lambda client, outcome: ServeState.sample_refusal(state, client, outcome)  # noqa: E731
    assert sample("k1", "budget_exceeded") and not sample("k1", "budget_exceeded")
    assert sample("k1", "rate_limited") and sample("k2", "budget_exceeded")
    now[0] += 59.0
    assert not sample("k1", "budget_exceeded")
    now[0] += 1.5
    assert sample("k1", "budget_exceeded") and not sample("k1", "budget_exceeded")


def test_a_cooldown_ends_exactly_cooldown_s_after_the_failure(monkeypatch):
    """A backend that failed at t is cooling down until t + cooldown_s, and not any longer."""
    now = [1000.0]
    monkeypatch.setattr("radialrouter.serve.upstream.time.monotonic", lambda: now[0])

    async def scenario() -> None:
        upstream = Upstream(_config(cooldown_s=30))
        try:
            upstream.failed("big")
            now[0] = 1029.5
            assert upstream.cooling() == ["big"]
            now[0] = 1030.0
            assert upstream.cooling() == [] and upstream.order(["big", "small"]) == ["big", "small"]
            brief = Upstream(_config(cooldown_s=0.5))  # any positive cooldown_s cools, however short
            try:
                brief.failed("big")
                assert brief.cooling() == ["big"]
                now[0] += 0.5
                assert brief.cooling() == []
            finally:
                await brief.aclose()
        finally:
            await upstream.aclose()

    asyncio.run(scenario())


def test_a_streamed_backend_response_is_handed_over_unread():
    """``send(stream=True)`` returns as soon as the backend's headers arrive: the body is left for the caller to
    iterate (a stream is relayed as it comes, not buffered); without ``stream`` the body is read."""
    produced: list[int] = []

    class Body(httpx.AsyncByteStream):
        async def __aiter__(self):
            for i in range(3):
                produced.append(i)
                yield b'data: {"n": %d}\n\n' % i

    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=Body()))
    config = parse_config({"llms": [{"name": "a", "base_url": "http://127.0.0.1:9/a/v1", "input_price": 1.0,
                                     "output_price": 2.0, "context_window": 8000}]}, env=ENV)

    async def scenario() -> None:
        upstream = Upstream(config, transport)
        try:
            response = await upstream.send("a", {"messages": []}, stream=True)
            assert response.status_code == 200 and produced == []  # nothing read yet
            lines = [line async for line in response.aiter_lines() if line]
            assert lines == ['data: {"n": 0}', 'data: {"n": 1}', 'data: {"n": 2}'] and produced == [0, 1, 2]
            await response.aclose()
            produced.clear()
            whole = await upstream.send("a", {"messages": []}, stream=False)
            assert produced == [0, 1, 2] and whole.content.count(b"data:") == 3
        finally:
            await upstream.aclose()

    asyncio.run(scenario())
