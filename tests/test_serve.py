"""The routing server over real HTTP: a fake OpenAI-compatible backend (uvicorn, 127.0.0.1) behind the server.

The router is best-single on synthetic data (it reads no query text, so no encoder loads): at λ=0 it ranks
strong > mid > cheap, at λ=0.1 (cost-first) cheap > mid > strong. One test routes with a kNN router on the
bundled encoder to cover the embedding path.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import train_context_router
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from radialrouter.core.tokens import load_tokenizer
from radialrouter.data import make_synthetic
from radialrouter.ledger.store import Ledger
from radialrouter.routers import make_router
from radialrouter.serve import ConfigError, load_config, parse_config
from radialrouter.serve.app import create_app
from radialrouter.serve.batching import MicroBatcher
from radialrouter.serve.calls import _Call
from radialrouter.serve.routing import (
    TOKENS_PER_MESSAGE,
    TOKENS_PER_REPLY,
    count_tokens,
    parse_model,
    routing_text,
    token_bound,
)
from radialrouter.serve.testing import ServerThread, fake_backends
from radialrouter.serve.upstream import ShardedTransport

KEY, KEY_ENV = "sk-test-client-secret", {"RR_CLIENT_KEY": "sk-test-client-secret", "RR_BACKEND_KEY": "sk-backend",
                                           "RR_POOR_KEY": "sk-poor-client"}
AUTH = {"authorization": f"Bearer {KEY}"}
_COUNTER = load_tokenizer()
LONG = "please summarise this " * 80  # ~240 tokens: more than cheap's 128-token window


def _pool(base: str) -> list[dict]:
    common = {"api_key": "${RR_BACKEND_KEY}", "input_price": 1.0, "output_price": 2.0}
    return [
        {"name": "cheap", "base_url": f"{base}/cheap/v1", "router_llm": "llm-0", "context_window": 128,
         "capabilities": ["json"], **common},
        {"name": "mid", "base_url": f"{base}/mid/v1", "router_llm": "llm-1", "context_window": 100_000,
         "capabilities": ["tools", "json"], **common},
        {"name": "strong", "base_url": f"{base}/strong/v1", "router_llm": "llm-2", "context_window": 100_000,
         "capabilities": ["tools", "vision", "json"], "timeout_s": 1.0, "model": "strong-2026-01", **common},
    ]


@pytest.fixture(scope="module")
def router_dir(tmp_path_factory) -> Path:
    ds = make_synthetic(n_queries=80, n_llms=3, seed=0)
    path = tmp_path_factory.mktemp("serve") / "router"
    make_router("best-single").fit(ds.select("train")).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def backends():
    with fake_backends(("cheap", "mid", "strong")) as hub:
        yield hub


@pytest.fixture(scope="module")
def config_path(router_dir, backends) -> Path:
    _, base = backends
    data = {
        "router": {"path": "router"},  # relative to the config file
        "llms": _pool(base),
        "server": {"cooldown_s": 30, "max_body_bytes": 4096, "batch_max_wait_ms": 1},
        "auth": {"keys": [{"id": "alice", "key": "${RR_CLIENT_KEY}"},
                          {"id": "poor", "key": "${RR_POOR_KEY}", "budget_usd": 1e-9}]},
        "ledger": {"path": "decisions.sqlite"},
    }
    path = router_dir.parent / "serve.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def server(config_path):
    app = create_app(load_config(config_path, env=KEY_ENV))
    with ServerThread(app) as thread:
        yield app, thread.url


@pytest.fixture()
def http(server, backends):
    """A fresh HTTP client; backends reset to healthy and no cooldowns left from earlier tests."""
    app, url = server
    for fake in backends[0].values():
        fake.mode, fake.fail_every, fake.status = "ok", 0, 500
        fake.requests.clear()
    app.state.serve.upstream._cool_until.clear()
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        yield client


def _chat(model: str, content: str = "hi there", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def _events(response: httpx.Response) -> list:
    out = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            payload = line[len("data: "):]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


# ---------------------------------------------------------------------------------------------- config
def test_config_errors_name_the_field(tmp_path):
    base = {"llms": [{"name": "a", "base_url": "http://127.0.0.1:1/v1", "input_price": 1, "output_price": 1,
                      "context_window": 100}]}
    bad = [
        ({"api_key": "sk-literal"}, "llms[0].api_key: must be an environment reference"),
        ({"api_key": "${NOT_SET_ANYWHERE}"}, "llms[0].api_key: environment variable NOT_SET_ANYWHERE is not set"),
        ({"base_url": "ftp://x"}, "llms[0].base_url"),
        ({"capabilities": ["telepathy"]}, "llms[0].capabilities[0]"),
        ({"context_window": 0}, "llms[0].context_window"),
        ({"surprise": 1}, "llms[0].surprise: unknown key; the keys here are name, base_url, api_key, model"),
    ]
    for patch, message in bad:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            parse_config({"llms": [{**base["llms"][0], **patch}]}, env={})
    with pytest.raises(ConfigError, match=r"server.host: '0.0.0.0' is not a loopback address"):
        parse_config({**base, "server": {"host": "0.0.0.0"}}, env={})
    with pytest.raises(ConfigError, match="router.default_tradeoff"):
        parse_config({**base, "router": {"default_tradeoff": "frugal"}}, env={})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**base, "router": {"path": "models/r"}}))
    config = load_config(tmp_path / "c.yaml", env={})
    assert config.router.path == (tmp_path / "models" / "r").resolve()
    assert config.ledger.path == (tmp_path / "radialrouter-decisions.sqlite").resolve()
    (tmp_path / "broken.yaml").write_text("llms: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")


def test_misspelt_config_key_says_which_was_meant():
    """pydantic's "Extra inputs are not permitted" left the user to find the right spelling (issue 25, item 11)."""
    llm = {"name": "a", "base_url": "http://127.0.0.1:1/v1", "input_price": 1, "output_price": 1,
           "context_window": 100}
    cases = [
        ({"llms": [llm], "server": {"max_atempts": 3}}, "server.max_atempts: unknown key; did you mean max_attempts?"),
        ({"llms": [llm], "servr": {}}, "servr: unknown key; did you mean server?"),
        ({"llms": [{**llm, "input_prise": 1}]}, "llms[0].input_prise: unknown key; did you mean input_price?"),
        ({"llms": [llm], "router": {"explore": {"epsilom": 0.1}}},
         "router.explore.epsilom: unknown key; did you mean epsilon?"),
    ]
    for data, message in cases:
        with pytest.raises(ConfigError) as caught:
            parse_config(data, env={})
        assert message in [line.strip() for line in str(caught.value).splitlines()], str(caught.value)


