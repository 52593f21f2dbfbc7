"""What a gateway's per-request checks promise, on a `ServeState` built in the test (no HTTP server): a key is
recognised or refused by name, the operator key only opens operator endpoints, admission refuses at capacity with
Retry-After, a body is refused when too large, too slow or not a JSON object — each error saying what is wrong —
and the server's trade-offs come from its router."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from types import SimpleNamespace

import pytest
from starlette.requests import Request

from radialrouter.data import make_synthetic
from radialrouter.routers import make_router
from radialrouter.serve import parse_config
from radialrouter.serve.routing import RequestError
from radialrouter.serve.state import INLINE_BYTES, ServeState

ENV = {"RR_A": "sk-alpha", "RR_B": "sk-beta", "RR_ADMIN": "sk-operator-0123456789"}


@pytest.fixture(scope="module")
def router():
    return make_router("best-single").fit(make_synthetic(n_queries=60, n_llms=3, seed=0).select("train"))


def _state(router, keys: bool = True, **server) -> ServeState:
    llms = [{"name": n, "base_url": f"http://127.0.0.1:9/{n}/v1", "router_llm": f"llm-{i}", "input_price": 1.0,
             "output_price": 2.0, "context_window": 100_000} for i, n in enumerate(("cheap", "mid", "strong"))]
    auth = {"keys": [{"id": "alpha", "key": "${RR_A}"}, {"id": "beta", "key": "${RR_B}", "budget_usd": 1.0}]}
    return ServeState(parse_config({"llms": llms, "auth": auth if keys else {}, "ledger": {"path": None},
                                    "server": server}, env=ENV), router=router)


def _request(headers: dict | None = None, chunks: list[bytes] = (), delay_s: float = 0.0) -> Request:
    parts = list(chunks) or [b""]

    async def receive() -> dict:
        if delay_s:
            await asyncio.sleep(delay_s)
        body = parts.pop(0) if parts else b""
        return {"type": "http.request", "body": body, "more_body": bool(parts)}

    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": raw}, receive)


def _refused(fn, *args) -> RequestError:
    with pytest.raises(RequestError) as info:
        result = fn(*args)
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    return info.value


def _rejected(state: ServeState, reason: str) -> float:
    for line in state.metrics.render().decode().splitlines():
        if line.startswith(f'radialrouter_rejected_total{{reason="{reason}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_key_is_recognised_by_its_bearer_token_and_anything_else_is_a_401(router):
    state = _state(router)
    for header, client in (("Bearer sk-alpha", "alpha"), ("bearer sk-beta", "beta"), ("BEARER  sk-alpha ", "alpha")):
        assert state.authenticate(_request({"authorization": header})) == client, header
    for headers in ({}, {"authorization": "Bearer sk-wrong"}, {"authorization": "Basic sk-alpha"},
                    {"authorization": "Bearer"}, {"authorization": "sk-alpha"}, {"authorization": "Bearer sk-op"}):
        error = _refused(state.authenticate, _request(headers))
        assert (error.status, error.code) == (401, "invalid_api_key"), headers
        assert str(error) == "Incorrect or missing API key: send 'Authorization: Bearer <key>'"
    assert _state(router, keys=False).authenticate(_request()) == "anonymous"  # no keys configured: open


def test_only_the_admin_key_opens_operator_endpoints(router):
    state = _state(router, admin_key="${RR_ADMIN}")
    assert state.is_operator(_request({"authorization": "Bearer sk-operator-0123456789"}))
    assert state.is_operator(_request({"authorization": "bearer sk-operator-0123456789"}))
    for headers in ({}, {"authorization": "Bearer sk-alpha"}, {"authorization": "Bearer sk-operator-01234567890"},
                    {"authorization": "Token sk-operator-0123456789"}):
        assert not state.is_operator(_request(headers)), headers
    none = _state(router)  # no admin key configured: no request is the operator's
    assert not none.is_operator(_request({"authorization": "Bearer sk-operator-0123456789"}))


def test_admission_refuses_beyond_max_in_flight_with_retry_after(router):
    state = _state(router, max_in_flight=2, retry_after_s=3)
    state.enter()
    state.enter()
    error = _refused(state.enter)
    assert (error.status, error.code, error.headers) == (503, "server_busy", {"retry-after": "3"})
    assert str(error) == "The server is at capacity (2 requests in flight); retry shortly"
    assert _rejected(state, "busy") == 1.0
    state.leave()
    state.enter()  # a request that left makes room for one more
    assert state.in_flight == 2


def test_a_body_is_read_whole_and_parsed_to_a_json_object(router):
    state = _state(router)
    body, size = asyncio.run(state.read_json(_request(chunks=[b'{"model": "a", ', b'"n": 1}'])))
    assert body == {"model": "a", "n": 1} and size == len(b'{"model": "a", "n": 1}')
    big = b'{"messages": [{"role": "user", "content": "' + b"x" * (2 * INLINE_BYTES) + b'"}]}'
    body, size = asyncio.run(state.read_json(_request(chunks=[big[:1000], big[1000:]])))  # parsed in a thread
    assert size == len(big) and len(body["messages"][0]["content"]) == 2 * INLINE_BYTES


def test_a_body_that_is_too_large_too_slow_or_not_an_object_is_refused_by_name(router):
    state = _state(router, max_body_bytes=2048, body_timeout_s=0.2)
    declared = _refused(state.read_json, _request({"content-length": "4096"}, [b"{}"]))
    assert (declared.status, declared.code, str(declared)) == (413, "body_too_large",
                                                               "Request body is larger than 2048 bytes")
    streamed = _refused(state.read_json, _request({}, [b"x" * 1500, b"x" * 1500]))  # no length declared
    assert (streamed.status, streamed.code, str(streamed)) == (413, "body_too_large",
                                                               "Request body is larger than 2048 bytes")
    start = time.monotonic()
    slow = _refused(state.read_json, _request({}, [b"{", b"}"], delay_s=0.15))
    assert (slow.status, slow.code) == (408, "request_timeout") and time.monotonic() - start < 2.0
    assert str(slow) == "The request body was not received within 0.2 s"
    for raw, code, text in ((b"{not json", "invalid_json", "Request body is not valid JSON: "),
                            (b'{"x": NaN}', "invalid_json", "Request body is not valid JSON: NaN is not a JSON number"),
                            (b"[1, 2]", "invalid_type", "Request body must be a JSON object")):
        error = _refused(state.read_json, _request({}, [raw]))
        assert (error.status, error.code) == (400, code) and str(error).startswith(text), raw
    big = b"[" + b"1, " * INLINE_BYTES + b"1]"  # large: parsed in a thread, refused alike
    error = _refused(_state(router).read_json, _request({}, [big]))
    assert (error.code, str(error)) == ("invalid_type", "Request body must be a JSON object")


def test_a_refused_rate_limit_or_budget_is_counted_by_reason(router):
    state = _state(router)
    state.limiter = SimpleNamespace(admit=_raising(RequestError("slow down", status=429, code="rate_limit_exceeded")))
    assert _refused(state.admit, "alpha").status == 429
    state.limiter = SimpleNamespace(admit=_raising(RequestError("db down", status=503, code="database_unavailable")))
    assert _refused(state.admit, "alpha").status == 503
    assert _rejected(state, "rate_limited") == 1.0 and _rejected(state, "database_unavailable") == 1.0


def _raising(error: Exception):
    async def admit(client, prompt_tokens=0):
        raise error
    return admit


def test_the_servers_named_tradeoffs_are_its_routers_unless_the_file_sets_them(router):
    state = _state(router)
    assert state.config.tradeoffs == router.presets_ and state.file_config.tradeoffs is None
    assert state.router_path is None  # a router passed in, not loaded from a folder


def test_routing_in_a_thread_shortens_the_gil_switch_interval_and_inline_restores_it(router):
    state = _state(router)
    before = sys.getswitchinterval()
    try:
        state._switch_interval = 0.005  # as lifespan records it at start
        state.set_routing_inline(False)
        assert sys.getswitchinterval() == pytest.approx(0.0005)
        state.set_routing_inline(True)
        assert sys.getswitchinterval() == pytest.approx(0.005) and state.route_inline
    finally:
        sys.setswitchinterval(before)


def test_shutdown_ends_streams_still_open_after_the_grace_with_an_error(router, caplog):
    """On shutdown, open streams get ``shutdown_grace_s`` to finish; those still open then are cut (their read is
    cancelled), and the log says how many and after how long."""
    state = _state(router, shutdown_grace_s=0.05)
    cancelled = []
    class Stream:  # an open stream as the server tracks it: hashable, with the scope its read runs in
        def __init__(self, read_scope) -> None:
            self.cut, self.read_scope = False, read_scope

    open_call, idle_call = Stream(SimpleNamespace(cancel=lambda: cancelled.append(1))), Stream(None)
    state.streams = {open_call, idle_call}

    async def shut() -> None:
        state.begin_shutdown()
        assert state.draining and not open_call.cut
        await asyncio.sleep(0.15)

    with caplog.at_level(logging.INFO, logger="radialrouter.serve"):
        asyncio.run(shut())
    assert open_call.cut and idle_call.cut and cancelled == [1]
    messages = [r.getMessage() for r in caplog.records]
    assert "shutting down: 2 open stream(s) get 0.1 s to finish" in messages
    assert "shutdown: ending 2 stream(s) still open after 0.1 s with an error event" in messages
    state.streams = set()
    state._cut_streams()  # nothing open: nothing to end, nothing logged
    assert len(caplog.records) == len(messages)


def test_a_restarted_server_restores_spend_from_its_decision_log(router, tmp_path):
    """Budgets survive a restart: the server reads each key's spend from its SQLite decision log at start, and
    writes its own rows there with its replica id."""
    from radialrouter.ledger.store import Ledger, LedgerRow

    path = tmp_path / "log.sqlite"
    ledger = Ledger(path)
    for i, (client, cost) in enumerate((("beta", 0.5), ("beta", 0.25), ("alpha", 3.0))):
        assert ledger.record(LedgerRow(f"r{i}", time.time(), client, "auto", None, None, "cheap",
                                       cost_usd=cost)).result(timeout=30)
    ledger.close()
    llms = [{"name": "cheap", "base_url": "http://127.0.0.1:9/cheap/v1", "router_llm": "llm-0", "input_price": 1.0,
             "output_price": 2.0, "context_window": 100_000}]
    auth = {"keys": [{"id": "alpha", "key": "${RR_A}"}, {"id": "beta", "key": "${RR_B}", "budget_usd": 1.0}]}
    state = ServeState(parse_config({"llms": llms, "auth": auth, "ledger": {"path": str(path)}}, env=ENV),
                       router=make_router("best-single").fit(make_synthetic(n_queries=20, n_llms=1, seed=0)))
    try:
        assert state.budgets.room("beta") == pytest.approx(0.25)  # 1.0 − 0.75 spent before the restart
        assert state.budgets.room("alpha") == float("inf")  # no budget: never refused for spend
        assert state.ledger.path == path and state.ledger.replica == state.replica
    finally:
        state.ledger.close()


def test_replicas_label_every_metric_with_their_id(router, monkeypatch):
    monkeypatch.setenv("RADIALROUTER_REPLICA_ID", "pod-7")
    labelled = _state(router)
    labelled.busy("test")
    assert 'radialrouter_rejected_total{reason="busy",replica="pod-7"} 1.0' in labelled.metrics.render().decode()
    monkeypatch.delenv("RADIALROUTER_REPLICA_ID")
    single = _state(router)  # one server, no database: no replica label
    single.busy("test")
    assert 'radialrouter_rejected_total{reason="busy"} 1.0' in single.metrics.render().decode()
