"""One request never breaks another, budgets hold, streams tell the truth: regression tests for the serving audit
(issue 9) against a real server on 127.0.0.1 with scripted fake backends.

Prices are high on purpose (1,000 USD per million tokens, i.e. 0.001 USD a token) so that a handful of tokens
moves a budget measurably.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from radialrouter.data import make_synthetic
from radialrouter.routers import make_router
from radialrouter.serve import parse_config
from radialrouter.serve.app import create_app
from radialrouter.serve.batching import MicroBatcher, QueueFull, TurnBatcher
from radialrouter.serve.testing import ServerThread, fake_backends

PRICE = 1000.0  # USD per million tokens: 0.001 USD per token
KEYS = {"RR_RICH": "sk-rich", "RR_POOR": "sk-poor", "RR_STREAMER": "sk-streamer", "RR_CROWD": "sk-crowd"}
RICH = {"authorization": "Bearer sk-rich"}


def _chat(model: str, content: str = "hi there", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def _sse(text: str) -> list:
    return [p if p == "[DONE]" else json.loads(p) for p in
            (line[6:] for line in text.splitlines() if line.startswith("data: "))]


@pytest.fixture(scope="module")
def router_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("isolation") / "router"
    make_router("best-single").fit(make_synthetic(n_queries=80, n_llms=3, seed=0).select("train")).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def hub():
    with fake_backends(("cheap", "mid", "strong"), keep_requests=False) as backends:
        yield backends


def _config(router_dir: Path, base: str, **server) -> dict:
    pool = [{"name": name, "base_url": f"{base}/{name}/v1", "router_llm": f"llm-{i}", "input_price": PRICE,
             "output_price": PRICE, "context_window": 100_000, "timeout_s": 10.0}
            for i, name in enumerate(("cheap", "mid", "strong"))]
    keys = [{"id": "rich", "key": "${RR_RICH}"}, {"id": "poor", "key": "${RR_POOR}", "budget_usd": 0.01},
            {"id": "streamer", "key": "${RR_STREAMER}", "budget_usd": 0.05},
            {"id": "crowd", "key": "${RR_CROWD}", "budget_usd": 0.01}]
    return {"router": {"path": str(router_dir)}, "llms": pool, "auth": {"keys": keys},
            "ledger": {"path": str(router_dir.parent / f"ledger-{time.monotonic_ns()}.sqlite")},
            "server": {"cooldown_s": 30, "batch_max_wait_ms": 2, "max_body_bytes": 4_500_000, **server}}


@pytest.fixture()
def serve(router_dir, hub):
    """Start a server with server-section overrides: ``with serve(max_in_flight=2) as (app, url): ...``."""
    fakes, base = hub
    for fake in fakes.values():
        fake.mode, fake.fail_every, fake.status, fake.stream_chunks, fake.chunk_delay_s = "ok", 0, 500, 0, 0.0
        fake.delay_s, fake.hang_s = 0.0, 30.0

    def start(llms: dict | None = None, **server):
        data = _config(router_dir, base, **server)
        for entry in data["llms"]:
            entry.update((llms or {}).get(entry["name"], {}))
        app = create_app(parse_config(data, env=KEYS))
        thread = app.state.http_server = ServerThread(app, server=app.state.serve.config.server)

        class _Running:
            def __enter__(self):
                thread.start()
                return app, thread.url

            def __exit__(self, *exc):
                if thread._thread.is_alive():
                    thread.stop()

        return _Running()

    return start


def _wait_idle(app, timeout: float = 20.0) -> None:
    """Until no request is in flight (streams whose client left are still read for their usage)."""
    deadline = time.monotonic() + timeout
    while app.state.serve.in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not app.state.serve.in_flight


def _ledger(app) -> list[dict]:
    ledger = app.state.serve.ledger
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and ledger.backlog():
        time.sleep(0.02)
    time.sleep(0.1)
    with sqlite3.connect(ledger.path) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM decisions ORDER BY ts")]


async def _gather(url: str, requests: list[tuple[dict | bytes, dict]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=400)) as client:
        def send(body, headers):
            if isinstance(body, bytes):
                return client.post("/v1/chat/completions", content=body,
                                   headers={**headers, "content-type": "application/json"})
            return client.post("/v1/chat/completions", json=body, headers=headers)
        return await asyncio.gather(*(send(b, h) for b, h in requests))


# ------------------------------------------------------------------------------------- 1: batch isolation
POISON = [
    (b'{"model": "radial", "messages": [{"role": "user", "content": "hi \\ud800"}]}', "messages[0].content"),
    (json.dumps(_chat("radial@lam=1e39")).encode(), "model"),
    (b'{"model": "radial", "messages": [{"role": "user", "content": "hi"}], "temperature": 1e400}', "temperature"),
]


def test_poison_requests_fail_alone(serve):
    with serve() as (app, url):
        for body, param in POISON:
            normal = [(_chat("radial"), RICH)] * 48
            responses = asyncio.run(_gather(url, normal[:24] + [(body, RICH)] + normal[24:]))
            statuses = [r.status_code for r in responses]
            assert statuses[24] == 400 and responses[24].json()["error"]["param"] == param, responses[24].text
            assert statuses.count(200) == 48, (param, statuses)
        r = httpx.post(f"{url}/v1/route", headers=RICH,
                       content=b'{"model": "radial", "prompt": "x \\udfff"}')
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_unicode"


def test_batcher_retries_items_alone_when_the_batch_raises():
    def fn(items):
        if 3 in items:
            raise ValueError("poison in the batch")
        return [x * 10 for x in items]

    async def main():
        batcher = MicroBatcher(fn, max_size=8, max_wait_s=0.01)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(i) for i in range(8)), return_exceptions=True)
        finally:
            await batcher.stop()

    results = asyncio.run(main())
    assert isinstance(results[3], ValueError)
    assert [r for i, r in enumerate(results) if i != 3] == [i * 10 for i in range(8) if i != 3]


def test_batcher_queue_is_bounded():
    async def main():
        batcher = MicroBatcher(lambda items: (time.sleep(0.05), items)[1], max_size=1, max_wait_s=0, max_queue=2)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(i) for i in range(6)), return_exceptions=True)
        finally:
            await batcher.stop()

    results = asyncio.run(main())
    assert any(isinstance(r, QueueFull) for r in results) and 0 in results


def test_turn_batcher_decides_one_turns_items_together_and_isolates_errors():
    """Items submitted during one turn of the loop share one call at the next (split at ``max_size``); a batch
    that raises is retried one item at a time; a caller that gave up is skipped; the next turn starts afresh."""
    calls = []

    def fn(items):
        calls.append(list(items))
        if 3 in items:
            raise ValueError("poison in the batch")
        return [x * 10 for x in items]

    async def main():
        batcher = TurnBatcher(fn, max_size=4)
        futures = [batcher.submit(i) for i in range(6)]
        futures[5].cancel()
        first = await asyncio.gather(*futures[:5], return_exceptions=True)
        second = await batcher.submit(7)
        return first, second

    first, second = asyncio.run(main())
    assert isinstance(first[3], ValueError) and [r for i, r in enumerate(first) if i != 3] == [0, 10, 20, 40]
    assert second == 70
    # [0..3] raised, so each of its items ran alone; [4] (5 was cancelled) and [7] were calls of their own
    assert calls == [[0, 1, 2, 3], [0], [1], [2], [3], [4], [7]]


def test_auto_routes_inline_only_when_a_decision_is_cheap(router_dir, hub):
    """``routing_thread: auto`` puts a sub-millisecond router on the event loop and keeps a slow one in the thread;
    ``always`` / ``never`` force either."""
    from radialrouter.serve.routing import INLINE_DECISION_S, decides_inline
    from radialrouter.serve.state import ServeState

    _, base = hub
    state = ServeState(parse_config(_config(router_dir, base), env=KEYS))
    cheap = state.decider.decision_seconds() <= INLINE_DECISION_S
    assert state.route_inline == cheap
    for where, expected in (("always", False), ("never", True)):
        config = parse_config(_config(router_dir, base, routing_thread=where), env=KEYS)
        assert decides_inline(config, state.decider) is expected
    decide = state.decider.decide

    def slow_decide(queries):  # a router that needs 1 ms of CPU per decision
        end = time.thread_time() + 2 * INLINE_DECISION_S
        while time.thread_time() < end:
            pass
        return decide(queries)

    state.decider.decide = slow_decide
    assert decides_inline(parse_config(_config(router_dir, base), env=KEYS), state.decider) is False


def test_where_decisions_run_changes_no_decision(serve):
    """On the event loop (``never``) or in the routing thread (``always``), the same requests get the same
    decisions, concurrent ones included."""
    prompts = [f"question {i}: {'prove a theorem' if i % 2 else 'sort a list'} number {i}" for i in range(12)]

    async def decisions(url: str) -> list[tuple[str, list[str]]]:
        async with httpx.AsyncClient(timeout=30, headers=RICH) as client:
            replies = await asyncio.gather(*(client.post(f"{url}/v1/route", json={
                "model": "radial", "messages": [{"role": "user", "content": p}]}) for p in prompts))
        assert all(r.status_code == 200 for r in replies)
        return [(r.json()["llm"], r.json()["ranking"]) for r in replies]

    seen = {}
    for where in ("never", "always"):
        with serve(routing_thread=where) as (app, url):
            assert app.state.serve.route_inline is (where == "never")
            seen[where] = asyncio.run(decisions(url))
    assert seen["never"] == seen["always"]


def test_requests_that_reach_the_loop_together_share_one_decision(router_dir, hub):
    """On the event loop, a request alone is decided at once, and requests started in the same turn of the loop
    share one decision call (`TurnBatcher`) — each decided exactly once, as it would be alone."""
    _, base = hub
    app = create_app(parse_config(_config(router_dir, base, routing_thread="never"), env=KEYS))
    state, sizes = app.state.serve, []
    decide = state.decider.decide
    state.decider.decide = lambda queries: (sizes.append(len(queries)), decide(queries))[1]
    prompts = [f"question {i}: {'prove a theorem' if i % 2 else 'sort a list'}" for i in range(12)]

    async def main():
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gateway", headers=RICH) as client:
            async def route(p):  # a chat request: its backend call keeps it in flight while the next one starts
                r = await client.post("/v1/chat/completions", json=_chat("radial", p))
                assert r.status_code == 200, r.text
                return r.headers["x-radialrouter-model"]
            alone = [await route(p) for p in prompts]
            del sizes[:]
            together = await asyncio.gather(*(route(p) for p in prompts))
            return alone, together

    alone, together = asyncio.run(main())
    assert together == alone
    assert sum(sizes) == len(prompts) and max(sizes) > 1, sizes


# ------------------------------------------------------------------------------------- 2, 3: budgets
def test_stream_then_disconnect_is_charged(serve, hub):
    """Closing a stream after its first chunk used to cost nothing: now the server reads on until the backend's
    usage arrives and books that, so the key runs out of budget like any other."""
    fakes, _ = hub
    fakes["strong"].stream_chunks, fakes["strong"].chunk_delay_s = 200, 0.02
    headers = {"authorization": "Bearer sk-streamer"}
    body = _chat("strong", "please tell me a long story about routers", stream=True, max_tokens=20)
    with serve() as (app, url):
        served = 0
        for _ in range(40):
            with httpx.Client(base_url=url, timeout=30) as client, \
                    client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
                if r.status_code != 200:
                    assert r.status_code == 429 and json.loads(r.read())["error"]["code"] == "budget_exceeded"
                    break
                served += 1
                next(r.iter_lines())  # the first chunk, then hang up
        _wait_idle(app)  # hung-up streams are read on until their usage arrives
        rows = [r for r in _ledger(app) if r["client"] == "streamer"]
    assert 0 < served < 40
    cut = [r for r in rows if r["status"] == "client_disconnected"]
    # the server read on after each hang-up until the backend's usage came: the bill, not what was relayed
    assert cut and all(r["cost_usd"] > 0 and r["cost_source"] == "usage" and r["completion_tokens"] == 20
                       for r in cut)
    reservation = (int(rows[0]["prompt_tokens"] * 1.15 + 0.999) + 20) * PRICE / 1e6
    assert sum(r["cost_usd"] or 0 for r in rows) <= 0.05 + reservation


def test_concurrent_requests_cannot_overspend(serve):
    with serve() as (app, url):
        body = _chat("radial", "one two three four five", max_tokens=10)
        responses = asyncio.run(_gather(url, [(body, {"authorization": "Bearer sk-crowd"})] * 100))
        rows = [r for r in _ledger(app) if r["client"] == "crowd" and r["cost_usd"] is not None]
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429} and statuses.count(200) >= 1
    spent = sum(r["cost_usd"] for r in rows)
    one = max(r.json()["router"]["cost_usd"] for r in responses if r.status_code == 200)
    reservation = (int(rows[0]["prompt_tokens"] * 1.15 + 0.999) + 10) * PRICE / 1e6
    assert one <= reservation and spent <= 0.01 + reservation, (spent, statuses.count(200))


# ------------------------------------------------------------------------------------- 4: per-backend pools
def test_hung_backend_does_not_starve_healthy_ones(serve, hub):
    fakes, _ = hub
    fakes["strong"].mode, fakes["strong"].hang_s = "hang", 6.0
    with serve(max_connections=4, pool_timeout_s=0.3) as (app, url):
        async def main():
            async with httpx.AsyncClient(base_url=url, headers=RICH, timeout=30) as client:
                hung = [asyncio.create_task(client.post("/v1/chat/completions", json=_chat("strong")))
                        for _ in range(6)]
                await asyncio.sleep(0.5)  # strong's 4 connections are taken; 2 requests wait for its pool
                healthy = await asyncio.gather(*(client.post("/v1/chat/completions", json=_chat("cheap"))
                                                 for _ in range(20)))
                routed = await client.post("/v1/chat/completions", json=_chat("radial:performance-first"))
                for task in hung:
                    task.cancel()
                return healthy, routed

        healthy, routed = asyncio.run(main())
        assert [r.status_code for r in healthy] == [200] * 20
        # strong's pool is full: the routed request moves on at once, and strong is not put in cooldown for it
        assert routed.status_code == 200 and routed.json()["model"] == "mid"
        assert routed.json()["router"]["attempts"] == [{"llm": "strong", "error": "pool_full"}]
        assert "strong" not in app.state.serve.upstream.cooling()


# ------------------------------------------------------------------------------------- 5: large prompts
def test_large_prompts_do_not_block_routing(serve):
    big = json.dumps(_chat("radial", "lorem ipsum dolor sit amet " * 140_000)).encode()  # ~3.8 MB
    assert len(big) > 3_500_000
    with serve() as (app, url):
        async def main():
            async with httpx.AsyncClient(base_url=url, headers=RICH, timeout=120) as client:
                large = [asyncio.create_task(client.post("/v1/route", content=big,
                                                         headers={"content-type": "application/json"}))
                         for _ in range(3)]
                await asyncio.sleep(0.2)
                latencies = []
                for _ in range(10):
                    t0 = time.perf_counter()
                    r = await client.post("/v1/route", json={"model": "radial", "prompt": "hello"})
                    latencies.append(time.perf_counter() - t0)
                    assert r.status_code == 200
                return latencies, await asyncio.gather(*large)

        latencies, large = asyncio.run(main())
    # before the fix each normal request waited for the 3 large ones to be tokenised in the batch (~30 s)
    assert max(latencies) < 3.0, latencies
    print("normal /v1/route latencies with 3 large prompts in flight (s):", [round(x, 3) for x in latencies])
    # ~700k tokens: more than any context window here (counting stops just past the largest one)
    assert all(r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded" for r in large)


# ------------------------------------------------------------------------------------- 6: honest streams
def test_stream_ending_early_is_an_error_not_a_success(serve, hub):
    fakes, _ = hub
    fakes["strong"].mode = "eof"
    fakes["strong"].stream_chunks = 10
    with serve() as (app, url):
        r = httpx.post(f"{url}/v1/chat/completions", json=_chat("strong", stream=True), headers=RICH, timeout=30)
        events = _sse(r.text)
        rows = _ledger(app)
    assert "[DONE]" not in events and events[-1]["error"]["code"] == "stream_interrupted"
    assert rows[-1]["status"] == "stream_truncated"


def test_stream_that_does_not_start_with_a_chunk_falls_back(serve, hub):
    fakes, _ = hub
    fakes["strong"].mode = "malformed"  # 200, but the body is broken JSON, not server-sent chunks
    with serve() as (_, url):
        r = httpx.post(f"{url}/v1/chat/completions", json=_chat("radial:performance-first", stream=True),
                       headers=RICH, timeout=30)
    events = _sse(r.text)
    assert events[-1] == "[DONE]" and events[0]["model"] == "mid"
    assert events[0]["router"]["attempts"] == [{"llm": "strong", "error": "bad_response"}]


def test_openai_client_sees_an_early_eof_as_an_error(serve, hub):
    openai = pytest.importorskip("openai")
    fakes, _ = hub
    fakes["strong"].mode, fakes["strong"].stream_chunks = "eof", 10
    with serve() as (_, url):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-rich", max_retries=0)
        with pytest.raises(openai.APIError):
            for _ in client.chat.completions.create(model="strong", stream=True,
                                                    messages=[{"role": "user", "content": "hi"}]):
                pass


# ------------------------------------------------------------------------------------- 8: shutdown
def test_shutdown_ends_open_streams_with_an_error_event(serve, hub):
    fakes, _ = hub
    fakes["strong"].stream_chunks, fakes["strong"].chunk_delay_s = 300, 0.05
    with serve(shutdown_grace_s=0.5) as (app, url):
        with httpx.Client(base_url=url, headers=RICH, timeout=30) as client, \
                client.stream("POST", "/v1/chat/completions", json=_chat("strong", stream=True)) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
            # the HTTP layer's shutdown (what SIGTERM starts in `radialrouter serve`), from another thread
            stopper = threading.Thread(target=app.state.http_server.stop, daemon=True)
            t0 = time.monotonic()
            stopper.start()
            rest = [line for line in lines if line.startswith("data: ")]
            waited = time.monotonic() - t0
        stopper.join(10)
        rows = _ledger(app)
    last = json.loads(rest[-1][6:])
    assert last["error"]["code"] == "server_shutdown" and "data: [DONE]" not in rest
    assert waited < 5  # cut after the 0.5 s grace, not after the 15 s the stream would take
    row = rows[-1]
    assert row["status"] == "shutdown" and row["cost_usd"] > 0 and row["completion_tokens"] > 0


# ------------------------------------------------------------------------------------- 11: admission
def test_admission_control_answers_503_with_retry_after(serve, hub):
    fakes, _ = hub
    fakes["cheap"].delay_s = 0.5
    with serve(max_in_flight=4, retry_after_s=3) as (_, url):
        responses = asyncio.run(_gather(url, [(_chat("cheap"), RICH)] * 12))
    busy = [r for r in responses if r.status_code == 503]
    assert len([r for r in responses if r.status_code == 200]) >= 4 and busy
    assert all(r.headers["retry-after"] == "3" and r.json()["error"]["code"] == "server_busy" for r in busy)


def test_upstream_retry_after_is_passed_through(serve, hub):
    fakes, _ = hub
    for name, wait in (("cheap", "7"), ("mid", "4"), ("strong", "9")):
        fakes[name].mode, fakes[name].status, fakes[name].retry_after = "error", 429, wait
    with serve() as (_, url):
        r = httpx.post(f"{url}/v1/chat/completions", json=_chat("radial"), headers=RICH, timeout=30)
    assert r.status_code == 429 and r.headers["retry-after"] == "4"
    for fake in fakes.values():
        fake.retry_after = "2"


# ------------------------------------------------------------------------------------- 12: untested guarantees
def test_a_body_sent_too_slowly_gets_408(serve):
    """Timeouts: a client must send its body within ``body_timeout_s``, else 408 ``request_timeout`` — while other
    clients are served meanwhile."""
    import socket

    with serve(body_timeout_s=0.5) as (_, url):
        host, port = url.removeprefix("http://").split(":")
        body = json.dumps(_chat("cheap")).encode()
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-rich\r\n"
                         b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
                         + body[:10])
            other = httpx.post(f"{url}/v1/chat/completions", json=_chat("cheap"), headers=RICH, timeout=10)
            start = time.monotonic()
            reply = b""
            while b"\r\n\r\n" not in reply:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
            waited = time.monotonic() - start
    assert other.status_code == 200
    assert reply.split(b" ")[1] == b"408" and waited < 5, reply[:200]


def test_a_full_routing_queue_answers_503_at_once(serve):
    """Admission control: at most ``max_routing_queue`` requests wait for a routing decision; beyond, an immediate
    503 ``server_busy`` with ``Retry-After: retry_after_s``, and the requests that were admitted are answered.
    (Decisions in the routing thread: the event loop keeps admitting while one runs.)"""
    with serve(max_routing_queue=1, batch_max_size=1, retry_after_s=4, routing_thread="always") as (app, url):
        batcher = app.state.serve.batcher
        decide = batcher.fn

        def slow(items):
            time.sleep(0.4)
            return decide(items)

        batcher.fn = slow
        start = time.monotonic()
        responses = asyncio.run(_gather(url, [(_chat("radial"), RICH)] * 10))
        elapsed = time.monotonic() - start
    busy = [r for r in responses if r.status_code == 503]
    served = [r for r in responses if r.status_code == 200]
    assert busy and served and len(busy) + len(served) == 10
    assert all(r.headers["retry-after"] == "4" and r.json()["error"]["code"] == "server_busy" for r in busy)
    assert elapsed < 0.4 * 10  # refused at once, not queued behind the slow decisions


def test_every_pool_full_is_a_503_and_no_cooldown(serve, hub):
    """Backends are isolated: waiting longer than ``pool_timeout_s`` for a connection is local saturation — the
    request moves on (attempt ``pool_full``), no backend cools down, and when every attempt failed that way the
    answer is 503 with ``Retry-After``."""
    fakes, _ = hub
    for fake in fakes.values():
        fake.delay_s = 1.5
    one = {"max_connections": 1}
    with serve(llms={"cheap": one, "mid": one, "strong": one}, pool_timeout_s=0.2, retry_after_s=2) as (app, url):
        responses = asyncio.run(_gather(url, [(_chat("radial"), RICH)] * 6))
        cooling = httpx.get(f"{url}/health", timeout=10).json()
    for fake in fakes.values():
        fake.delay_s = 0.0
    full = [r for r in responses if r.status_code == 503]
    assert sum(r.status_code == 200 for r in responses) >= 3 and full
    for r in full:
        assert r.headers["retry-after"] == "2" and r.json()["error"]["code"] == "upstream_failed"
        tried = r.json()["error"]["message"].split(": ", 1)[1].split(", ")
        assert tried and all(t.endswith("(pool_full)") for t in tried), tried
    assert not app.state.serve.upstream.cooling() and not cooling["cooling_down"]