def test_config_validate_cli_masks_secrets(config_path, monkeypatch):
    from radialrouter.cli import app

    for k, v in KEY_ENV.items():
        monkeypatch.setenv(k, v)
    result = CliRunner().invoke(app, ["config", "validate", str(config_path)])
    assert result.exit_code == 0, result.output
    assert "${RR_BACKEND_KEY}" in result.output and "strong-2026-01" in result.output
    assert all(secret not in result.output for secret in KEY_ENV.values())
    monkeypatch.delenv("RR_CLIENT_KEY")
    result = CliRunner().invoke(app, ["config", "validate", str(config_path)])
    assert result.exit_code == 2 and "auth.keys[0].key: environment variable RR_CLIENT_KEY" in result.output


# ---------------------------------------------------------------------------------------------- routing
def test_aliases_route_and_report_the_decision(http, backends):
    fakes = backends[0]
    r = http.post("/v1/chat/completions", json=_chat("radial:performance-first"))
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == "strong" and r.headers["x-radialrouter-model"] == "strong"
    assert r.headers["x-radialrouter-lam"] == "0" and body["choices"][0]["message"]["content"] == "Hello from strong."
    info = body["router"]
    assert info["routed"] and info["ranking"] == ["strong", "mid", "cheap"] and not info["fallback"]
    assert info["cost_usd"] == pytest.approx((2 * 1.0 + 5 * 2.0) / 1e6)  # fake usage: 2 prompt, 5 completion
    assert fakes["strong"].requests[-1]["model"] == "strong-2026-01"  # the upstream model id
    for model, llm in [("radial:cost-first", "cheap"), ("radial@lam=0.1", "cheap"), ("radial", "strong"),
                       ("mid", "mid")]:
        r = http.post("/v1/chat/completions", json=_chat(model))
        assert r.json()["model"] == llm, model
    assert r.json()["router"]["routed"] is False and "x-radialrouter-lam" not in r.headers


def test_models_and_route_endpoint(http, server):
    cost_first = server[0].state.serve.router.presets_["cost-first"]  # the router's own, on its price scale
    assert server[0].state.serve.config.tradeoffs["cost-first"] == cost_first > 0
    ids = [m["id"] for m in http.get("/v1/models").json()["data"]]
    assert ids[:4] == ["radial", "radial:performance-first", "radial:balance", "radial:cost-first"]
    assert {"cheap", "mid", "strong"} <= set(ids)
    r = http.post("/v1/route", json={"model": "radial:cost-first", "prompt": LONG})
    decision = r.json()
    assert r.status_code == 200 and decision["llm"] == "mid" and decision["lam"] == cost_first
    assert decision["ranking"] == ["mid", "strong"] and "context window" in decision["excluded"]["cheap"]
    assert set(decision["scores"]) == {"mid", "strong"} and decision["expected_cost_usd"] > 0


def test_context_window_and_capabilities_filter_candidates(http, backends):
    fakes = backends[0]
    assert http.post("/v1/chat/completions", json=_chat("radial:cost-first", LONG)).json()["model"] == "mid"
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    request = _chat("radial:cost-first", "weather in Paris?", tools=tools, tool_choice="auto",
                    response_format={"type": "json_object"}, x_vendor_extension={"keep": [1, 2]}, temperature=0.2)
    r = http.post("/v1/chat/completions", json=request)
    assert r.json()["model"] == "mid"  # cheap lacks tools
    sent = fakes["mid"].requests[-1]
    assert {k: sent[k] for k in request if k != "model"} == {k: v for k, v in request.items() if k != "model"}
    assert r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    image = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "data:,"}}]
    r = http.post("/v1/chat/completions", json={"model": "radial:cost-first",
                                                "messages": [{"role": "user", "content": image}]})
    assert r.json()["model"] == "strong"  # only strong has vision


def test_no_capable_llm_is_a_clear_400(http):
    image = [{"type": "image_url", "image_url": {"url": "data:,"}}]
    r = http.post("/v1/chat/completions", json={"model": "radial", "messages": [{"role": "user", "content": image}],
                                                "max_tokens": 99_000})
    error = r.json()["error"]  # strong alone has vision; its window cannot hold the image and 99,000 output tokens
    assert r.status_code == 400 and error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert "largest context window that could serve it: 100000 (strong)" in error["message"]
    r = http.post("/v1/chat/completions", json={"model": "radial", "messages": [{"role": "user", "content": "hi"}],
                                                "tools": [{"type": "function", "function": {"name": "f"}}],
                                                "response_format": {"type": "json_object"}, "max_tokens": 10,
                                                **{"n": 1}})
    assert r.status_code == 200  # tools + json: mid and strong qualify


def test_streaming_reports_router_in_first_and_last_chunk(http, backends):
    with http.stream("POST", "/v1/chat/completions", json=_chat("radial:cost-first", stream=True)) as r:
        assert r.status_code == 200 and r.headers["x-radialrouter-model"] == "cheap"
        events = _events(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["router"]["llm"] == "cheap" and all(c["model"] == "cheap" for c in chunks)
    final = chunks[-1]["router"]
    assert chunks[-1]["choices"] == [] and final["usage"]["completion_tokens"] > 0 and final["cost_usd"] > 0
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello from cheap."  # the decision never enters the content
    assert all("usage" not in c for c in chunks[:-1])  # usage chunk requested upstream, not shown to the client
    assert backends[0]["cheap"].requests[-1]["stream_options"] == {"include_usage": True}


# ---------------------------------------------------------------------------------------------- failures
@pytest.mark.parametrize("stream", [False, True])
def test_fallback_on_500(http, backends, server, stream):
    fakes = backends[0]
    fakes["strong"].mode = "error"
    r = http.post("/v1/chat/completions", json=_chat("radial:performance-first", stream=stream))
    assert r.status_code == 200 and r.headers["x-radialrouter-model"] == "mid"
    assert r.headers["x-radialrouter-fallback"] == "true"
    info = r.json()["router"] if not stream else json.loads(r.text.split("data: ")[1])["router"]
    assert info["choice"] == "strong" and info["attempts"] == [{"llm": "strong", "error": "http_500"}]
    # strong is cooling down now: the next request goes to mid first, without retrying strong
    calls = fakes["strong"].calls
    assert http.post("/v1/chat/completions", json=_chat("radial:performance-first")).json()["model"] == "mid"
    assert fakes["strong"].calls == calls


def test_fallback_on_timeout_and_429(http, backends):
    fakes = backends[0]
    fakes["strong"].mode, fakes["strong"].hang_s = "hang", 5.0
    fakes["mid"].mode, fakes["mid"].status = "error", 429
    start = time.perf_counter()
    r = http.post("/v1/chat/completions", json=_chat("radial:performance-first"))
    assert r.status_code == 200 and r.json()["model"] == "cheap"
    assert [a["error"] for a in r.json()["router"]["attempts"]] == ["timeout", "http_429"]
    assert time.perf_counter() - start < 4.5  # strong's timeout_s is 1 s


def test_all_backends_failing_is_a_502(http, backends):
    for fake in backends[0].values():
        fake.mode = "error"
    r = http.post("/v1/chat/completions", json=_chat("radial"))
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_failed"
    assert "strong (http_500)" in r.json()["error"]["message"]


def test_no_fallback_after_stream_started(http, backends):
    fakes = backends[0]
    fakes["strong"].mode = "break"
    with http.stream("POST", "/v1/chat/completions", json=_chat("radial:performance-first", stream=True)) as r:
        assert r.status_code == 200
        events = _events(r)
    assert events[0]["router"]["llm"] == "strong"
    assert events[-1]["error"]["code"] == "stream_interrupted" and "[DONE]" not in events
    assert not fakes["mid"].requests and not fakes["cheap"].requests


def test_backend_client_error_is_returned_as_is(http, backends):
    fakes = backends[0]
    fakes["strong"].mode, fakes["strong"].status = "error", 400
    r = http.post("/v1/chat/completions", json=_chat("radial:performance-first"))
    assert r.status_code == 400 and r.json()["error"]["message"] == "strong failed on purpose"
    assert not fakes["mid"].requests and r.headers["x-radialrouter-model"] == "strong"


@pytest.mark.parametrize("status", [401, 403])
def test_a_backend_rejecting_our_key_falls_back_and_cools_down(http, backends, status):
    """'How a request is routed', step 4: 401/403 from a backend is our misconfiguration, not the client's fault —
    the request moves on to the next-ranked LLM, and that backend is tried last while it cools down."""
    fakes = backends[0]
    fakes["strong"].mode, fakes["strong"].status = "error", status
    r = http.post("/v1/chat/completions", json=_chat("radial:performance-first"))
    assert r.status_code == 200 and r.json()["model"] == "mid"
    assert r.json()["router"]["attempts"] == [{"llm": "strong", "error": f"http_{status}"}]
    fakes["strong"].mode = "ok"
    calls = fakes["strong"].calls
    assert http.post("/v1/chat/completions", json=_chat("radial:performance-first")).json()["model"] == "mid"
    assert fakes["strong"].calls == calls


@pytest.mark.parametrize("mode", ["break", "eof"])
def test_a_truncated_stream_puts_its_backend_in_cooldown(http, backends, mode):
    """Guarantees, 'Streams are honest': a stream that ends early puts the backend in cooldown, so the next routed
    request goes to the next-ranked LLM without calling the failed backend again."""
    fakes = backends[0]
    fakes["strong"].mode = mode
    with http.stream("POST", "/v1/chat/completions", json=_chat("radial:performance-first", stream=True)) as r:
        events = _events(r)
    assert events[0]["router"]["llm"] == "strong" and events[-1]["error"]["code"] == "stream_interrupted"
    fakes["strong"].mode = "ok"
    calls = fakes["strong"].calls
    r = http.post("/v1/chat/completions", json=_chat("radial:performance-first"))
    assert r.status_code == 200 and r.json()["model"] == "mid" and fakes["strong"].calls == calls


# ---------------------------------------------------------------------------------------------- security
def test_auth(server, http):
    _, url = server
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": KEY}):
        r = httpx.post(f"{url}/v1/chat/completions", json=_chat("radial"), headers=headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        # what an OpenAI client shows its user: how to authenticate
        assert r.json()["error"]["message"] == "Incorrect or missing API key: send 'Authorization: Bearer <key>'"
    assert httpx.get(f"{url}/v1/models").status_code == 401
    assert httpx.get(f"{url}/metrics").status_code == 401
    assert httpx.get(f"{url}/health").json()["status"] == "ok"


@pytest.mark.parametrize(("content", "status", "param", "code"), [
    (b"{not json", 400, None, "invalid_json"),
    (b"[1, 2]", 400, None, "invalid_type"),
    (b'{"model": "radial", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}', 400, None,
     "invalid_json"),
    (b"[" * 3000, 400, None, "invalid_json"),  # nesting deeper than the parser recursion limit
    (json.dumps({"model": "radial"}).encode(), 400, "messages", "missing_required_parameter"),
    (json.dumps({"model": "radial", "messages": "hi"}).encode(), 400, "messages", "invalid_type"),
    (json.dumps({"model": "radial", "messages": [{"content": "x"}]}).encode(), 400, "messages[0]", "invalid_type"),
    (json.dumps(_chat("radial", stream="yes")).encode(), 400, "stream", "invalid_type"),
    (json.dumps(_chat("radial", max_tokens=-1)).encode(), 400, "max_tokens", "invalid_type"),
    (json.dumps(_chat(7)).encode(), 400, "model", "invalid_type"),
    (json.dumps(_chat("gpt-17")).encode(), 404, "model", "model_not_found"),
    (json.dumps(_chat("radial@lam=-1")).encode(), 400, "model", "invalid_request"),
    (json.dumps(_chat("radial", "x" * 5000)).encode(), 413, None, "body_too_large"),
    # each of these used to be a 500 (issue 9, item 7)
    (b'{"model": "mid", "messages": [{"role": "user", "content": "x"}], "temperature": 1e400}', 400, "temperature",
     "invalid_value"),
    (json.dumps(_chat("radial", [{"type": {"a": 1}, "text": "x"}])).encode(), 400, "messages[0].content[0]",
     "invalid_type"),
    (json.dumps(_chat("radial", response_format={"type": ["json_object"]})).encode(), 400, "response_format",
     "invalid_type"),
    (b'{"model": "mid", "messages": [{"role": "user", "content": "x"}], "x": ' + b"[" * 950 + b"]" * 950 + b"}",
     400, "x" + "[0]" * 63, "too_deep"),
    (b'{"model": "mid", "messages": [{"role": "user", "content": "hi \\ud800"}]}', 400, "messages[0].content",
     "invalid_unicode"),
    (b'{"model": "mid", "messages": [{"role": "user", "content": "x"}], "x\\udc00": 1}', 400, None,
     "invalid_unicode"),
    (json.dumps(_chat("mid", max_tokens=10**40)).encode(), 400, "max_tokens", "invalid_type"),
])
def test_bad_inputs_get_openai_style_4xx(http, content, status, param, code):
    r = http.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["param"], error["code"]) == (param, code)


def test_unknown_path_and_method_are_openai_style(http):
    assert http.get("/v1/nothing").json()["error"]["code"] == "not_found"
    assert http.get("/v1/chat/completions").status_code == 405


def test_budget_is_enforced(server):
    _, url = server
    headers = {"authorization": "Bearer sk-poor-client"}
    assert httpx.post(f"{url}/v1/chat/completions", json=_chat("cheap"), headers=headers).status_code == 200
    r = httpx.post(f"{url}/v1/chat/completions", json=_chat("cheap"), headers=headers)
    assert r.status_code == 429 and r.json()["error"]["code"] == "budget_exceeded"


# ---------------------------------------------------------------------------------------------- clients, books
def test_openai_client(server):
    openai = pytest.importorskip("openai")
    _, url = server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    reply = client.chat.completions.create(model="radial:cost-first", messages=[{"role": "user", "content": "hi"}])
    assert reply.model == "cheap" and reply.choices[0].message.content == "Hello from cheap."
    assert reply.model_extra["router"]["lam"] == server[0].state.serve.router.presets_["cost-first"]
    chunks = list(client.chat.completions.create(model="radial", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True))
    assert chunks[0].model == "strong" and chunks[0].model_extra["router"]["llm"] == "strong"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from strong."
    assert chunks[-1].model_extra["router"]["cost_usd"] > 0
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])


def test_metrics_and_decision_log(server, http, config_path):
    app, _ = server
    http.post("/v1/chat/completions", json=_chat("radial", "a secret prompt"))
    poor = {"authorization": "Bearer sk-poor-client"}
    assert http.post("/v1/chat/completions", json=_chat("radial"), headers=poor).status_code == 429
    metrics = http.get("/metrics").text
    assert 'radialrouter_cost_usd_total{client="alice",llm="strong"}' in metrics
    # a client key reads only its own series: nothing of another key, nor the gateway-wide ones
    assert 'client="poor"' not in metrics and "radialrouter_decision_seconds_count" not in metrics
    assert 'radialrouter_refused_total{client="poor",outcome="refused"}' in http.get("/metrics", headers=poor).text
    ledger: Ledger = app.state.serve.ledger
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(r["client"] == "alice" for r in ledger.rows()):
        time.sleep(0.05)
    rows = ledger.rows()
    row = next(r for r in reversed(rows) if r["status"] == "ok" and r["client"] == "alice")
    assert row["llm"] and row["cost_usd"] > 0 and row["prompt"] is None and json.loads(row["ranking"])
    assert any(r["fallback"] for r in rows) and str(config_path.parent) in str(ledger.path)
    raw = ledger.path.read_bytes()
    assert b"a secret prompt" not in raw and all(v.encode() not in raw for v in KEY_ENV.values())


# ---------------------------------------------------------------------------------------------- units
def test_routing_text_keeps_a_bounded_window_with_the_last_user_turn_last():
    messages = [{"role": "system", "content": "You are helpful."}]
    messages += [{"role": r, "content": f"turn {i}"} for i, r in enumerate(["user", "assistant"] * 4)]
    messages += [{"role": "user", "content": [{"type": "text", "text": "and now in Rust?"}]}]
    text = routing_text(messages, history_messages=3, history_chars=100)
    assert text == "turn 5\n\nturn 6\n\nturn 7\n\nand now in Rust?"
    assert routing_text(messages, 0, 100) == "and now in Rust?"


def test_micro_batcher_batches_concurrent_requests_and_isolates_errors():
    sizes = []

    def fn(items):
        sizes.append(len(items))
        time.sleep(0.01)
        return [ValueError(f"bad {x}") if x == 3 else x * 10 for x in items]

    async def main():
        batcher = MicroBatcher(fn, max_size=8, max_wait_s=0.005)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(20)), return_exceptions=True)
        await batcher.stop()
        return results

    results = asyncio.run(main())
    assert [r for i, r in enumerate(results) if i != 3] == [i * 10 for i in range(20) if i != 3]
    assert isinstance(results[3], ValueError) and max(sizes) <= 8 and len(sizes) < 20


def test_embedding_router_routes_by_content(tmp_path, backends):
    """kNN on the bundled encoder: code questions go to strong, small talk to cheap, via the micro-batcher."""
    from radialrouter.core.encoders import QueryEncoder
    from radialrouter.data import RoutingDataset

    hard = [f"Write a Python function that {t}" for t in ("sorts a list", "parses JSON", "merges two dicts",
                                                            "reverses a linked list", "computes primes")]
    easy = [f"{t}" for t in ("hi, how are you?", "good morning!", "thanks a lot", "hello there", "nice day today")]
    quality = [[0.0, 0.0, 1.0]] * len(hard) + [[1.0, 1.0, 1.0]] * len(easy)
    ds = RoutingDataset.from_arrays(hard + easy, quality, ["llm-0", "llm-1", "llm-2"],
                                    cost=[[1e-4, 1e-3, 1e-2]] * len(quality)).embed(QueryEncoder(cache_dir=False),
                                                                                     progress=False)
    make_router("knn", k=3).fit(ds).save_pretrained(tmp_path / "knn")
    config = parse_config({"router": {"path": "knn"}, "llms": _pool(backends[1]), "ledger": {"path": None}},
                          base_dir=tmp_path, env=KEY_ENV)
    with ServerThread(create_app(config)) as thread:
        async def ask():
            async with httpx.AsyncClient(base_url=thread.url, timeout=30) as client:
                prompts = ["Write a Python function that flattens nested lists", "hello, how is it going?"] * 4
                responses = await asyncio.gather(*(client.post("/v1/route", json={"model": "radial", "prompt": p})
                                                   for p in prompts))
                return [r.json()["llm"] for r in responses]

        assert asyncio.run(ask()) == ["strong", "cheap"] * 4


def test_context_router_reads_the_requests_metadata(tmp_path, backends):
    """A router trained with a context (issue #23 item 3): the same words from two applications need different
    LLMs, and ``metadata.task`` of the request is what tells them apart; a non-string value is a 400."""
    train_context_router(tmp_path / "ctx")
    config = parse_config({"router": {"path": "ctx"}, "llms": _pool(backends[1]), "ledger": {"path": None}},
                          base_dir=tmp_path, env=KEY_ENV)
    with ServerThread(create_app(config)) as thread, httpx.Client(base_url=thread.url, timeout=30) as client:
        def pick(**extra) -> str:
            r = client.post("/v1/route", json={"model": "radial", "prompt": "fix this", **extra})
            assert r.status_code == 200, r.text
            return r.json()["llm"]

        assert pick(metadata={"task": "code"}) == "strong"
        assert pick(metadata={"task": "chat", "user": "u1"}) == "cheap"
        bad = client.post("/v1/route", json={"model": "radial", "prompt": "x", "metadata": {"task": 3}})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "metadata.task"


def test_core_imports_without_the_serve_extra():
    code = ("import sys\nfor m in ('fastapi', 'uvicorn', 'httpx', 'prometheus_client'): sys.modules[m] = None\n"
            "import radialrouter, radialrouter.serve\n"
            "from radialrouter.serve import load_config\n"
            "try:\n    radialrouter.serve.create_app(None)\nexcept ImportError as e:\n    print('extra' in str(e))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr


def test_example_config_is_valid():
    env = {k: "x" for k in ("OPENAI_API_KEY", "TOGETHER_API_KEY", "RADIALROUTER_KEY_SEARCH", "RADIALROUTER_KEY_CHAT")}
    config = load_config(Path(__file__).parents[1] / "examples" / "serve.yaml", env=env)
    assert [llm.name for llm in config.llms] == ["gpt-4o", "mixtral", "mistral-7b"] and config.auth.keys


# ---------------------------------------------------------------------------------------------- hot path
def test_routing_starts_before_the_count_only_when_the_count_cannot_matter(server, monkeypatch):
    state = server[0].state.serve

    def early(content: str, client: str = "alice", model: str = "radial", **extra):
        body = _chat(model, content, **extra)
        call = _Call(state, client, body, parse_model(model, state.config))
        return state.early_query(call, len(json.dumps(body)))

    query = early("hi there")
    assert query is not None and query.prompt_tokens >= 2  # decided on the bound, before counting
    assert early("x" * 200) is None  # 200 bytes could be 200 tokens: more than cheap's 128-token window
    assert early("hi there", max_tokens=100_000) is None
    assert early("hi there", model="mid") is None  # bypass: nothing to decide
    monkeypatch.setitem(state.limiter.limits, "alice", object())
    assert early("hi there") is None  # a rate-limited key's refused requests must cost no routing work


def test_an_early_decision_reports_the_counted_prompt_tokens(http):
    r = http.post("/v1/route", json=_chat("radial", "hi there"))
    assert r.status_code == 200
    assert count_tokens(load_tokenizer(), "hi there", 10**6) == 2
    # the counted bound (ceil(1.15 × 2), one message, the reply's priming), not the quick one it was decided on
    assert r.json()["prompt_tokens_estimate"] == 3 + TOKENS_PER_MESSAGE + TOKENS_PER_REPLY
    r = http.post("/v1/chat/completions", json=_chat("radial:cost-first", "hi there"))
    assert r.status_code == 200 and r.json()["model"] == "cheap"


@given(st.text(max_size=400) | st.text(alphabet="!a ", min_size=16_000, max_size=40_000))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example])
def test_token_bound_is_never_below_the_count(text):
    assert token_bound(text) >= count_tokens(_COUNTER, text, 10**9)


def test_sharded_transport_bounds_each_pool_and_releases_on_close():
    async def main(url: str) -> None:
        transport = ShardedTransport(12, shard_size=4)
        body = _chat("a", "hi")
        async with httpx.AsyncClient(transport=transport, base_url=url, timeout=10) as client:
            for _ in range(3):  # light traffic keeps to one pool
                assert (await client.post("/a/v1/chat/completions", json=body)).status_code == 200
            assert transport.shards[1:] == [None, None]
            responses = await asyncio.gather(*(client.post("/a/v1/chat/completions", json=body) for _ in range(12)))
            assert all(r.status_code == 200 for r in responses)
            pools = [shard for shard in transport.shards if shard is not None]
            assert len(pools) == 3 and all(len(p._pool.connections) <= 4 for p in pools)
            assert transport.in_progress == [0, 0, 0]
            async with client.stream("POST", "/a/v1/chat/completions", json={**body, "stream": True}) as r:
                assert r.status_code == 200 and sum(transport.in_progress) == 1  # left before reading the body
            assert transport.in_progress == [0, 0, 0]

    with fake_backends(("a",), delay_s=0.05) as (_, url):
        asyncio.run(main(url))


def test_a_mixed_batch_is_decided_as_each_request_alone(tmp_path):
    """The routing thread decides batches: mixed λs, a request one LLM cannot hold, one that needs a capability and
    one no LLM can serve get what each would get alone (same LLM, ranking, scores, exclusions, refusal)."""
    from radialrouter.core.encoders import QueryEncoder
    from radialrouter.data import RoutingDataset
    from radialrouter.serve.routing import Decider, RequestError, RouteQuery

    texts = ["Write a Python function that sorts a list", "hello there", "parse this JSON", "good morning"] * 3
    quality = [[0.2, 0.6, 0.9], [1.0, 0.8, 0.7], [0.1, 0.9, 0.8], [0.9, 0.9, 1.0]] * 3
    ds = RoutingDataset.from_arrays(texts, quality, ["llm-0", "llm-1", "llm-2"],
                                    cost=[[1e-4, 1e-3, 1e-2]] * len(texts)).embed(QueryEncoder(cache_dir=False),
                                                                                  progress=False)
    router = make_router("knn", k=3).fit(ds)
    config = parse_config({"llms": _pool("http://127.0.0.1:9"), "ledger": {"path": None}}, env=KEY_ENV)
    decider = Decider(config, router, _COUNTER)
    none = frozenset()
    batch = [RouteQuery("Write a Python function that merges dicts", 20, 0, none, 0.0),
             RouteQuery("hello, how are you?", 20, 0, none, 50.0),
             RouteQuery("summarise this long report", 500, 0, none, 0.0),  # beyond cheap's 128-token window
             RouteQuery("describe this picture", 20, 0, frozenset({"vision"}), 50.0),
             RouteQuery("far too long for anyone", 200_000, 0, none, 0.0)]  # no LLM can hold it
    together = decider.decide(batch)
    for query, got in zip(batch, together):
        alone = decider.decide([query])[0]
        if isinstance(alone, RequestError):
            assert isinstance(got, RequestError) and str(got) == str(alone)
        else:
            assert got.to_dict() == alone.to_dict()
    assert "cheap" in together[2].excluded and together[3].ranking == ["strong"]
